//! The API key ops: `get_api_key`, `list_api_keys`, `has_api_key`.
#![forbid(unsafe_code)]

use super::{Ctx, Reply, fail, internal, ok};
use crate::inject::routes::{base_url_fits, key_route};
use crate::inject::sentinel::NoSentinel;
use crate::protocol::answer::Answer;
use crate::server::wire;
use crate::store::KeyStore;

/// `get_api_key`: the key, or in inject mode its sentinel.
pub(super) fn get(cx: &Ctx<'_>, name: &str) -> Reply {
    if !cx.scope.allows_key(name) {
        return cx.denied(name.to_owned());
    }
    match cx.shared.store.keys.get_key(name) {
        Ok(Some(_)) if cx.shared.config.inject.is_some() => sentinel(cx, name),
        Ok(Some(k)) => ok(cx.id, Answer::Key(k.expose().to_owned()), name.to_owned()),
        Ok(None) => fail(cx.id, wire::NO_KEY, name.to_owned()),
        Err(e) => internal(cx.id, &e, name.to_owned()),
    }
}

/// Inject mode: the key's sentinel, routed by the provider of the profile
/// that names it; `--reveal` never covers keys.
fn sentinel(cx: &Ctx<'_>, name: &str) -> Reply {
    let mut provider = cx.scope.key_providers.get(name).map(String::as_str);
    // a profile that sends the key to another host: not this route's
    let route = provider.and_then(key_route);
    if let (Some(route), Some(url)) = (route, cx.scope.key_base_urls.get(name)) {
        if !base_url_fits(url, route) {
            crate::log_warn!(
                "inject: key {name}: its profile's base-url is not {}; no sentinel served",
                route.host
            );
            provider = None;
        }
    }
    match cx.shared.sentinels.for_key(name, provider) {
        Ok(sentinel) => ok(cx.id, Answer::Key(sentinel), name.to_owned()),
        Err(NoSentinel::NoRoute) => fail(cx.id, wire::NO_ROUTE, name.to_owned()),
        Err(_) => fail(cx.id, wire::STORE_FAILED, name.to_owned()),
    }
}

/// `list_api_keys`: the names in scope.
pub(super) fn list(cx: &Ctx<'_>) -> Reply {
    let mut list = cx.shared.store.keys.list_keys().unwrap_or_default();
    list.retain(|k| cx.scope.allows_key(k));
    ok(cx.id, Answer::Keys(list), "-".into())
}

/// `has_api_key`.
pub(super) fn has(cx: &Ctx<'_>, name: &str) -> Reply {
    if !cx.scope.allows_key(name) {
        return cx.denied(name.to_owned());
    }
    match cx.shared.store.keys.has_key(name) {
        Ok(exists) => ok(cx.id, Answer::Exists(exists), name.to_owned()),
        Err(e) => internal(cx.id, &e, name.to_owned()),
    }
}
