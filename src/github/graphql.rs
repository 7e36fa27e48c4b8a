/*!
The GraphQL queries the broker sends through `gh api graphql`, the
repository an operation acts on when it names none, and `issue.edit`,
whose issue type is set through GraphQL.
*/
#![forbid(unsafe_code)]

use serde_json::{Map, Value, json};

use super::argv::{args, flag, flags, number, repo};
use super::ops::request_number;
use super::run::Gh;
use super::{BrokerError, gh_failed, repo_param, shape};

/// The review-threads query (variables owner, name, number, first).
pub(super) const REVIEW_THREADS: &str = "query ReviewThreads($owner: String!, $name: String!, $number: Int!, $first: Int!) { repository(owner: $owner, name: $name) { pullRequest(number: $number) { reviewThreads(first: $first) { nodes { id isResolved isOutdated path line viewerCanResolve comments(first: 100) { nodes { author { login } body } } } } } } }";
/// Resolving a review thread.
pub(super) const RESOLVE_THREAD: &str = "mutation ResolveThread($threadId: ID!) { resolveReviewThread(input: {threadId: $threadId}) { thread { id isResolved } } }";
/// The issue types of a repository.
const ISSUE_TYPES: &str = "query IssueTypes($owner: String!, $name: String!) { repository(owner: $owner, name: $name) { issueTypes(first: 100) { nodes { id name } } } }";
/// An issue's node id.
const ISSUE_ID: &str = "query IssueId($owner: String!, $name: String!, $number: Int!) { repository(owner: $owner, name: $name) { issue(number: $number) { id } } }";
/// Setting an issue's type.
const SET_ISSUE_TYPE: &str = "mutation SetIssueType($id: ID!, $typeId: ID!) { updateIssue(input: {id: $id, issueTypeId: $typeId}) { issue { number } } }";

/// The owner and name: the `repo` parameter, else `gh repo view`.
pub(super) fn owner_name(p: &Map<String, Value>, gh: &Gh<'_>) -> Result<(String, String), BrokerError> {
    if let Some((o, n)) = repo_param(p).and_then(|r| r.split_once('/')) {
        return Ok((o.to_owned(), n.to_owned()));
    }
    let out = gh.json(&args(&["repo", "view", "--json", "owner,name"])).map_err(gh_failed)?;
    match (out.pointer("/owner/login").and_then(Value::as_str), out.get("name").and_then(Value::as_str)) {
        (Some(o), Some(n)) => Ok((o.to_owned(), n.to_owned())),
        _ => Err(BrokerError::invalid("Could not determine the current repository; pass repo explicitly")),
    }
}

/// `issue.edit`: the fields `gh issue edit` takes, then the type through
/// GraphQL.
pub(super) fn issue_edit(
    p: &Map<String, Value>,
    gh: &Gh<'_>,
    body: Option<&str>,
) -> Result<Map<String, Value>, BrokerError> {
    let n = number(p, "number");
    const FIELDS: [&str; 9] = [
        "title",
        "body",
        "addLabel",
        "removeLabel",
        "addAssignee",
        "removeAssignee",
        "addProject",
        "removeProject",
        "milestone",
    ];
    if FIELDS.iter().any(|f| p.contains_key(*f)) {
        let mut argv = args(&["issue", "edit", &n]);
        flag(&mut argv, p, "title", "--title");
        if let Some(path) = body {
            argv.extend(["--body-file".to_owned(), path.to_owned()]);
        }
        for (key, f) in [
            ("addLabel", "--add-label"),
            ("removeLabel", "--remove-label"),
            ("addAssignee", "--add-assignee"),
            ("removeAssignee", "--remove-assignee"),
            ("addProject", "--add-project"),
            ("removeProject", "--remove-project"),
        ] {
            flags(&mut argv, p, key, f);
        }
        flag(&mut argv, p, "milestone", "--milestone");
        repo(&mut argv, p);
        gh.text(&argv).map_err(gh_failed)?;
    }
    let wanted = p.get("type").and_then(Value::as_str).filter(|t| !t.is_empty());
    if let Some(wanted) = wanted {
        let (owner, name) = owner_name(p, gh)?;
        let (o, nm) = (format!("owner={owner}"), format!("name={name}"));
        let types = gh
            .graphql(&args(&["api", "graphql", "-f", &format!("query={ISSUE_TYPES}"), "-f", &o, "-f", &nm]))
            .map_err(gh_failed)?;
        let nodes = types
            .pointer("/data/repository/issueTypes/nodes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let type_id = nodes.iter().find_map(|t| {
            let tn = t.get("name").and_then(Value::as_str)?;
            tn.eq_ignore_ascii_case(wanted)
                .then(|| t.get("id").and_then(Value::as_str).map(str::to_owned))
                .flatten()
        });
        let Some(type_id) = type_id else {
            let names: Vec<&str> =
                nodes.iter().filter_map(|t| t.get("name").and_then(Value::as_str)).collect();
            let names = if names.is_empty() { "(none defined)".to_owned() } else { names.join(", ") };
            return Err(BrokerError::invalid(format!(
                "Unknown issue type \"{wanted}\". Available types: {names}"
            )));
        };
        let issue = gh
            .graphql(&args(&[
                "api",
                "graphql",
                "-f",
                &format!("query={ISSUE_ID}"),
                "-f",
                &o,
                "-f",
                &nm,
                "-F",
                &format!("number={n}"),
            ]))
            .map_err(gh_failed)?;
        let Some(issue_id) = issue.pointer("/data/repository/issue/id").and_then(Value::as_str) else {
            return Err(BrokerError::invalid(format!("Issue #{n} not found in {owner}/{name}")));
        };
        gh.graphql(&args(&[
            "api",
            "graphql",
            "-f",
            &format!("query={SET_ISSUE_TYPE}"),
            "-f",
            &format!("id={issue_id}"),
            "-f",
            &format!("typeId={type_id}"),
        ]))
        .map_err(gh_failed)?;
    }
    Ok(shape::object(
        json!({"number": request_number(p), "type": p.get("type").cloned().unwrap_or(Value::Null)}),
    ))
}
