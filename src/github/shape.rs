/*!
Shaping `gh`'s output into the `data` of llxprt-code's `github` tool: the
same keys in the same shapes, unknown fields dropped, lists without
bodies, `pr.diff` cut at 64 KiB with a marker.
*/
#![forbid(unsafe_code)]

use serde_json::{Map, Value, json};

use super::BrokerError;
use crate::protocol::message::ErrorCode;

/// Largest `pr.diff` returned, marker included.
pub const MAX_DIFF_BYTES: usize = 65_536;
/// Appended to a cut diff.
pub const TRUNCATED_MARKER: &str = "\n...[truncated]";
/// Review threads asked for per call.
pub const MAX_REVIEW_THREADS: usize = 50;

/// Whether an operation's `body` goes through a file.
pub fn has_body(op: &str) -> bool {
    matches!(op, "issue.create" | "issue.comment" | "issue.edit" | "pr.create" | "pr.comment" | "pr.edit")
}

/// `v` as an object (a non-object gives an empty one).
pub fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn string(v: &Value, key: &str) -> Value {
    json!(v.get(key).and_then(Value::as_str).unwrap_or_default())
}

fn number(v: &Value, key: &str) -> Value {
    v.get(key).filter(|n| n.is_number()).cloned().unwrap_or(json!(0))
}

/// A login: an object's `login` or a bare string.
fn login(v: Option<&Value>) -> Value {
    json!(match v {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Object(o)) => o.get("login").and_then(Value::as_str).unwrap_or_default(),
        _ => "",
    })
}

fn labels(v: &Value) -> Value {
    let names: Vec<&str> = v
        .get("labels")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|l| match l {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o) => o.get("name").and_then(Value::as_str),
                    _ => None,
                })
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    json!(names)
}

fn comments(v: &Value) -> Value {
    match v.get("comments").and_then(Value::as_array) {
        None => Value::Null,
        Some(items) => Value::Array(
            items
                .iter()
                .map(|c| json!({"author": login(c.get("author")), "createdAt": string(c, "createdAt"), "body": string(c, "body")}))
                .collect(),
        ),
    }
}

/// `issue.view` and `pr.view`.
pub fn view(op: &str, out: &Value) -> Result<Map<String, Value>, BrokerError> {
    if !out.is_object() && !out.is_array() {
        return Err(BrokerError::new(ErrorCode::GithubError, "GITHUB_ERROR: expected a JSON object from gh"));
    }
    let mut data = Map::new();
    data.insert("number".into(), number(out, "number"));
    data.insert("title".into(), string(out, "title"));
    data.insert("state".into(), string(out, "state"));
    data.insert("author".into(), login(out.get("author")));
    data.insert("labels".into(), labels(out));
    data.insert("body".into(), string(out, "body"));
    if op == "pr.view" {
        data.insert("isDraft".into(), json!(out.get("isDraft") == Some(&Value::Bool(true))));
        data.insert("reviewDecision".into(), string(out, "reviewDecision"));
        data.insert("headRefName".into(), string(out, "headRefName"));
        data.insert("baseRefName".into(), string(out, "baseRefName"));
    }
    data.insert("comments".into(), comments(out));
    Ok(data)
}

/// The list operations: their key and item shape.
pub fn list(op: &str, out: &Value) -> Result<Map<String, Value>, BrokerError> {
    let Some(items) = out.as_array() else {
        let label = if op.starts_with("search.") { "search" } else { op };
        let kind = match out {
            Value::Object(_) | Value::Null => "object",
            Value::String(_) => "string",
            Value::Number(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Array(_) => "array",
        };
        return Err(BrokerError::new(
            ErrorCode::GithubError,
            format!("{label}: expected a list from gh but received {kind}"),
        ));
    };
    let repository = |i: &Value| {
        json!(match i.get("repository") {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Object(o)) => o
                .get("nameWithOwner")
                .or_else(|| o.get("full_name"))
                .and_then(Value::as_str)
                .unwrap_or_default(),
            _ => "",
        })
    };
    let (key, shaped): (&str, Vec<Value>) = match op {
        "issue.list" | "pr.list" => (
            if op == "issue.list" { "issues" } else { "prs" },
            items
                .iter()
                .map(|i| json!({"number": number(i, "number"), "title": string(i, "title"), "state": string(i, "state"),
                    "labels": labels(i), "updatedAt": string(i, "updatedAt")}))
                .collect(),
        ),
        "search.issues" | "search.prs" => (
            if op == "search.issues" { "issues" } else { "prs" },
            items
                .iter()
                .map(|i| json!({"number": number(i, "number"), "title": string(i, "title"), "state": string(i, "state"),
                    "repository": repository(i), "updatedAt": string(i, "updatedAt")}))
                .collect(),
        ),
        "run.list" => (
            "runs",
            items
                .iter()
                .map(|i| json!({"databaseId": number(i, "databaseId"), "name": string(i, "name"),
                    "status": string(i, "status"), "conclusion": string(i, "conclusion"),
                    "headBranch": string(i, "headBranch"), "createdAt": string(i, "createdAt")}))
                .collect(),
        ),
        _ => (
            "labels",
            items
                .iter()
                .map(|i| json!({"name": string(i, "name"), "color": string(i, "color"), "description": string(i, "description")}))
                .collect(),
        ),
    };
    Ok(object(json!({ key: shaped })))
}

