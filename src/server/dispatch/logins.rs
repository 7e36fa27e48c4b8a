/*!
The login ops: `oauth_initiate`, `oauth_exchange`, `oauth_poll`,
`oauth_cancel`, bound to the peer's [`crate::oauth::Owner`]. A flow's
outcome is `ok:true` with a `status`; only protocol and session problems
are `ok:false`. Audit targets name a session by a short prefix of its id
only.
*/
#![forbid(unsafe_code)]

use super::{Ctx, Reply, fail, login_failed, mask, ok, served, target};
use crate::oauth::{Initiated, Poll};
use crate::protocol::answer::{Answer, Initiation, PollState};
use crate::protocol::message;
use crate::protocol::message::FlowType;
use crate::server::wire;

/// `oauth_initiate`: a new session of the peer's.
pub(super) fn initiate(
    cx: &Ctx<'_>,
    provider: &str,
    bucket: &Option<String>,
    flow: Option<FlowType>,
) -> Reply {
    let t = target(provider, bucket);
    if !cx.scope.allows_token(provider, bucket.as_deref()) {
        return cx.denied(t);
    }
    match cx.shared.oauth.logins().initiate(cx.owner, provider, bucket.as_deref(), flow) {
        Ok(i) => {
            let t = format!("{t} session={}", crate::oauth::sessions::short_id(&i.session_id));
            ok(cx.id, initiated(&i), t)
        }
        Err(e) => login_failed(cx.id, &e, t),
    }
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

/// Whether a session's provider:bucket is still in scope (a SIGHUP may
/// have narrowed it since the login started); unknown sessions pass, to
/// get `SESSION_NOT_FOUND`.
fn session_in_scope(cx: &Ctx<'_>, session_id: &str) -> bool {
    match cx.shared.oauth.logins().login_of(session_id) {
        Some((p, b)) => cx.scope.allows_token(&p, b.as_deref()),
        None => true,
    }
}

/// `oauth_exchange`: the code of an authorization-code session.
pub(super) fn exchange(cx: &Ctx<'_>, session_id: &str, code: &str) -> Reply {
    let shared = cx.shared;
    let t = shared.oauth.logins().target(session_id);
    if !session_in_scope(cx, session_id) {
        return cx.denied(t);
    }
    let of = shared.oauth.logins().login_of(session_id);
    match shared.oauth.exchange(cx.owner, session_id, code) {
        Ok(token) => served(shared, cx.id, of.as_ref().map(|(p, b)| (p.as_str(), b.as_deref())), &token, t),
        Err(e) => login_failed(cx.id, &e, t),
    }
}

/// `oauth_poll`: a device-code session's state.
pub(super) fn poll(cx: &Ctx<'_>, session_id: &str) -> Reply {
    let (shared, id) = (cx.shared, cx.id);
    let t = shared.oauth.logins().target(session_id);
    if !session_in_scope(cx, session_id) {
        return cx.denied(t);
    }
    let of = shared.oauth.logins().login_of(session_id);
    match shared.oauth.poll(cx.owner, session_id) {
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

/// `oauth_cancel`.
pub(super) fn cancel(cx: &Ctx<'_>, session_id: &str) -> Reply {
    let t = cx.shared.oauth.logins().target(session_id);
    match cx.shared.oauth.logins().cancel(cx.owner, session_id) {
        Ok(()) => ok(cx.id, Answer::Done, t),
        Err(e) => login_failed(cx.id, &e, t),
    }
}
