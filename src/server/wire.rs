/*!
What the sandbox is told when something fails: the one place where an
internal error becomes a wire code and a fixed text. Nothing here formats
a value into a message; the details (store paths, bus addresses, provider
statuses and OAuth error codes) go to the host log, written by the
function that drops them from the answer.
*/
#![forbid(unsafe_code)]

use crate::error::Error;
use crate::oauth::http::UpstreamError;
use crate::oauth::login::FlowError;
use crate::oauth::{FlowType, LoginError, RefreshError};
use crate::protocol::message::{ErrorCode, FlowFailure};

/// The text of a refresh inside the cooldown; fixed, so it names
/// [`crate::oauth::REFRESH_COOLDOWN`] by hand (a unit test keeps the two in
/// step).
const COOLING_DOWN_TEXT: &str = "Refreshed less than 30 s ago; try again later";

/// A failure as the sandbox sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireError {
    /// The code.
    pub code: ErrorCode,
    /// The fixed text.
    pub text: &'static str,
    /// Seconds to wait before trying again, for `RATE_LIMITED`.
    pub retry_after: Option<u64>,
}

impl WireError {
    const fn new(code: ErrorCode, text: &'static str) -> WireError {
        WireError { code, text, retry_after: None }
    }
}

/// A request for something outside the profile (whether or not it exists).
pub const ACCESS_DENIED: WireError = WireError::new(ErrorCode::Unauthorized, "Access denied");
/// No token in the bucket.
pub const NO_TOKEN: WireError = WireError::new(ErrorCode::NotFound, "No token found");
/// No usage statistics for the bucket.
pub const NO_STATS: WireError = WireError::new(ErrorCode::NotFound, "No stats found");
/// No key of that name.
pub const NO_KEY: WireError = WireError::new(ErrorCode::NotFound, "No API key found");
/// A `save_token` whose token lacks what a sandbox save needs.
pub const BAD_SAVE: WireError =
    WireError::new(ErrorCode::InvalidRequest, "token needs access_token, expiry and token_type");
/// The store failed.
pub const STORE_FAILED: WireError =
    WireError::new(ErrorCode::InternalError, "The credential store failed on the host");
/// Over the request rate.
pub const TOO_MANY_REQUESTS: WireError =
    WireError { code: ErrorCode::RateLimited, text: "Too many requests", retry_after: Some(1) };
/// Over the connection cap.
pub const TOO_MANY_CONNECTIONS: WireError = WireError {
    code: ErrorCode::RateLimited,
    text: "Too many connections; try again later",
    retry_after: Some(1),
};
/// Inject mode: a token or key with no proxy route (a provider that cannot
/// use a base URL, or a key no profile ties to a provider).
pub const NO_ROUTE: WireError = WireError::new(
    ErrorCode::Forbidden,
    "Inject mode: this credential has no proxy route; the host can serve it with --reveal PROVIDER, or name the key in a profile with its provider",
);
/// Inject mode: a save from the sandbox (it holds sentinels, not tokens).
pub const SENTINEL_SAVE: WireError =
    WireError::new(ErrorCode::Forbidden, "Inject mode: the sandbox holds no token to store");
/// A handshake without the right capability token.
pub const BAD_CAPABILITY: WireError =
    WireError::new(ErrorCode::Unauthorized, "Invalid or missing capability token");
/// A response that does not fit in a version-2 frame.
pub const RESPONSE_TOO_LARGE: WireError = WireError::new(ErrorCode::InternalError, "Response too large");
/// A response that does not fit in a version-1 frame (the connection stays).
pub const RESPONSE_TOO_LARGE_V1: WireError =
    WireError::new(ErrorCode::ResponseTooLarge, "Response exceeds maximum frame size for protocol version 1");
/// Version 2: a 17th request in flight on one connection.
pub const TOO_MANY_IN_FLIGHT: WireError =
    WireError::new(ErrorCode::ResourceExhausted, "Too many concurrent requests");
/// Version 2: an id already in flight on the connection.
pub const DUPLICATE_ID: WireError = WireError::new(ErrorCode::InvalidRequest, "Duplicate request id");
/// A handler that panicked (a bug; the details are in the host log).
pub const PANICKED: WireError = WireError::new(ErrorCode::InternalError, "The request failed on the host");
/// Version 2: the answer of a cancelled request.
pub const CANCELLED: WireError = WireError::new(ErrorCode::Cancelled, "Operation cancelled");

/// A store failure: logged with its details under `target`.
pub fn store(e: &Error, target: &str) -> WireError {
    crate::log_warn!("{target}: the store failed: {e}");
    STORE_FAILED
}

fn upstream_text(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Transient(_) => {
            "Token refresh failed: the provider did not answer in time or is unavailable"
        }
        UpstreamError::Revoked { .. } | UpstreamError::Rejected { .. } => {
            "Token refresh failed: the provider refused the request"
        }
        UpstreamError::BadAnswer(_) => "Token refresh failed: the provider's answer is unusable",
        UpstreamError::Failed(_) => "Token refresh failed: the provider could not be reached",
    }
}

