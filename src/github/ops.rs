/*!
Each operation's `gh` argument vector, the call, and the shaping of its
output.
*/
#![forbid(unsafe_code)]

use serde_json::{Map, Value, json};

use super::argv::{args, flag, flags, limit, number, repo, switch};
use super::graphql::{RESOLVE_THREAD, REVIEW_THREADS, issue_edit, owner_name};
use super::run::Gh;
use super::watch::watch;
use super::{BrokerError, GithubConfig, gh_failed, shape, shown};
use crate::protocol::github::{self as catalogue, OpSpec};
use crate::protocol::message::ErrorCode;

/// The operations: argv, `gh`, shaping.
pub(super) fn ops(
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

pub(super) fn request_number(p: &Map<String, Value>) -> Value {
    p.get("number").and_then(catalogue::positive_integer).map_or(Value::Null, |n| json!(n))
}
