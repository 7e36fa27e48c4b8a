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

Here: the broker's configuration and errors, and the checks and run of
one operation. The host's repository restriction is in `restrict.rs`, the
`gh` argument vector of each operation in `ops.rs` (with the argument
helpers in `argv.rs`), the GraphQL queries and `issue.edit` in
`graphql.rs`, and the `pr.checks` watch in `watch.rs`.
*/
#![forbid(unsafe_code)]

mod argv;
mod graphql;
mod ops;
mod restrict;
pub mod run;
pub mod shape;
mod watch;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::protocol::github::{self as catalogue, OpSpec};
use crate::protocol::message::ErrorCode;
use crate::server::concurrent::CancelFlag;
use ops::ops;
use restrict::restrict;
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
