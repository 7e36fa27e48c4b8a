/*!
Handlers: a typed request, checked against the host's permits and the
scope, answered from the host store. Every token leaves through
[`OAuthToken::sanitize`]; a token saved from the sandbox changes only what
[`OAuthToken::sandbox_update`] allows, under the refresh lock. Out-of-scope requests get `UNAUTHORIZED` whether or not the
item exists, and lists are filtered, so a peer cannot probe what lies
outside its profile. `get_token` and `refresh_token` go through
[`crate::oauth::OAuthHost`] (refresh on read, on request, renewal timers);
every failure's code and text come from [`wire`].

The `oauth_*` ops go to the login sessions ([`crate::oauth::Logins`]),
bound to the peer's [`Owner`]. A
flow's outcome is `ok:true` with a `status`; only protocol and session
problems are `ok:false`. Both spellings llxprt-code uses are sent where
its server and its adapter differ (`verification_url` and
`verification_uri`; flat token fields and `token`). Audit targets name a
session by a short prefix of its id only.
*/
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::{Map, Value};

use super::concurrent::CancelFlag;
use super::{Shared, wire};
use crate::error::Error;
use crate::oauth::{Initiated, LoginError, Owner, Poll, RefreshError};
use crate::protocol::answer::{Answer, Initiation, PollState};
use crate::protocol::message::{self, ErrorCode, Op, Request};
use crate::store::names::DEFAULT_BUCKET;
use crate::store::{Change, KeyStore, LockWait, TokenStore, UpdateError, update_token};
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

