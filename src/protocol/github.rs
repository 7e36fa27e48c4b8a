/*!
The `github` op's catalogue and parameter rules: the contract llxprt-code's
sandboxed `github` tool relies on (its broker's operation table, parameter
kinds, required lists and value rules), so that a request is checked the
same way whichever host serves it. Pure data and validation; running `gh`
is `crate::github`'s job.

A request is `{"op":"github","payload":{"op":"issue.view","number":7,...}}`:
`payload.op` names the operation and every other key of `payload` is one of
its parameters.
*/
#![forbid(unsafe_code)]

use serde_json::{Map, Value};

/// What a parameter may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `OWNER/NAME`.
    Repo,
    /// A positive integer.
    Number,
    /// A positive integer up to [`MAX_LIMIT`].
    Limit,
    /// `true` or `false`.
    Boolean,
    /// `pr.list`'s state: open, closed, merged, all.
    State,
    /// `issue.list`'s state: open, closed, all.
    StateIssue,
    /// `issue.close`'s reason: completed, not planned.
    CloseReason,
    /// A string or an array of strings.
    Label,
    /// A string or an array of strings.
    Assignee,
    /// A GraphQL node id.
    ThreadId,
    /// `#RRGGBB`, `RRGGBB`, `#RGB` or `RGB`.
    Color,
    /// Any string.
    Milestone,
    /// Any string.
    Project,
    /// Any string.
    Branch,
    /// Any string (passed through a file, never on the command line).
    Body,
    /// Any string.
    Freetext,
}

/// One operation of the catalogue.
#[derive(Debug)]
pub struct OpSpec {
    /// `issue.view`, ...
    pub name: &'static str,
    /// Whether it changes anything on GitHub (needs `--permit github-write`).
    pub mutating: bool,
    /// Required parameters, in order.
    pub required: &'static [&'static str],
    /// Every accepted parameter with its kind, in declaration order.
    pub params: &'static [(&'static str, Kind)],
}

/// Largest `limit`.
pub const MAX_LIMIT: u64 = 100;
/// `limit` when absent.
pub const DEFAULT_LIMIT: u64 = 30;

use Kind::*;

/// Every operation, in llxprt-code's order.
pub const OPS: &[OpSpec] = &[
    OpSpec {
        name: "issue.view",
        mutating: false,
        required: &["number"],
        params: &[("number", Number), ("comments", Boolean), ("repo", Repo)],
    },
    OpSpec {
        name: "issue.list",
        mutating: false,
        required: &[],
        params: &[
            ("search", Freetext),
            ("state", StateIssue),
            ("label", Label),
            ("limit", Limit),
            ("repo", Repo),
        ],
    },
    OpSpec {
        name: "issue.create",
        mutating: true,
        required: &["title"],
        params: &[
            ("title", Freetext),
            ("body", Body),
            ("label", Label),
            ("assignee", Assignee),
            ("milestone", Milestone),
            ("project", Project),
            ("repo", Repo),
        ],
    },
    OpSpec {
        name: "issue.comment",
        mutating: true,
        required: &["number", "body"],
        params: &[("number", Number), ("body", Body), ("repo", Repo)],
    },
    OpSpec {
        name: "issue.edit",
        mutating: true,
        required: &["number"],
        params: &[
            ("number", Number),
            ("title", Freetext),
            ("body", Body),
            ("addLabel", Label),
            ("removeLabel", Label),
            ("addAssignee", Assignee),
            ("removeAssignee", Assignee),
            ("addProject", Project),
            ("removeProject", Project),
            ("milestone", Milestone),
            ("type", Freetext),
            ("repo", Repo),
        ],
    },
    OpSpec {
        name: "issue.close",
        mutating: true,
        required: &["number"],
        params: &[("number", Number), ("reason", CloseReason), ("repo", Repo)],
    },
    OpSpec {
        name: "pr.view",
        mutating: false,
        required: &["number"],
        params: &[("number", Number), ("comments", Boolean), ("repo", Repo)],
    },
    OpSpec {
        name: "pr.list",
        mutating: false,
        required: &[],
        params: &[("state", State), ("limit", Limit), ("repo", Repo)],
    },
    OpSpec {
        name: "pr.diff",
        mutating: false,
        required: &["number"],
        params: &[("number", Number), ("repo", Repo)],
    },
    OpSpec {
        name: "pr.checks",
        mutating: false,
        required: &["number"],
        params: &[("number", Number), ("repo", Repo), ("watch", Boolean)],
    },
    OpSpec {
        name: "pr.reviews",
        mutating: false,
        required: &["number"],
        params: &[("number", Number), ("actionable", Boolean), ("repo", Repo)],
    },
    OpSpec {
        name: "pr.create",
        mutating: true,
        required: &["title"],
        params: &[
            ("title", Freetext),
            ("body", Body),
            ("base", Branch),
            ("head", Branch),
            ("draft", Boolean),
            ("repo", Repo),
        ],
    },
    OpSpec {
        name: "pr.comment",
        mutating: true,
        required: &["number", "body"],
        params: &[("number", Number), ("body", Body), ("repo", Repo)],
    },
    OpSpec {
        name: "pr.edit",
        mutating: true,
        required: &["number"],
        params: &[
            ("number", Number),
            ("title", Freetext),
            ("body", Body),
            ("addLabel", Label),
            ("removeLabel", Label),
            ("addAssignee", Assignee),
            ("milestone", Milestone),
            ("repo", Repo),
        ],
    },
    OpSpec {
        name: "pr.ready",
        mutating: true,
        required: &["number"],
        params: &[("number", Number), ("repo", Repo)],
    },
    OpSpec {
        name: "pr.resolve-thread",
        mutating: true,
        required: &["threadId"],
        params: &[("threadId", ThreadId), ("repo", Repo)],
    },
    OpSpec {
        name: "search.issues",
        mutating: false,
        required: &["query"],
        params: &[("query", Freetext), ("limit", Limit), ("repo", Repo)],
    },
    OpSpec {
        name: "search.prs",
        mutating: false,
        required: &["query"],
        params: &[("query", Freetext), ("limit", Limit), ("repo", Repo)],
    },
    OpSpec {
        name: "run.list",
        mutating: false,
        required: &[],
        params: &[("limit", Limit), ("branch", Freetext), ("repo", Repo)],
    },
    OpSpec {
        name: "label.list",
        mutating: false,
        required: &[],
        params: &[("limit", Limit), ("repo", Repo)],
    },
    OpSpec {
        name: "label.create",
        mutating: true,
        required: &["name"],
        params: &[
            ("name", Freetext),
            ("color", Color),
            ("description", Freetext),
            ("force", Boolean),
            ("repo", Repo),
        ],
    },
];

