//! The token ops: `get_token`, `save_token`, `remove_token`,
//! `list_providers`, `list_buckets`, `get_bucket_stats`, `refresh_token`.
#![forbid(unsafe_code)]

use serde_json::{Map, Value};

use super::{Ctx, LOCK_WAIT, Reply, fail, internal, ok, refresh_failed, served, target};
use crate::protocol::answer::Answer;
use crate::server::wire;
use crate::store::{Change, LockWait, TokenStore, UpdateError, update_token};
use crate::token::OAuthToken;

type Bucket = Option<String>;

/// `get_token`: the stored token, refreshed first when it is due
/// ([`crate::oauth::OAuthHost::serve`]).
pub(super) fn get(cx: &Ctx<'_>, provider: &str, bucket: &Bucket) -> Reply {
    let t = target(provider, bucket);
    if !cx.scope.allows_token(provider, bucket.as_deref()) {
        return cx.denied(t);
    }
    match cx.shared.store.tokens.get_token(provider, bucket.as_deref()) {
        Ok(Some(token)) => match cx.shared.oauth.serve(provider, bucket.as_deref(), token) {
            Ok(token) => served(cx.shared, cx.id, Some((provider, bucket.as_deref())), &token, t),
            Err(e) => refresh_failed(cx.id, &e, t),
        },
        Ok(None) => fail(cx.id, wire::NO_TOKEN, t),
        Err(e) => internal(cx.id, &e, t),
    }
}

/// `save_token`: what [`OAuthToken::sandbox_update`] allows, under the
/// refresh lock.
pub(super) fn save(cx: &Ctx<'_>, provider: &str, bucket: &Bucket, token: &Map<String, Value>) -> Reply {
    let (id, shared) = (cx.id, cx.shared);
    let t = target(provider, bucket);
    if !cx.scope.allows_token(provider, bucket.as_deref()) {
        return cx.denied(t);
    }
    // Inject mode: the sandbox holds no real token of a provider that is
    // not revealed, so it has nothing to save; what it sends (a sentinel,
    // or a token of its own) never replaces the host's.
    let revealed = shared.config.inject.as_ref().is_none_or(|i| i.reveal.contains(provider));
    let sentinel = token
        .get("access_token")
        .and_then(Value::as_str)
        .is_some_and(|a| shared.sentinels.is_sentinel(a.trim()));
    if !revealed || sentinel {
        return fail(id, wire::SENTINEL_SAVE, t);
    }
    // SPEC §11.2: only the access token, its expiry, type and scope
    // change; the stored record keeps every other field.
    let cancelled = || cx.cancel.is_cancelled();
    let wait = LockWait { limit: LOCK_WAIT, cancelled: Some(&cancelled) };
    let saved =
        update_token(shared.store.tokens.as_ref(), provider, bucket.as_deref(), &wait, |stored| match stored
            .get()
            .map(|s| OAuthToken::sandbox_update(s.as_ref(), token))
        {
            Ok(Some(updated)) => (Change::Save(updated), Ok(true)),
            Ok(None) => (Change::Keep, Ok(false)),
            Err(e) => (Change::Keep, Err(e)),
        });
    match saved {
        Ok(Ok(true)) => ok(id, Answer::Done, t),
        Ok(Ok(false)) => fail(id, wire::BAD_SAVE, t),
        Ok(Err(e)) => internal(id, &e, t),
        Err(e) => internal(id, &e.into_error(), t),
    }
}

/// `remove_token`, under the refresh lock. A failed removal is logged and
/// answered as done (only a lock that cannot be taken is an error).
pub(super) fn remove(cx: &Ctx<'_>, provider: &str, bucket: &Bucket) -> Reply {
    let t = target(provider, bucket);
    if !cx.scope.allows_token(provider, bucket.as_deref()) {
        return cx.denied(t);
    }
    let cancelled = || cx.cancel.is_cancelled();
    let wait = LockWait { limit: LOCK_WAIT, cancelled: Some(&cancelled) };
    let tokens = cx.shared.store.tokens.as_ref();
    match update_token(tokens, provider, bucket.as_deref(), &wait, |_| (Change::Remove, ())) {
        Err(UpdateError::Lock(e)) => return internal(cx.id, &e, t),
        Err(UpdateError::Write(e, ())) => crate::log_warn!("{t}: remove failed: {e}"),
        Ok(()) => {}
    }
    ok(cx.id, Answer::Done, t)
}

/// `list_providers`: those with at least one bucket in scope.
pub(super) fn list_providers(cx: &Ctx<'_>) -> Reply {
    let tokens = &cx.shared.store.tokens;
    let mut list = tokens.list_providers().unwrap_or_default();
    list.retain(|p| {
        cx.scope.allows_provider(p)
            && tokens.list_buckets(p).unwrap_or_default().iter().any(|b| cx.scope.allows_token(p, Some(b)))
    });
    ok(cx.id, Answer::Providers(list), "-".into())
}

/// `list_buckets`: the buckets in scope.
pub(super) fn list_buckets(cx: &Ctx<'_>, provider: &str) -> Reply {
    let mut list = if cx.scope.allows_provider(provider) {
        cx.shared.store.tokens.list_buckets(provider).unwrap_or_default()
    } else {
        vec![]
    };
    list.retain(|b| cx.scope.allows_token(provider, Some(b)));
    ok(cx.id, Answer::Buckets(list), provider.to_owned())
}

/// `get_bucket_stats`.
pub(super) fn stats(cx: &Ctx<'_>, provider: &str, bucket: &Bucket) -> Reply {
    let t = target(provider, bucket);
    if !cx.scope.allows_token(provider, bucket.as_deref()) {
        return cx.denied(t);
    }
    match cx.shared.store.tokens.get_bucket_stats(provider, bucket.as_deref()) {
        Ok(Some(s)) => ok(
            cx.id,
            Answer::Stats { bucket: s.bucket, request_count: s.request_count, percentage: s.percentage },
            t,
        ),
        Ok(None) => fail(cx.id, wire::NO_STATS, t),
        Err(e) => internal(cx.id, &e, t),
    }
}

/// `refresh_token`: a refresh on request ([`crate::oauth::OAuthHost::refresh`]).
pub(super) fn refresh(cx: &Ctx<'_>, provider: &str, bucket: &Bucket) -> Reply {
    let t = target(provider, bucket);
    if !cx.scope.allows_token(provider, bucket.as_deref()) {
        return cx.denied(t);
    }
    match cx.shared.oauth.refresh(provider, bucket.as_deref()) {
        Ok(token) => served(cx.shared, cx.id, Some((provider, bucket.as_deref())), &token, t),
        Err(e) => refresh_failed(cx.id, &e, t),
    }
}
