/*!
The host's repository restriction (`--github-repo`): which repositories an
operation may act on and which searches it may run.
*/
#![forbid(unsafe_code)]

use serde_json::{Map, Value, json};

use super::{BrokerError, GithubConfig, repo_param};
use crate::protocol::github::OpSpec;
use crate::protocol::message::ErrorCode;

/// What a restricted daemon (`--github-repo`) allows. An operation must
/// name an allowed repository, except that with exactly one allowed it
/// may name none and gets that one. Searches may not name other
/// repositories, organisations or users in their query, and a review
/// thread id does not say its repository, so `pr.resolve-thread` is
/// refused under a restriction.
pub(super) fn restrict(
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
