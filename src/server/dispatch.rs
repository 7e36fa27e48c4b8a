/*!
Handlers: a typed request, checked against the scope, answered from the
host store. Every token leaves through [`OAuthToken::sanitize`]; every
incoming token loses its `refresh_token` before it is merged under the
refresh lock. Out-of-scope requests get `UNAUTHORIZED` whether or not the
item exists, and lists are filtered, so a peer cannot probe what lies
outside its profile. `get_token` and `refresh_token` go through
[`crate::oauth::OAuthHost`] (refresh on read, on request, renewal timers);
[`refresh_failed`] is where a refresh error becomes a wire code.
*/
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::Shared;
use crate::error::Error;
use crate::oauth::RefreshError;
use crate::protocol::message::{self, ErrorCode, Op, Request};
use crate::store::names::DEFAULT_BUCKET;
use crate::store::{KeyStore, TokenStore};
use crate::token::OAuthToken;

/// Longest wait for the refresh lock in save/remove.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

type Reply = (Vec<u8>, &'static str, String);

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn target(provider: &str, bucket: &Option<String>) -> String {
    format!("{provider}:{}", bucket.as_deref().unwrap_or(DEFAULT_BUCKET))
}

fn ok(id: &str, data: Map<String, Value>, target: String) -> Reply {
    (message::ok_response(id, data), "ok", target)
}

fn err(id: &str, code: ErrorCode, text: &str, target: String) -> Reply {
    (message::error_response(id, code, text, None), code.as_str(), target)
}

/// A refresh error as a wire answer. Messages come from
/// [`RefreshError`]'s fixed texts, status codes and OAuth error codes only.
fn refresh_failed(id: &str, e: &RefreshError, target: String) -> Reply {
    let (code, retry_after) = match e {
        RefreshError::NotFound => (ErrorCode::NotFound, None),
        RefreshError::UnknownProvider => (ErrorCode::ProviderNotFound, None),
        RefreshError::NoRefreshToken | RefreshError::Revoked { .. } => (ErrorCode::ReauthRequired, None),
        RefreshError::CoolingDown { retry_after } => {
            (ErrorCode::RateLimited, Some(retry_after.as_secs_f64().ceil().max(1.0) as u64))
        }
        _ => (ErrorCode::InternalError, None),
    };
    let text = match e {
        RefreshError::NotFound => "No token found".to_owned(),
        other => {
            let mut t = other.to_string();
            t[..1].make_ascii_uppercase();
            t
        }
    };
    (message::error_response(id, code, &text, retry_after), code.as_str(), target)
}

fn internal(id: &str, e: &Error, target: String) -> Reply {
    crate::log_warn!("{target}: {e}");
    err(id, ErrorCode::InternalError, "The credential store failed on the host", target)
}

/// Answers one request: the response bytes, an outcome word for the audit
/// line and the audit target (never a secret).
pub fn handle(shared: &Shared, req: &Request) -> Reply {
    let id = req.id.as_str();
    let scope = shared.scope();
    let tokens = &shared.store.tokens;
    let keys = &shared.store.keys;
    let denied = |t: String| err(id, ErrorCode::Unauthorized, "Access denied", t);
    match &req.op {
        Op::GetToken { provider, bucket } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            match tokens.get_token(provider, bucket.as_deref()) {
                Ok(Some(token)) => match shared.oauth.serve(provider, bucket.as_deref(), token) {
                    Ok(token) => ok(id, token.sanitize().into_map(), t),
                    Err(e) => refresh_failed(id, &e, t),
                },
                Ok(None) => err(id, ErrorCode::NotFound, "No token found", t),
                Err(e) => internal(id, &e, t),
            }
        }
        Op::SaveToken { provider, bucket, token } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            let mut incoming = token.clone();
            incoming.remove("refresh_token");
            let incoming = match OAuthToken::from_map(incoming) {
                Ok(tok) => tok,
                Err(e) => return err(id, ErrorCode::InvalidRequest, e.0, t),
            };
            let lock = match tokens.acquire_refresh_lock(provider, bucket.as_deref(), LOCK_WAIT) {
                Ok(l) => l,
                Err(e) => return internal(id, &e, t),
            };
            let merged = match tokens.get_token(provider, bucket.as_deref()) {
                Ok(Some(stored)) => OAuthToken::merge(&stored, &incoming),
                Ok(None) => incoming,
                Err(e) => return internal(id, &e, t),
            };
            let saved = tokens.save_token(provider, bucket.as_deref(), &merged);
            let _ = tokens.release_refresh_lock(lock);
            match saved {
                Ok(()) => ok(id, Map::new(), t),
                Err(e) => internal(id, &e, t),
            }
        }
        Op::RemoveToken { provider, bucket } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            let lock = match tokens.acquire_refresh_lock(provider, bucket.as_deref(), LOCK_WAIT) {
                Ok(l) => l,
                Err(e) => return internal(id, &e, t),
            };
            if let Err(e) = tokens.remove_token(provider, bucket.as_deref()) {
                crate::log_warn!("{t}: remove failed: {e}");
            }
            let _ = tokens.release_refresh_lock(lock);
            ok(id, Map::new(), t)
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
            ok(id, object(json!({ "providers": list })), "-".into())
        }
        Op::ListBuckets { provider } => {
            let mut list = if scope.allows_provider(provider) {
                tokens.list_buckets(provider).unwrap_or_default()
            } else {
                vec![]
            };
            list.retain(|b| scope.allows_token(provider, Some(b)));
            ok(id, object(json!({ "buckets": list })), provider.clone())
        }
        Op::GetBucketStats { provider, bucket } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            match tokens.get_bucket_stats(provider, bucket.as_deref()) {
                Ok(Some(s)) => ok(
                    id,
                    object(
                        json!({"bucket": s.bucket, "requestCount": s.request_count, "percentage": s.percentage}),
                    ),
                    t,
                ),
                Ok(None) => err(id, ErrorCode::NotFound, "No stats found", t),
                Err(e) => internal(id, &e, t),
            }
        }
        Op::GetApiKey { name } => {
            if !scope.allows_key(name) {
                return denied(name.clone());
            }
            match keys.get_key(name) {
                Ok(Some(k)) => ok(id, object(json!({ "key": k.expose() })), name.clone()),
                Ok(None) => err(id, ErrorCode::NotFound, "No API key found", name.clone()),
                Err(e) => internal(id, &e, name.clone()),
            }
        }
        Op::ListApiKeys => {
            let mut list = keys.list_keys().unwrap_or_default();
            list.retain(|k| scope.allows_key(k));
            ok(id, object(json!({ "keys": list })), "-".into())
        }
        Op::HasApiKey { name } => {
            if !scope.allows_key(name) {
                return denied(name.clone());
            }
            match keys.has_key(name) {
                Ok(exists) => ok(id, object(json!({ "exists": exists })), name.clone()),
                Err(e) => internal(id, &e, name.clone()),
            }
        }
        Op::Cancel { target_id } => {
            let shown: String = target_id.chars().take(16).filter(|c| !c.is_control()).collect();
            ok(id, object(json!({ "cancelled": false })), shown)
        }
        Op::RefreshToken { provider, bucket } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            match shared.oauth.refresh(provider, bucket.as_deref()) {
                Ok(token) => ok(id, token.sanitize().into_map(), t),
                Err(e) => refresh_failed(id, &e, t),
            }
        }
        Op::OauthInitiate { provider, bucket } => {
            let t = target(provider, bucket);
            if !scope.allows_token(provider, bucket.as_deref()) {
                return denied(t);
            }
            err(id, ErrorCode::ProviderNotFound, "OAuth login on the host is not available in this build", t)
        }
        Op::OauthExchange { .. } | Op::OauthPoll { .. } | Op::OauthCancel { .. } => {
            err(id, ErrorCode::SessionNotFound, "Unknown OAuth session", "-".into())
        }
    }
}