/// A refresh failure (refresh on read, `refresh_token`): logged with its
/// details under `target`.
pub fn refresh(e: &RefreshError, target: &str) -> WireError {
    match e {
        RefreshError::NotFound | RefreshError::CoolingDown { .. } => crate::log_debug!("{target}: {e}"),
        RefreshError::Store(_) | RefreshError::LockBusy | RefreshError::Upstream { .. } => {
            crate::log_warn!("{target}: refresh failed: {e}")
        }
        _ => crate::log_info!("{target}: refresh failed: {e}"),
    }
    match e {
        RefreshError::NotFound => NO_TOKEN,
        RefreshError::UnknownProvider => {
            WireError::new(ErrorCode::ProviderNotFound, "No OAuth provider of that name is configured")
        }
        RefreshError::NoRefreshToken => WireError::new(
            ErrorCode::ReauthRequired,
            "The stored token has no refresh token; log in again on the host",
        ),
        RefreshError::Revoked { .. } => WireError::new(
            ErrorCode::ReauthRequired,
            "The provider revoked the refresh token; log in again on the host",
        ),
        RefreshError::CoolingDown { retry_after } => WireError {
            code: ErrorCode::RateLimited,
            text: COOLING_DOWN_TEXT,
            retry_after: Some(retry_after.as_secs_f64().ceil().max(1.0) as u64),
        },
        RefreshError::LockBusy => {
            WireError::new(ErrorCode::InternalError, "Another process is refreshing this token; try again")
        }
        RefreshError::Store(_) => STORE_FAILED,
        RefreshError::Upstream { error, .. } => {
            WireError::new(ErrorCode::InternalError, upstream_text(error))
        }
    }
}

/// The wire code of a login error.
pub fn login_code(e: &LoginError) -> ErrorCode {
    match e {
        LoginError::UnknownProvider => ErrorCode::ProviderNotFound,
        LoginError::FlowNotOffered(_) | LoginError::WrongOp { .. } => ErrorCode::InvalidRequest,
        LoginError::NotFound => ErrorCode::SessionNotFound,
        LoginError::WrongPeer => ErrorCode::Unauthorized,
        LoginError::AlreadyUsed => ErrorCode::SessionAlreadyUsed,
        LoginError::Expired => ErrorCode::SessionExpired,
        LoginError::TooMany | LoginError::TooManyBrowser => ErrorCode::RateLimited,
        LoginError::AccountMismatch => ErrorCode::AccountMismatch,
        LoginError::Flow(f) => match f.kind {
            FlowFailure::ExchangeFailed | FlowFailure::BadPaste | FlowFailure::StateMismatch => {
                ErrorCode::ExchangeFailed
            }
            FlowFailure::AccountMismatch => ErrorCode::AccountMismatch,
            _ => ErrorCode::InternalError,
        },
    }
}

/// A login failure of `oauth_initiate`, `oauth_exchange`, `oauth_poll`
/// or `oauth_cancel`; a flow's details are logged under `target`.
pub fn login(e: &LoginError, target: &str) -> WireError {
    let code = login_code(e);
    let text = match e {
        LoginError::UnknownProvider => "No OAuth login is configured for this provider",
        LoginError::FlowNotOffered(flow) => match flow {
            FlowType::PkceRedirect => "This provider does not offer the pkce_redirect login flow",
            FlowType::DeviceCode => "This provider does not offer the device_code login flow",
            FlowType::BrowserRedirect => "This provider does not offer the browser_redirect login flow",
        },
        LoginError::NotFound => "Unknown OAuth session",
        LoginError::WrongPeer => "This OAuth session belongs to another peer",
        LoginError::AlreadyUsed => "OAuth session already used",
        LoginError::Expired => "OAuth session expired; start a new login",
        LoginError::WrongOp { flow, .. } => wrong_op_text(*flow),
        LoginError::TooMany => "Too many OAuth logins in progress; try again later",
        LoginError::TooManyBrowser => {
            "Too many browser logins in progress; finish or cancel one, or use another flow"
        }
        LoginError::AccountMismatch => FlowFailure::AccountMismatch.text(),
        LoginError::Flow(f) => {
            crate::log_warn!("oauth {target}: {f}");
            f.kind.text()
        }
    };
    let retry_after = (code == ErrorCode::RateLimited).then_some(60);
    WireError { code, text, retry_after }
}

/// SPEC's text for an op that does not fit the session's flow (the op is
/// the other one of `oauth_exchange` and `oauth_poll`).
fn wrong_op_text(flow: FlowType) -> &'static str {
    match flow {
        FlowType::PkceRedirect => {
            "Operation oauth_poll is not valid for flow type pkce_redirect. Use oauth_exchange instead."
        }
        FlowType::DeviceCode => {
            "Operation oauth_exchange is not valid for flow type device_code. Use oauth_poll instead."
        }
        FlowType::BrowserRedirect => {
            "Operation oauth_exchange is not valid for flow type browser_redirect. Use oauth_poll instead."
        }
    }
}

/// A flow that ended without a token, for `oauth_poll`'s `status:"error"`
/// answer: its code and fixed text. The details were logged when it ended.
pub fn flow(e: &FlowError) -> (&'static str, &'static str) {
    (e.kind.as_str(), e.kind.text())
}

#[cfg(test)]
mod cooldown_tests {
    #[test]
    fn the_cooldown_text_names_the_cooldown() {
        let secs = crate::oauth::REFRESH_COOLDOWN.as_secs();
        assert!(super::COOLING_DOWN_TEXT.contains(&format!(" {secs} s ")), "{}", super::COOLING_DOWN_TEXT);
    }
}