/// The catalogue entry of `name`.
pub fn spec(name: &str) -> Option<&'static OpSpec> {
    OPS.iter().find(|s| s.name == name)
}

fn lists(spec: &OpSpec) -> String {
    let accepted: Vec<&str> = spec.params.iter().map(|(n, _)| *n).collect();
    let mut text = format!("Accepted parameters: {}.", accepted.join(", "));
    if !spec.required.is_empty() {
        text.push_str(&format!(" Required: {}.", spec.required.join(", ")));
    }
    text
}

fn is_repo(s: &str) -> bool {
    let ok = |part: &str| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    matches!(s.split_once('/'), Some((owner, name)) if ok(owner) && ok(name))
}

fn is_color(s: &str) -> bool {
    let hex = s.strip_prefix('#').unwrap_or(s);
    matches!(hex.len(), 3 | 6) && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A JSON number that is a positive integer (`7.0` counts, as in
/// JavaScript).
pub fn positive_integer(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) if u > 0 => Some(u),
            (None, Some(f)) if f.fract() == 0.0 && (1.0..=9_007_199_254_740_991.0).contains(&f) => {
                Some(f as u64)
            }
            _ => None,
        },
        _ => None,
    }
}

fn check_value(key: &str, kind: Kind, v: &Value) -> Result<(), String> {
    if v.as_str().is_some_and(|s| s.starts_with('-')) {
        return Err(format!("Parameter {key} must not begin with '-'"));
    }
    let string = || v.as_str().ok_or_else(|| format!("Parameter {key} must be a string"));
    let one_of = |allowed: &[&str]| -> Result<(), String> {
        let s = string()?;
        if allowed.contains(&s) {
            Ok(())
        } else {
            Err(format!("Parameter {key} must be one of: {}", allowed.join(", ")))
        }
    };
    match kind {
        Repo => match v.as_str() {
            Some(s) if is_repo(s) => Ok(()),
            _ => Err(format!("Parameter {key} must be \"owner/name\"")),
        },
        Number => positive_integer(v)
            .map(|_| ())
            .ok_or_else(|| format!("Parameter {key} must be a positive integer")),
        Limit => match positive_integer(v) {
            None => Err(format!("Parameter {key} must be a positive integer")),
            Some(n) if n > MAX_LIMIT => Err(format!("Parameter {key} must not exceed {MAX_LIMIT}")),
            Some(_) => Ok(()),
        },
        Boolean => v.as_bool().map(|_| ()).ok_or_else(|| format!("Parameter {key} must be a boolean")),
        State => one_of(&["open", "closed", "merged", "all"]),
        StateIssue => one_of(&["open", "closed", "all"]),
        CloseReason => one_of(&["completed", "not planned"]),
        Label | Assignee => match v {
            Value::String(_) => Ok(()),
            Value::Array(items) => {
                if !items.iter().all(Value::is_string) {
                    Err(format!("Parameter {key} must be an array of strings"))
                } else if items.iter().any(|i| i.as_str().is_some_and(|s| s.starts_with('-'))) {
                    Err(format!("Parameter {key} may not contain a value beginning with '-'"))
                } else {
                    Ok(())
                }
            }
            _ => Err(format!("Parameter {key} must be a string or array of strings")),
        },
        ThreadId => {
            let s = string()?;
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_=-".contains(&b)) {
                Ok(())
            } else {
                Err(format!("Parameter {key} contains invalid characters"))
            }
        }
        Color => {
            if is_color(string()?) {
                Ok(())
            } else {
                Err(format!("Parameter {key} must be a hex color like #RRGGBB"))
            }
        }
        Milestone | Project | Branch | Body | Freetext => string().map(|_| ()),
    }
}

