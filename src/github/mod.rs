/*!
The GitHub broker (SPEC §13): the `github` op runs the host's `gh` for the
sandbox, so no GitHub credential enters it. Operations, parameters and
their validation are [`crate::protocol::github`]; this module checks the
host's restrictions, builds each operation's `gh` argument vector, runs
`gh` ([`run`]) and shapes its output into the `data` llxprt-code's
`github` tool reads ([`shape`]).

- `gh` runs without a shell, argv element by element, with an environment
  built from scratch (never `GH_TOKEN`/`GITHUB_TOKEN`), prompts and update
  notices off, stdin from `/dev/null`, stdout and stderr capped at 8 MiB,
  a timeout per call, in the directory the daemon was started from.
- Bodies go through `body.md` (0600) in a fresh directory under the
  daemon's private directory (not the tmpdir a sandbox may share), removed
  after the operation.
- What crosses back on failure is a code and a fixed text per code
  (SPEC §11: nothing of the host); `gh`'s own words go to the host log,
  with token-shaped strings redacted.
*/
#![forbid(unsafe_code)]

pub mod run;
pub mod shape;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::protocol::github::{self as catalogue, DEFAULT_LIMIT, OpSpec};
use crate::protocol::message::ErrorCode;
use crate::server::concurrent::CancelFlag;
use run::{Gh, GhError};

/// How the host configured the broker.
#[derive(Clone, Debug)]
pub struct GithubConfig {
    /// `--no-github` turns the op off.
    pub enabled: bool,
    /// `--github-repo OWNER/REPO`: when not empty, the only repositories.
    pub repos: Vec<String>,
    /// Where `gh` runs (the directory the daemon was started from).
    pub cwd: PathBuf,
    /// A private directory for body files (`None`: operations with a body fail).
    pub body_dir: Option<PathBuf>,
    /// One `gh` call's time limit.
    pub call_timeout: Duration,
    /// A watch's time limit (a little under the client's one hour).
    pub watch_limit: Duration,
    /// Scales the watch's poll intervals (tests).
    pub time_scale: f64,
}

/// One `gh` call's default time limit.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// A `pr.checks` watch's limit: with a last poll of up to [`CALL_TIMEOUT`]
/// it still ends under llxprt-code's one-hour client timeout.
pub const WATCH_LIMIT: Duration = Duration::from_secs(3400);

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            enabled: true,
            repos: vec![],
            cwd: PathBuf::from("."),
            body_dir: None,
            call_timeout: CALL_TIMEOUT,
            watch_limit: WATCH_LIMIT,
            time_scale: 1.0,
        }
    }
}

/// A failed operation: the code and the fixed text the sandbox reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerError {
    /// The wire code.
    pub code: ErrorCode,
    /// What the sandbox reads: a fixed text, or a validation message
    /// built from the request and the catalogue only.
    pub message: String,
}

impl BrokerError {
    fn new(code: ErrorCode, message: impl Into<String>) -> BrokerError {
        BrokerError { code, message: message.into() }
    }

    fn invalid(message: impl Into<String>) -> BrokerError {
        BrokerError::new(ErrorCode::InvalidParam, message)
    }
}

/// The fixed text of each `gh` failure code.
pub fn failure_text(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::NotFound => "GitHub reports that the repository, issue or pull request was not found",
        ErrorCode::PermissionDenied => "GitHub refused the operation for the host's GitHub account",
        ErrorCode::RateLimited => "GitHub's rate limit was reached; try again later",
        ErrorCode::HostAuthRequired => {
            "gh on the host is not logged in to GitHub; the host user must run: gh auth login"
        }
        ErrorCode::HostGhUnavailable => {
            "gh is not installed on the host; the host user must install GitHub CLI"
        }
        ErrorCode::Cancelled => "Operation cancelled",
        _ => "gh failed on the host (details in the host's log)",
    }
}

fn gh_failed(e: GhError) -> BrokerError {
    BrokerError::new(e.code, failure_text(e.code))
}

/// The request's `repo` parameter.
fn repo_param(params: &Map<String, Value>) -> Option<&str> {
    params.get("repo").and_then(Value::as_str).filter(|r| !r.is_empty())
}