/// `pr.diff`: cut at [`MAX_DIFF_BYTES`] on a character boundary, marked.
pub fn diff(text: &str) -> Map<String, Value> {
    if text.len() <= MAX_DIFF_BYTES {
        return object(json!({"diff": text, "truncated": null}));
    }
    let mut cut = MAX_DIFF_BYTES - TRUNCATED_MARKER.len();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    object(json!({
        "diff": format!("{}{TRUNCATED_MARKER}", &text[..cut]),
        "truncated": {"field": "diff", "originalBytes": text.len()},
    }))
}

/// `pr.checks`: the rows and the counts of the four usual buckets (a
/// watch's summary also counts every other bucket seen, as llxprt-code's).
pub fn checks(out: &Value) -> Map<String, Value> {
    checks_counting(out, false)
}

/// [`checks`] for a watch.
pub fn watch_checks(out: &Value) -> Map<String, Value> {
    checks_counting(out, true)
}

fn checks_counting(out: &Value, every_bucket: bool) -> Map<String, Value> {
    let rows: Vec<Value> = out
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|c| json!({"name": string(c, "name"), "bucket": string(c, "bucket"), "state": string(c, "state"),
                    "link": string(c, "link")}))
                .collect()
        })
        .unwrap_or_default();
    let mut summary = object(json!({"pass": 0, "fail": 0, "pending": 0, "skipping": 0}));
    for r in &rows {
        let Some(b) = r.get("bucket").and_then(Value::as_str) else { continue };
        match summary.get_mut(b) {
            Some(n) => *n = json!(n.as_u64().unwrap_or(0) + 1),
            None if every_bucket && !b.is_empty() => {
                summary.insert(b.to_owned(), json!(1));
            }
            None => {}
        }
    }
    object(json!({"checks": rows, "summary": summary}))
}

/// `pr.reviews`: the review threads (unresolved and current ones only
/// when `actionable`).
pub fn reviews(out: &Value, actionable: bool) -> Map<String, Value> {
    let nodes = out
        .pointer("/data/repository/pullRequest/reviewThreads/nodes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let truncated = nodes.len() >= MAX_REVIEW_THREADS;
    let yes = |t: &Value, k: &str| t.get(k) == Some(&Value::Bool(true));
    let threads: Vec<Value> = nodes
        .iter()
        .filter(|t| !actionable || !(yes(t, "isResolved") || yes(t, "isOutdated")))
        .map(|t| {
            let comments: Vec<Value> = t
                .pointer("/comments/nodes")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .map(|c| json!({"author": login(c.get("author")), "body": string(c, "body")}))
                        .collect()
                })
                .unwrap_or_default();
            json!({"id": string(t, "id"), "path": string(t, "path"),
                "line": t.get("line").filter(|l| l.is_number()).cloned().unwrap_or(Value::Null),
                "isResolved": yes(t, "isResolved"), "isOutdated": yes(t, "isOutdated"),
                "viewerCanResolve": yes(t, "viewerCanResolve"), "comments": comments})
        })
        .collect();
    object(json!({"threads": threads, "truncated": truncated}))
}

/// `issue.create` and `pr.create`: the URL `gh` printed and its number.
pub fn created(stdout: &str) -> Map<String, Value> {
    let url = stdout.trim();
    let digits: String = url.rsplit('/').next().unwrap_or_default().to_owned();
    let number = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<u64>().ok())
        .flatten();
    object(json!({"url": url, "number": number}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_are_cut_at_a_character_boundary_with_the_marker() {
        let small = diff("+a\n");
        assert_eq!((small["diff"].clone(), small["truncated"].clone()), (json!("+a\n"), Value::Null));
        let big = "é".repeat(40_000);
        let d = diff(&big);
        let text = d["diff"].as_str().unwrap();
        assert!(text.len() <= MAX_DIFF_BYTES && text.ends_with(TRUNCATED_MARKER));
        assert_eq!(d["truncated"], json!({"field":"diff","originalBytes":80_000}));
    }

    #[test]
    fn created_urls_give_their_number() {
        assert_eq!(
            created("https://github.com/o/r/issues/12\n"),
            object(json!({"url":"https://github.com/o/r/issues/12","number":12}))
        );
        assert_eq!(created("done\n")["number"], Value::Null);
    }

    #[test]
    fn a_watch_counts_every_bucket() {
        let rows = json!([{"bucket":"pass"},{"bucket":"cancel"},{"bucket":"cancel"}]);
        assert_eq!(checks(&rows)["summary"], json!({"pass":1,"fail":0,"pending":0,"skipping":0}));
        assert_eq!(
            watch_checks(&rows)["summary"],
            json!({"pass":1,"fail":0,"pending":0,"skipping":0,"cancel":2})
        );
    }

    #[test]
    fn lists_must_be_lists() {
        let e = list("search.prs", &json!(null)).unwrap_err();
        assert_eq!(e.message, "search: expected a list from gh but received object");
        let l =
            list("label.list", &json!([{"name":"bug","color":"f00","description":"d","extra":1}])).unwrap();
        assert_eq!(Value::Object(l), json!({"labels":[{"name":"bug","color":"f00","description":"d"}]}));
    }
}