/// Checks `params` against `spec`: unknown parameters, then missing
/// required ones, then each value in declaration order. The message is
/// llxprt-code's (`INVALID_PARAM`).
pub fn validate(spec: &OpSpec, params: &Map<String, Value>) -> Result<(), String> {
    for key in params.keys() {
        if !spec.params.iter().any(|(n, _)| n == key) {
            return Err(format!("Unknown parameter: {key}. {}", lists(spec)));
        }
    }
    for key in spec.required {
        if !params.contains_key(*key) {
            return Err(format!("Missing required parameter: {key}. {}", lists(spec)));
        }
    }
    for (key, kind) in spec.params {
        if let Some(v) = params.get(*key) {
            check_value(key, *kind, v)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(op: &str, params: Value) -> Result<(), String> {
        validate(spec(op).unwrap(), params.as_object().unwrap())
    }

    #[test]
    fn the_catalogue_has_llxprt_codes_21_ops_10_of_them_mutating() {
        assert_eq!(OPS.len(), 21);
        let mutating: Vec<&str> = OPS.iter().filter(|s| s.mutating).map(|s| s.name).collect();
        assert_eq!(
            mutating,
            [
                "issue.create",
                "issue.comment",
                "issue.edit",
                "issue.close",
                "pr.create",
                "pr.comment",
                "pr.edit",
                "pr.ready",
                "pr.resolve-thread",
                "label.create"
            ]
        );
        for s in OPS {
            for r in s.required {
                assert!(s.params.iter().any(|(n, _)| n == r), "{} requires a param it lists", s.name);
            }
        }
    }

    #[test]
    fn validation_order_and_messages() {
        assert_eq!(
            check("issue.view", json!({"number": 7, "bogus": 1})).unwrap_err(),
            "Unknown parameter: bogus. Accepted parameters: number, comments, repo. Required: number."
        );
        assert_eq!(
            check("issue.list", json!({"__proto__": {}})).unwrap_err(),
            "Unknown parameter: __proto__. Accepted parameters: search, state, label, limit, repo."
        );
        assert!(
            check("issue.view", json!({})).unwrap_err().starts_with("Missing required parameter: number.")
        );
        assert!(check("issue.view", json!({"number": null})).unwrap_err().contains("positive integer"));
        assert!(check("issue.view", json!({"number": 7.0})).is_ok());
        for bad in [json!(0), json!(-1), json!(1.5), json!("7")] {
            assert!(check("issue.view", json!({"number": bad})).is_err(), "{bad}");
        }
        assert_eq!(
            check("issue.list", json!({"limit": 101})).unwrap_err(),
            "Parameter limit must not exceed 100"
        );
        for bad in ["", "a", "a/b/c", "a b/c", "-x/y"] {
            assert!(check("issue.view", json!({"number": 1, "repo": bad})).is_err(), "{bad}");
        }
        assert!(check("issue.view", json!({"number": 1, "repo": "o.k/re-po_1"})).is_ok());
        assert_eq!(
            check("issue.create", json!({"title": "-rf"})).unwrap_err(),
            "Parameter title must not begin with '-'"
        );
        assert_eq!(
            check("issue.create", json!({"title": "t", "label": ["a", "-b"]})).unwrap_err(),
            "Parameter label may not contain a value beginning with '-'"
        );
        assert_eq!(
            check("issue.close", json!({"number": 1, "reason": "wontfix"})).unwrap_err(),
            "Parameter reason must be one of: completed, not planned"
        );
        assert!(check("label.create", json!({"name": "x", "color": "#A1b"})).is_ok());
        assert!(check("label.create", json!({"name": "x", "color": "red"})).is_err());
        assert!(check("pr.resolve-thread", json!({"threadId": "PRRT_kw=="})).is_ok());
        assert!(check("pr.resolve-thread", json!({"threadId": "a;b"})).is_err());
        assert!(
            check("issue.create", json!({"title": "; rm -rf ~", "body": "$(id)"})).is_ok(),
            "data, not code"
        );
    }
}