/// `oauth_initiate`'s answer.
fn initiated(i: &Initiated) -> Answer {
    Answer::Initiated(Initiation {
        session_id: i.session_id.clone(),
        flow: i.flow,
        auth_url: i.auth_url.clone(),
        poll_interval: i.poll_interval,
        expires_in: i.expires_in.as_secs(),
        user_code: i.user_code.clone(),
        verification_uri: i.verification_uri.clone(),
        verification_uri_complete: i.verification_uri_complete.clone(),
    })
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

/// `oauth_poll`'s answer.
fn polled(poll: Poll) -> Answer {
    Answer::Polled(match poll {
        Poll::Pending { interval } => PollState::Pending(interval),
        Poll::Complete(token) => PollState::Complete(token.sanitize().into_map()),
        Poll::Failed(e) => {
            let (code, text) = wire::flow(&e);
            PollState::Failed { code: code.to_owned(), message: text.to_owned() }
        }
    })
}

/// Whether a session's provider:bucket is still in scope (a SIGHUP may
/// have narrowed it since the login started); unknown sessions pass, to
/// get `SESSION_NOT_FOUND`.
fn session_in_scope(shared: &Shared, scope: &crate::profile::Scope, session_id: &str) -> bool {
    match shared.oauth.logins().login_of(session_id) {
        Some((p, b)) => scope.allows_token(&p, b.as_deref()),
        None => true,
    }
}

fn internal(id: &str, e: &Error, target: String) -> Reply {
    fail(id, wire::store(e, &target), target)
}

/// Answers one request from `owner`: the response bytes, an outcome word
/// for the audit line and the audit target (never a secret). The
/// permission check comes first (SPEC §11.1): a class the host did not
/// permit is refused before the scope or any store is looked at.
pub fn handle(shared: &Shared, req: &Request, owner: Owner, cancel: &CancelFlag) -> Reply {
    let id = req.id.as_str();
    if let Op::Github { op, params } = &req.op {
        return github(shared, id, op, params, cancel);
    }
    let class = req.op.class();
    if !shared.config.permits.allows(class) {
        let text = super::permit::Permits::refusal(req.op.name(), class);
        return err(id, ErrorCode::Forbidden, &text, "-".into());
    }
    let scope = shared.scope();
    let tokens = &shared.store.tokens;
    let keys = &shared.store.keys;
    let denied = |t: String| fail(id, wire::ACCESS_DENIED, t);
    match &req.op {
        Op::GetToken { provider, bucket } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            match tokens.get_token(provider, bucket.as_deref()) {
                Ok(Some(token)) => match shared.oauth.serve(provider, bucket.as_deref(), token) {
                    Ok(token) => served(shared, id, Some((provider.as_str(), bucket.as_deref())), &token, t),
                    Err(e) => refresh_failed(id, &e, t),
                },
                Ok(None) => fail(id, wire::NO_TOKEN, t),
                Err(e) => internal(id, &e, t),
            }
        }
        Op::SaveToken { provider, bucket, token } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            // Inject mode: the sandbox holds no real token of a provider
            // that is not revealed, so it has nothing to save; what it
            // sends (a sentinel, or a token of its own) never replaces the
            // host's.
            let revealed = shared.config.inject.as_ref().is_none_or(|i| i.reveal.contains(provider.as_str()));
            let sentinel = token
                .get("access_token")
                .and_then(Value::as_str)
                .is_some_and(|a| shared.sentinels.is_sentinel(a.trim()));
            if !revealed || sentinel {
                return fail(id, wire::SENTINEL_SAVE, t);
            }
            // SPEC §11.2: only the access token, its expiry, type and scope
            // change; the stored record keeps every other field.
            let cancelled = || cancel.is_cancelled();
            let wait = LockWait { limit: LOCK_WAIT, cancelled: Some(&cancelled) };
            let saved = update_token(tokens.as_ref(), provider, bucket.as_deref(), &wait, |stored| {
                match stored.get().map(|s| OAuthToken::sandbox_update(s.as_ref(), token)) {
                    Ok(Some(updated)) => (Change::Save(updated), Ok(true)),
                    Ok(None) => (Change::Keep, Ok(false)),
                    Err(e) => (Change::Keep, Err(e)),
                }
            });
            match saved {
                Ok(Ok(true)) => ok(id, Answer::Done, t),
                Ok(Ok(false)) => fail(id, wire::BAD_SAVE, t),
                Ok(Err(e)) => internal(id, &e, t),
                Err(e) => internal(id, &e.into_error(), t),
            }
        }
        Op::RemoveToken { provider, bucket } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            let cancelled = || cancel.is_cancelled();
            let wait = LockWait { limit: LOCK_WAIT, cancelled: Some(&cancelled) };
            match update_token(tokens.as_ref(), provider, bucket.as_deref(), &wait, |_| (Change::Remove, ()))
            {
                Err(UpdateError::Lock(e)) => return internal(id, &e, t),
                Err(UpdateError::Write(e, ())) => crate::log_warn!("{t}: remove failed: {e}"),
                Ok(()) => {}
            }
            ok(id, Answer::Done, t)
        }
        Op::ListProviders => {
            let mut list = tokens.list_providers().unwrap_or_default();
            list.retain(|p| {
                scope.allows_provider(p)
                    && tokens
                        .list_buckets(p)
                        .unwrap_or_default()
                        .iter()
                        .any(|b| scope.allows_token(p, Some(b)))
            });
            ok(id, Answer::Providers(list), "-".into())
        }
        Op::ListBuckets { provider } => {
            let mut list = if scope.allows_provider(provider) {
                tokens.list_buckets(provider).unwrap_or_default()
            } else {
                vec![]
            };
            list.retain(|b| scope.allows_token(provider, Some(b)));
            ok(id, Answer::Buckets(list), provider.clone())
        }
        Op::GetBucketStats { provider, bucket } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            match tokens.get_bucket_stats(provider, bucket.as_deref()) {
                Ok(Some(s)) => ok(
                    id,
                    Answer::Stats {
                        bucket: s.bucket,
                        request_count: s.request_count,
                        percentage: s.percentage,
                    },
                    t,
                ),
                Ok(None) => fail(id, wire::NO_STATS, t),
                Err(e) => internal(id, &e, t),
            }
        }
        Op::GetApiKey { name } => {
            if !scope.allows_key(name) {
                return denied(name.clone());
            }
            match keys.get_key(name) {
                // Inject mode: the key's sentinel, routed by the provider
                // of the profile that names it; `--reveal` never covers keys.
                Ok(Some(_)) if shared.config.inject.is_some() => {
                    let mut provider = scope.key_providers.get(name).map(String::as_str);
                    // a profile that sends the key to another host: not this route's
                    let route = provider.and_then(crate::inject::routes::key_route);
                    if let (Some(route), Some(url)) = (route, scope.key_base_urls.get(name)) {
                        if !crate::inject::routes::base_url_fits(url, route) {
                            crate::log_warn!(
                                "inject: key {name}: its profile's base-url is not {}; no sentinel served",
                                route.host
                            );
                            provider = None;
                        }
                    }
                    match shared.sentinels.for_key(name, provider) {
                        Ok(sentinel) => ok(id, Answer::Key(sentinel), name.clone()),
                        Err(crate::inject::sentinel::NoSentinel::NoRoute) => {
                            fail(id, wire::NO_ROUTE, name.clone())
                        }
                        Err(_) => fail(id, wire::STORE_FAILED, name.clone()),
                    }
                }
                Ok(Some(k)) => ok(id, Answer::Key(k.expose().to_owned()), name.clone()),
                Ok(None) => fail(id, wire::NO_KEY, name.clone()),
                Err(e) => internal(id, &e, name.clone()),
            }
        }
        Op::ListApiKeys => {
            let mut list = keys.list_keys().unwrap_or_default();
            list.retain(|k| scope.allows_key(k));
            ok(id, Answer::Keys(list), "-".into())
        }
        Op::HasApiKey { name } => {
            if !scope.allows_key(name) {
                return denied(name.clone());
            }
            match keys.has_key(name) {
                Ok(exists) => ok(id, Answer::Exists(exists), name.clone()),
                Err(e) => internal(id, &e, name.clone()),
            }
        }
        Op::Cancel { target_id } => {
            let shown: String = target_id.chars().take(16).filter(|c| !c.is_control()).collect();
            ok(id, Answer::Cancelled(false), shown)
        }
        Op::RefreshToken { provider, bucket } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            match shared.oauth.refresh(provider, bucket.as_deref()) {
                Ok(token) => served(shared, id, Some((provider.as_str(), bucket.as_deref())), &token, t),
                Err(e) => refresh_failed(id, &e, t),
            }
        }
        Op::OauthInitiate { provider, bucket, flow_type } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            match shared.oauth.logins().initiate(owner, provider, bucket.as_deref(), *flow_type) {
                Ok(i) => {
                    let t = format!("{t} session={}", crate::oauth::sessions::short_id(&i.session_id));
                    ok(id, initiated(&i), t)
                }
                Err(e) => login_failed(id, &e, t),
            }
        }
        Op::OauthExchange { session_id, code } => {
            let t = shared.oauth.logins().target(session_id);
            if !session_in_scope(shared, &scope, session_id) {
                return denied(t);
            }
            let of = shared.oauth.logins().login_of(session_id);
            match shared.oauth.exchange(owner, session_id, code) {
                Ok(token) => {
                    served(shared, id, of.as_ref().map(|(p, b)| (p.as_str(), b.as_deref())), &token, t)
                }
                Err(e) => login_failed(id, &e, t),
            }
        }
        Op::OauthPoll { session_id } => {
            let t = shared.oauth.logins().target(session_id);
            if !session_in_scope(shared, &scope, session_id) {
                return denied(t);
            }
            let of = shared.oauth.logins().login_of(session_id);
            match shared.oauth.poll(owner, session_id) {
                Ok(Poll::Complete(token)) if shared.config.inject.is_some() => {
                    let mut map = token.sanitize().into_map();
                    let masked = match &of {
                        Some((p, b)) => mask(shared, p, b.as_deref(), &mut map),
                        None => Err(wire::NO_ROUTE),
                    };
                    match masked {
                        Ok(()) => (
                            message::ok_response(id, Answer::Polled(PollState::Complete(map)).encode()),
                            "complete",
                            t,
                        ),
                        Err(e) => fail(id, e, t),
                    }
                }
                Ok(poll) => {
                    let outcome = match &poll {
                        Poll::Pending { .. } => "pending",
                        Poll::Complete(_) => "complete",
                        Poll::Failed(_) => "flow_error",
                    };
                    (message::ok_response(id, polled(poll).encode()), outcome, t)
                }
                Err(e) => login_failed(id, &e, t),
            }
        }
        Op::Github { .. } => unreachable!("answered above"),
        Op::OauthCancel { session_id } => {
            let t = shared.oauth.logins().target(session_id);
            match shared.oauth.logins().cancel(owner, session_id) {
                Ok(()) => ok(id, Answer::Done, t),
                Err(e) => login_failed(id, &e, t),
            }
        }
    }
}

/// `github` (SPEC §13): off with `--no-github` (as if unknown); the
/// operation and its parameters checked; a mutating one needs `--permit
/// github-write`; then the broker. The audit target names the operation
/// and the repository, never a body, title or query.
fn github(shared: &Shared, id: &str, op: &str, params: &Map<String, Value>, cancel: &CancelFlag) -> Reply {
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
        let text = super::permit::Permits::refusal(spec.name, class);
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
