/*!
The login flows' steps against a provider, each a plain function over
[`Http`](super::http::Http): PKCE material and the authorization URL, the
authorization-code exchange, the device authorization (RFC 8628 and
OpenAI's variant) and its polling, and the loopback listener of the
browser redirect.

The session table ([`super::sessions`]) strings these steps together and
decides what crosses the socket. Nothing here logs or returns a secret in
an error: a [`FlowError`] carries a wire code and a message built from
fixed text, HTTP statuses and OAuth error codes that passed
[`safe_error_code`](super::http::safe_error_code).

PKCE material, the authorization URL and the code exchange are in
`pkce.rs`, the device authorization in `device.rs`, and the loopback
listener in `redirect.rs`; this file holds the error every step returns.
*/
#![forbid(unsafe_code)]

mod device;
mod pkce;
mod redirect;

use std::fmt;

use super::http::UpstreamError;
use crate::protocol::message::FlowFailure;

pub use device::{
    DEFAULT_DEVICE_INTERVAL, DevicePoll, DeviceStart, SLOW_DOWN_STEP, device_poll, device_start,
};
pub use pkce::{Pkce, authorize_url, exchange_code, new_state, same_secret, split_pasted_code};
pub use redirect::{Callback, CallbackConn, CallbackRead, RedirectListener, bind_redirect_listener, respond};

/// Why a login step failed: a kind (the wire shows only its code and a
/// fixed text) and the details, for the host's log and terminal only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowError {
    /// What went wrong.
    pub kind: FlowFailure,
    /// Statuses, safe OAuth error codes, the step that failed. Never sent.
    pub detail: String,
}

impl FlowError {
    /// A flow error.
    pub fn new(kind: FlowFailure, detail: impl Into<String>) -> FlowError {
        FlowError { kind, detail: detail.into() }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.detail, self.kind.as_str())
    }
}

fn upstream(kind: FlowFailure, what: &str, e: &UpstreamError) -> FlowError {
    FlowError::new(kind, format!("{what}: {e}"))
}
