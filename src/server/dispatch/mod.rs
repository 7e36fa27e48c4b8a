/*!
Handlers: a typed request, checked against the host's permits and the
scope, answered from the host store. Every token leaves through
[`OAuthToken::sanitize`]; a token saved from the sandbox changes only what
[`OAuthToken::sandbox_update`] allows, under the refresh lock. Out-of-scope requests get `UNAUTHORIZED` whether or not the
item exists, and lists are filtered, so a peer cannot probe what lies
outside its profile. `get_token` and `refresh_token` go through
[`crate::oauth::OAuthHost`] (refresh on read, on request, renewal timers);
every failure's code and text come from [`wire`].

One function per op, by family: [`tokens`], [`keys`], [`logins`] (the
`oauth_*` ops, to the login sessions [`crate::oauth::Logins`]) and
[`github`]. Both spellings llxprt-code uses are sent where
its server and its adapter differ (`verification_url` and
`verification_uri`; flat token fields and `token`). Audit targets name a
session by a short prefix of its id only.
*/
#![forbid(unsafe_code)]

mod github;
mod keys;
mod logins;
mod tokens;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::concurrent::CancelFlag;
use super::{Shared, wire};
use crate::error::Error;
use crate::oauth::{LoginError, Owner, RefreshError};
use crate::profile::Scope;
use crate::protocol::answer::Answer;
use crate::protocol::message::{self, ErrorCode, Op, Request};
use crate::store::names::DEFAULT_BUCKET;
use crate::token::OAuthToken;

/// Longest wait for the refresh lock in save/remove; a request cancelled
/// meanwhile stops waiting, and nothing is written.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

type Reply = (Vec<u8>, &'static str, String);

fn target(provider: &str, bucket: &Option<String>) -> String {
    format!("{provider}:{}", bucket.as_deref().unwrap_or(DEFAULT_BUCKET))
}

fn ok(id: &str, answer: Answer, target: String) -> Reply {
    let data = answer.encode();
    (message::ok_response(id, data), "ok", target)
}

fn err(id: &str, code: ErrorCode, text: &str, target: String) -> Reply {
    (message::error_response(id, code, text, None), code.as_str(), target)
}

fn fail(id: &str, e: wire::WireError, target: String) -> Reply {
    (message::error_response(id, e.code, e.text, e.retry_after), e.code.as_str(), target)
}

/// A refresh error as a wire answer ([`wire::refresh`]).
fn refresh_failed(id: &str, e: &RefreshError, target: String) -> Reply {
    fail(id, wire::refresh(e, &target), target)
}

/// A login error as a wire answer ([`wire::login`]).
fn login_failed(id: &str, e: &LoginError, target: String) -> Reply {
    fail(id, wire::login(e, &target), target)
}

/// In inject mode (SPEC §14), unless `--reveal` names the provider: the
/// sentinel in place of the access token, and no `id_token`. Whatever else
/// the token holds (expiry, type, scope, Codex's `account_id`) is real.
fn mask(
    shared: &Shared,
    provider: &str,
    bucket: Option<&str>,
    map: &mut Map<String, Value>,
) -> Result<(), wire::WireError> {
    let Some(inject) = &shared.config.inject else { return Ok(()) };
    if inject.reveal.contains(provider) {
        return Ok(());
    }
    use crate::inject::sentinel::NoSentinel;
    let sentinel =
        shared.sentinels.for_token(provider, bucket.unwrap_or(DEFAULT_BUCKET)).map_err(|e| match e {
            NoSentinel::NoRoute => wire::NO_ROUTE,
            NoSentinel::Random => wire::STORE_FAILED,
        })?;
    map.insert("access_token".into(), Value::String(sentinel));
    map.remove("id_token");
    Ok(())
}

/// A token as the sandbox gets it: sanitized, and masked in inject mode.
fn served(
    shared: &Shared,
    id: &str,
    of: Option<(&str, Option<&str>)>,
    token: &OAuthToken,
    t: String,
) -> Reply {
    let mut map = token.sanitize().into_map();
    let masked = match of {
        Some((provider, bucket)) => mask(shared, provider, bucket, &mut map),
        // a login whose provider is no longer known: nothing to mask with
        None if shared.config.inject.is_some() => Err(wire::NO_ROUTE),
        None => Ok(()),
    };
    match masked {
        Ok(()) => ok(id, Answer::Token(map), t),
        Err(e) => fail(id, e, t),
    }
}

fn internal(id: &str, e: &Error, target: String) -> Reply {
    fail(id, wire::store(e, &target), target)
}

/// What every handler needs: the server, the request's id, the peer's
/// scope at the time the request arrived, the peer and the request's
/// cancel flag.
pub(super) struct Ctx<'a> {
    pub shared: &'a Shared,
    pub id: &'a str,
    pub scope: Arc<Scope>,
    pub owner: Owner,
    pub cancel: &'a CancelFlag,
}

impl Ctx<'_> {
    /// The out-of-scope answer: the same whether or not the item exists.
    fn denied(&self, target: String) -> Reply {
        fail(self.id, wire::ACCESS_DENIED, target)
    }
}

/// Answers one request from `owner`: the response bytes, an outcome word
/// for the audit line and the audit target (never a secret). The
/// permission check comes first (SPEC §11.1): a class the host did not
/// permit is refused before the scope or any store is looked at.
pub fn handle(shared: &Shared, req: &Request, owner: Owner, cancel: &CancelFlag) -> Reply {
    let id = req.id.as_str();
    if let Op::Github { op, params } = &req.op {
        return github::github(shared, id, op, params, cancel);
    }
    let class = req.op.class();
    if !shared.config.permits.allows(class) {
        let text = super::permit::Permits::refusal(req.op.name(), class);
        return err(id, ErrorCode::Forbidden, &text, "-".into());
    }
    let cx = Ctx { shared, id, scope: shared.scope(), owner, cancel };
    match &req.op {
        Op::GetToken { provider, bucket } => tokens::get(&cx, provider, bucket),
        Op::SaveToken { provider, bucket, token } => tokens::save(&cx, provider, bucket, token),
        Op::RemoveToken { provider, bucket } => tokens::remove(&cx, provider, bucket),
        Op::ListProviders => tokens::list_providers(&cx),
        Op::ListBuckets { provider } => tokens::list_buckets(&cx, provider),
        Op::GetBucketStats { provider, bucket } => tokens::stats(&cx, provider, bucket),
        Op::RefreshToken { provider, bucket } => tokens::refresh(&cx, provider, bucket),
        Op::GetApiKey { name } => keys::get(&cx, name),
        Op::ListApiKeys => keys::list(&cx),
        Op::HasApiKey { name } => keys::has(&cx, name),
        Op::Cancel { target_id } => {
            let shown: String = target_id.chars().take(16).filter(|c| !c.is_control()).collect();
            ok(id, Answer::Cancelled(false), shown)
        }
        Op::OauthInitiate { provider, bucket, flow_type } => {
            logins::initiate(&cx, provider, bucket, *flow_type)
        }
        Op::OauthExchange { session_id, code } => logins::exchange(&cx, session_id, code),
        Op::OauthPoll { session_id } => logins::poll(&cx, session_id),
        Op::OauthCancel { session_id } => logins::cancel(&cx, session_id),
        Op::Github { .. } => unreachable!("answered above"),
    }
}
