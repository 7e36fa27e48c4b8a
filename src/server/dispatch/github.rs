//! The `github` op (SPEC §13): the GitHub broker behind the host's `gh`.
#![forbid(unsafe_code)]

use serde_json::{Map, Value};

use super::{Reply, err, ok};
use crate::protocol::answer::Answer;
use crate::protocol::message::{self, ErrorCode};
use crate::server::Shared;
use crate::server::concurrent::CancelFlag;

/// `github` (SPEC §13): off with `--no-github` (as if unknown); the
/// operation and its parameters checked; a mutating one needs `--permit
/// github-write`; then the broker. The audit target names the operation
/// and the repository, never a body, title or query.
pub(super) fn github(
    shared: &Shared,
    id: &str,
    op: &str,
    params: &Map<String, Value>,
    cancel: &CancelFlag,
) -> Reply {
    let config = &shared.config.github;
    if !config.enabled {
        return err(id, ErrorCode::InvalidRequest, "Unknown operation: github", "-".into());
    }
    let repo = params
        .get("repo")
        .and_then(Value::as_str)
        .filter(|r| crate::protocol::github::spec(op).is_some() && !r.is_empty());
    let op_shown: String = op.chars().filter(|c| c.is_ascii_graphic()).take(32).collect();
    let target =
        format!("{op_shown} repo={}", repo.map_or("-".to_owned(), |r| r.chars().take(100).collect()));
    let broker_err = |e: crate::github::BrokerError, target: String| {
        (message::error_response(id, e.code, &e.message, None), e.code.as_str(), target)
    };
    let spec = match crate::github::check(op, params) {
        Ok(s) => s,
        Err(e) => return broker_err(e, target),
    };
    let class = if spec.mutating {
        crate::protocol::message::OpClass::GithubWrite
    } else {
        crate::protocol::message::OpClass::Read
    };
    if !shared.config.permits.allows(class) {
        let text = crate::server::permit::Permits::refusal(spec.name, class);
        return err(id, ErrorCode::Forbidden, &text, target);
    }
    match crate::github::execute(config, spec, params.clone(), cancel) {
        // llxprt-code's broker: an answer that cannot fit a frame is an error
        // of the operation, not of the connection
        Ok(data)
            if serde_json::to_vec(&data).map_or(0, |b| b.len())
                > crate::protocol::frame::MAX_FRAME_LEN_V2 - 256 =>
        {
            let e = crate::github::BrokerError {
                code: ErrorCode::GithubError,
                message: "Frame exceeds maximum size".into(),
            };
            broker_err(e, target)
        }
        Ok(data) => ok(id, Answer::Github(data), target),
        Err(e) => broker_err(e, target),
    }
}