/// What a restricted daemon (`--github-repo`) allows. An operation must
/// name an allowed repository, except that with exactly one allowed it
/// may name none and gets that one. Searches may not name other
/// repositories, organisations or users in their query, and a review
/// thread id does not say its repository, so `pr.resolve-thread` is
/// refused under a restriction.
fn restrict(
    config: &GithubConfig,
    spec: &OpSpec,
    params: &mut Map<String, Value>,
) -> Result<(), BrokerError> {
    if config.repos.is_empty() {
        return Ok(());
    }
    let denied = |what: &str| {
        BrokerError::new(ErrorCode::PermissionDenied, format!("This daemon serves GitHub only for {what}"))
    };
    let allowed = config.repos.join(", ");
    if spec.name == "pr.resolve-thread" {
        return Err(denied(&format!("{allowed} (a review thread id does not name its repository)")));
    }
    match repo_param(params) {
        Some(r) if config.repos.iter().any(|a| a.eq_ignore_ascii_case(r)) => {}
        Some(_) => return Err(denied(&allowed)),
        None if config.repos.len() == 1 => {
            params.insert("repo".into(), json!(config.repos[0]));
        }
        None => return Err(denied(&format!("{allowed}; name one with the repo parameter"))),
    }
    if spec.name.starts_with("search.") {
        let query = params.get("query").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
        if ["repo:", "org:", "user:", "owner:"].iter().any(|q| query.contains(q)) {
            return Err(denied(&format!("{allowed}; a search may not name other repositories")));
        }
    }
    Ok(())
}

/// Splits the payload of a `github` request: the operation name (own
/// string `op`, else `""`) and its parameters.
pub fn split_payload(payload: &Map<String, Value>) -> (String, Map<String, Value>) {
    let op = payload.get("op").and_then(Value::as_str).unwrap_or_default().to_owned();
    let params =
        payload.iter().filter(|(k, _)| k.as_str() != "op").map(|(k, v)| (k.clone(), v.clone())).collect();
    (op, params)
}

/// Checks an operation before anything runs: it exists, its parameters are
/// valid. The catalogue entry.
pub fn check(op: &str, params: &Map<String, Value>) -> Result<&'static OpSpec, BrokerError> {
    let spec = catalogue::spec(op)
        .ok_or_else(|| BrokerError::new(ErrorCode::UnknownOp, format!("Unknown operation: {}", shown(op))))?;
    catalogue::validate(spec, params).map_err(BrokerError::invalid)?;
    Ok(spec)
}

/// An operation name as echoed back: printable ASCII, at most 64 characters.
fn shown(op: &str) -> String {
    op.chars().filter(|c| (' '..='~').contains(c)).take(64).collect()
}

/// Runs a checked operation (`check` passed, the permission too): the
/// host's repository restriction, then `gh`, then the shaped `data`.
pub fn execute(
    config: &GithubConfig,
    spec: &'static OpSpec,
    mut params: Map<String, Value>,
    cancel: &CancelFlag,
) -> Result<Map<String, Value>, BrokerError> {
    restrict(config, spec, &mut params)?;
    let gh = Gh::new(config, cancel);
    let body = match params.get("body").and_then(Value::as_str) {
        Some(text) if shape::has_body(spec.name) => {
            Some(run::BodyFile::write(config.body_dir.as_deref(), text).map_err(|e| {
                crate::log_warn!("github {}: cannot write the body file: {e}", spec.name);
                BrokerError::new(ErrorCode::GithubError, failure_text(ErrorCode::GithubError))
            })?)
        }
        _ => None,
    };
    let result = ops(config, spec, &params, &gh, body.as_ref().map(run::BodyFile::path_str));
    drop(body);
    result
}

/// `--limit N` (the request's limit, else 30).
fn limit(params: &Map<String, Value>) -> String {
    params.get("limit").and_then(catalogue::positive_integer).unwrap_or(DEFAULT_LIMIT).to_string()
}

fn number(params: &Map<String, Value>, key: &str) -> String {
    params.get(key).and_then(catalogue::positive_integer).map(|n| n.to_string()).unwrap_or_default()
}

/// Appends `flag value` when `key` is a non-empty string.
fn flag(argv: &mut Vec<String>, params: &Map<String, Value>, key: &str, flag: &str) {
    if let Some(v) = params.get(key).and_then(Value::as_str).filter(|v| !v.is_empty()) {
        argv.extend([flag.to_owned(), v.to_owned()]);
    }
}

