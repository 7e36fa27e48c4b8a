/*!
Why a login session op failed ([`LoginError`]): each variant maps to one
wire code (`crate::server::wire`), and its text is fixed; the details of a
failed flow stay on the host.
*/
#![forbid(unsafe_code)]

use crate::oauth::login::FlowError;
use crate::oauth::provider::FlowType;
use crate::protocol::message::FlowFailure;

/// Why a session op failed. Each maps to one wire code; the texts are fixed.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum LoginError {
    /// No provider of that name offers a login (`PROVIDER_NOT_FOUND`).
    UnknownProvider,
    /// The provider does not offer that flow (`INVALID_REQUEST`).
    FlowNotOffered(FlowType),
    /// No such session (`SESSION_NOT_FOUND`).
    NotFound,
    /// The session belongs to another peer identity (`UNAUTHORIZED`).
    WrongPeer,
    /// The session was used (`SESSION_ALREADY_USED`).
    AlreadyUsed,
    /// The session expired (`SESSION_EXPIRED`).
    Expired,
    /// The op does not fit the session's flow (`INVALID_REQUEST`).
    WrongOp {
        /// The op used.
        op: &'static str,
        /// The session's flow.
        flow: FlowType,
        /// The op to use.
        use_op: &'static str,
    },
    /// Too many logins in progress (`RATE_LIMITED`).
    TooMany,
    /// Too many browser-redirect logins in progress (`RATE_LIMITED`).
    TooManyBrowser,
    /// The login could not start, the exchange failed or the token could
    /// not be stored: the kind decides the code and the fixed text, the
    /// details stay on the host.
    Flow(FlowError),
    /// A login from the sandbox would replace another account's login
    /// (`ACCOUNT_MISMATCH`); nothing was stored.
    AccountMismatch,
}

impl LoginError {
    /// A login that could not start on the host, for `detail`.
    pub fn start(detail: impl Into<String>) -> LoginError {
        LoginError::Flow(FlowError::new(FlowFailure::StartFailed, detail))
    }
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::UnknownProvider => f.write_str("No OAuth login is configured for this provider"),
            LoginError::FlowNotOffered(flow) => {
                write!(f, "This provider does not offer the {} login flow", flow.as_str())
            }
            LoginError::NotFound => f.write_str("Unknown OAuth session"),
            LoginError::WrongPeer => f.write_str("This OAuth session belongs to another peer"),
            LoginError::AlreadyUsed => f.write_str("OAuth session already used"),
            LoginError::Expired => f.write_str("OAuth session expired; start a new login"),
            LoginError::WrongOp { op, flow, use_op } => write!(
                f,
                "Operation {op} is not valid for flow type {}. Use {use_op} instead.",
                flow.as_str()
            ),
            LoginError::TooMany => f.write_str("Too many OAuth logins in progress; try again later"),
            LoginError::TooManyBrowser => {
                f.write_str("Too many browser logins in progress; finish or cancel one, or use another flow")
            }
            LoginError::Flow(e) => write!(f, "{} ({})", e.kind.text(), e.detail),
            LoginError::AccountMismatch => {
                f.write_str("This bucket holds another account's login; log in on the host to replace it")
            }
        }
    }
}