/// Appends `flag value` for each non-empty string of `key` (a string or
/// an array of strings).
fn flags(argv: &mut Vec<String>, params: &Map<String, Value>, key: &str, flag: &str) {
    let values: Vec<&str> = match params.get(key) {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    for v in values.into_iter().filter(|v| !v.is_empty()) {
        argv.extend([flag.to_owned(), v.to_owned()]);
    }
}

fn switch(argv: &mut Vec<String>, params: &Map<String, Value>, key: &str, flag: &str) {
    if params.get(key) == Some(&Value::Bool(true)) {
        argv.push(flag.to_owned());
    }
}

fn repo(argv: &mut Vec<String>, params: &Map<String, Value>) {
    flag(argv, params, "repo", "--repo");
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The operations: argv, `gh`, shaping.
fn ops(
    config: &GithubConfig,
    spec: &OpSpec,
    p: &Map<String, Value>,
    gh: &Gh<'_>,
    body: Option<&str>,
) -> Result<Map<String, Value>, BrokerError> {
    let n = || number(p, "number");
    let with_body = |argv: &mut Vec<String>| {
        if let Some(path) = body {
            argv.extend(["--body-file".to_owned(), path.to_owned()]);
        }
    };
    match spec.name {
        "issue.view" | "pr.view" => {
            let (kind, fields) = if spec.name == "issue.view" {
                ("issue", "number,title,state,author,labels,body")
            } else {
                ("pr", "number,title,state,author,body,labels,isDraft,reviewDecision,headRefName,baseRefName")
            };
            let mut fields = fields.to_owned();
            if p.get("comments") == Some(&Value::Bool(true)) {
                fields.push_str(",comments");
            }
            let mut argv = args(&[kind, "view", &n(), "--json", &fields]);
            repo(&mut argv, p);
            let out = gh.json(&argv).map_err(gh_failed)?;
            shape::view(spec.name, &out)
        }
        "issue.list" => {
            let mut argv = args(&["issue", "list", "--json", "number,title,state,labels,updatedAt"]);
            flag(&mut argv, p, "search", "--search");
            flag(&mut argv, p, "state", "--state");
            // llxprt-code passes issue.list's labels even when empty
            match p.get("label") {
                Some(Value::String(s)) => argv.extend(["--label".to_owned(), s.clone()]),
                Some(Value::Array(items)) => {
                    for s in items.iter().filter_map(Value::as_str) {
                        argv.extend(["--label".to_owned(), s.to_owned()]);
                    }
                }
                _ => {}
            }
            argv.extend(["--limit".to_owned(), limit(p)]);
            repo(&mut argv, p);
            shape::list(spec.name, &gh.json(&argv).map_err(gh_failed)?)
        }
        "pr.list" => {
            let mut argv = args(&["pr", "list", "--json", "number,title,state,labels,updatedAt"]);
            flag(&mut argv, p, "state", "--state");
            argv.extend(["--limit".to_owned(), limit(p)]);
            repo(&mut argv, p);
            shape::list(spec.name, &gh.json(&argv).map_err(gh_failed)?)
        }
        "search.issues" | "search.prs" => {
            let what = if spec.name == "search.issues" { "issues" } else { "prs" };
            let query = p.get("query").and_then(Value::as_str).unwrap_or_default();
            let mut argv =
                args(&["search", what, query, "--json", "number,title,state,repository,updatedAt"]);
            argv.extend(["--limit".to_owned(), limit(p)]);
            repo(&mut argv, p);
            shape::list(spec.name, &gh.json(&argv).map_err(gh_failed)?)
        }
        "run.list" => {
            let mut argv =
                args(&["run", "list", "--json", "databaseId,name,status,conclusion,headBranch,createdAt"]);
            argv.extend(["--limit".to_owned(), limit(p)]);
            flag(&mut argv, p, "branch", "--branch");
            repo(&mut argv, p);
            shape::list(spec.name, &gh.json(&argv).map_err(gh_failed)?)
        }
        "label.list" => {
            let mut argv = args(&["label", "list", "--json", "name,color,description"]);
            argv.extend(["--limit".to_owned(), limit(p)]);
            repo(&mut argv, p);
            shape::list(spec.name, &gh.json(&argv).map_err(gh_failed)?)
        }
        "pr.diff" => {
            let mut argv = args(&["pr", "diff", &n()]);
            repo(&mut argv, p);
            Ok(shape::diff(&gh.text(&argv).map_err(gh_failed)?))
        }
        "pr.checks" => {
            let mut argv = args(&["pr", "checks", &n(), "--json", "name,state,bucket,link"]);
            repo(&mut argv, p);
            if p.get("watch") == Some(&Value::Bool(true)) {
                if !gh.cancellable() {
                    return Err(BrokerError::invalid(
                        "Parameter watch needs protocol version 2 (a version-1 request cannot be cancelled)",
                    ));
                }
                watch(config, gh, &argv)
            } else {
                Ok(shape::checks(&gh.json_tolerant(&argv).map_err(gh_failed)?))
            }
        }
        "pr.reviews" => {
            let (owner, name) = owner_name(p, gh)?;
            let argv = args(&[
                "api",
                "graphql",
                "-f",
                &format!("query={REVIEW_THREADS}"),
                "-f",
                &format!("owner={owner}"),
                "-f",
                &format!("name={name}"),
                "-F",
                &format!("number={}", n()),
                "-F",
                "first=50",
            ]);
            let out = gh.graphql(&argv).map_err(gh_failed)?;
            Ok(shape::reviews(&out, p.get("actionable") == Some(&Value::Bool(true))))
        }
        "issue.create" | "pr.create" => {
            let kind = if spec.name == "issue.create" { "issue" } else { "pr" };
            let mut argv = args(&[kind, "create"]);
            flag(&mut argv, p, "title", "--title");
            with_body(&mut argv);
            if kind == "issue" {
                flags(&mut argv, p, "label", "--label");
                flags(&mut argv, p, "assignee", "--assignee");
                flag(&mut argv, p, "milestone", "--milestone");
                flag(&mut argv, p, "project", "--project");
            } else {
                flag(&mut argv, p, "base", "--base");
                flag(&mut argv, p, "head", "--head");
                switch(&mut argv, p, "draft", "--draft");
            }
            repo(&mut argv, p);
            Ok(shape::created(&gh.text(&argv).map_err(gh_failed)?))
        }
        "issue.comment" | "pr.comment" => {
            let kind = if spec.name == "issue.comment" { "issue" } else { "pr" };
            let mut argv = args(&[kind, "comment", &n()]);
            with_body(&mut argv);
            repo(&mut argv, p);
            let url = gh.text(&argv).map_err(gh_failed)?;
            Ok(shape::object(json!({"url": url.trim()})))
        }
        "issue.close" => {
            let mut argv = args(&["issue", "close", &n()]);
            flag(&mut argv, p, "reason", "--reason");
            repo(&mut argv, p);
            gh.text(&argv).map_err(gh_failed)?;
            Ok(shape::object(json!({"number": request_number(p), "state": "closed"})))
        }
        "pr.edit" => {
            let mut argv = args(&["pr", "edit", &n()]);
            flag(&mut argv, p, "title", "--title");
            with_body(&mut argv);
            flags(&mut argv, p, "addLabel", "--add-label");
            flags(&mut argv, p, "removeLabel", "--remove-label");
            flags(&mut argv, p, "addAssignee", "--add-assignee");
            flag(&mut argv, p, "milestone", "--milestone");
            repo(&mut argv, p);
            gh.text(&argv).map_err(gh_failed)?;
            Ok(shape::object(json!({"number": request_number(p)})))
        }
        "pr.ready" => {
            let mut argv = args(&["pr", "ready", &n()]);
            repo(&mut argv, p);
            gh.text(&argv).map_err(gh_failed)?;
            Ok(shape::object(json!({"number": request_number(p)})))
        }
        "label.create" => {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            let mut argv = args(&["label", "create", name]);
            flag(&mut argv, p, "color", "--color");
            flag(&mut argv, p, "description", "--description");
            switch(&mut argv, p, "force", "--force");
            repo(&mut argv, p);
            gh.text(&argv).map_err(gh_failed)?;
            Ok(shape::object(json!({"name": name})))
        }
        "issue.edit" => issue_edit(p, gh, body),
        "pr.resolve-thread" => {
            let id = p.get("threadId").and_then(Value::as_str).unwrap_or_default();
            let argv = args(&[
                "api",
                "graphql",
                "-f",
                &format!("query={RESOLVE_THREAD}"),
                "-f",
                &format!("threadId={id}"),
            ]);
            let out = gh.graphql(&argv).map_err(gh_failed)?;
            match out.pointer("/data/resolveReviewThread/thread/isResolved").and_then(Value::as_bool) {
                Some(resolved) => Ok(shape::object(json!({"threadId": id, "isResolved": resolved}))),
                None => Err(BrokerError::new(
                    ErrorCode::GithubError,
                    "pr.resolve-thread: no resolution state returned",
                )),
            }
        }
        _ => Err(BrokerError::new(ErrorCode::UnknownOp, format!("Unknown operation: {}", shown(spec.name)))),
    }
}

fn request_number(p: &Map<String, Value>) -> Value {
    p.get("number").and_then(catalogue::positive_integer).map_or(Value::Null, |n| json!(n))
}

/// The review-threads query (variables owner, name, number, first).
const REVIEW_THREADS: &str = "query ReviewThreads($owner: String!, $name: String!, $number: Int!, $first: Int!) { repository(owner: $owner, name: $name) { pullRequest(number: $number) { reviewThreads(first: $first) { nodes { id isResolved isOutdated path line viewerCanResolve comments(first: 100) { nodes { author { login } body } } } } } } }";
/// Resolving a review thread.
const RESOLVE_THREAD: &str = "mutation ResolveThread($threadId: ID!) { resolveReviewThread(input: {threadId: $threadId}) { thread { id isResolved } } }";
/// The issue types of a repository.
const ISSUE_TYPES: &str = "query IssueTypes($owner: String!, $name: String!) { repository(owner: $owner, name: $name) { issueTypes(first: 100) { nodes { id name } } } }";
/// An issue's node id.
const ISSUE_ID: &str = "query IssueId($owner: String!, $name: String!, $number: Int!) { repository(owner: $owner, name: $name) { issue(number: $number) { id } } }";
/// Setting an issue's type.
const SET_ISSUE_TYPE: &str = "mutation SetIssueType($id: ID!, $typeId: ID!) { updateIssue(input: {id: $id, issueTypeId: $typeId}) { issue { number } } }";

/// The owner and name: the `repo` parameter, else `gh repo view`.
fn owner_name(p: &Map<String, Value>, gh: &Gh<'_>) -> Result<(String, String), BrokerError> {
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
fn issue_edit(
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

/// `pr.checks` with `watch:true`: polls until the checks conclude, none
/// appear within 120 s, the limit passes or the request is cancelled.
fn watch(config: &GithubConfig, gh: &Gh<'_>, argv: &[String]) -> Result<Map<String, Value>, BrokerError> {
    let started = Instant::now();
    let scaled = |s: u64| Duration::from_secs_f64(s as f64 * config.time_scale);
    let (mut polls, mut failures) = (0u64, 0u32);
    let mut last = json!([]);
    let mut concluded = false;
    loop {
        if gh.cancelled() {
            break;
        }
        match gh.json_tolerant(argv) {
            Ok(rows) => {
                failures = 0;
                polls += 1;
                let checks = rows.as_array().cloned().unwrap_or_default();
                concluded = !checks.is_empty()
                    && checks.iter().all(|c| c.get("bucket").and_then(Value::as_str) != Some("pending"));
                last = Value::Array(checks);
                if concluded {
                    break;
                }
            }
            Err(e) if e.code == ErrorCode::Cancelled => break,
            Err(e) => {
                failures += 1;
                if failures > 3 {
                    return Err(gh_failed(e));
                }
            }
        }
        let elapsed = started.elapsed();
        let none = last.as_array().is_none_or(Vec::is_empty);
        if (none && elapsed >= scaled(120)) || elapsed >= config.watch_limit {
            break;
        }
        let nap = if elapsed < scaled(30) { scaled(10) } else { scaled(30) };
        if gh.nap(nap.min(config.watch_limit - elapsed)) {
            break;
        }
    }
    let mut data = shape::watch_checks(&last);
    data.insert("concluded".into(), json!(concluded));
    data.insert("cancelled".into(), json!(gh.cancelled()));
    data.insert("elapsedMs".into(), json!(started.elapsed().as_secs_f64() * 1000.0));
    data.insert("polls".into(), json!(polls));
    Ok(data)
}

/// The repository an operation acts on, for the audit line: the validated
/// `repo`, or the one a single `--github-repo` fills in.
pub fn audited_repo(config: &GithubConfig, params: &Map<String, Value>) -> String {
    match repo_param(params) {
        Some(r) => r.to_owned(),
        None if config.repos.len() == 1 => config.repos[0].clone(),
        None => "-".to_owned(),
    }
}
