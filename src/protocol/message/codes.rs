/*!
The codes an answer carries: the wire error codes, and why a login flow
ended without a token.
*/
#![forbid(unsafe_code)]

/// Wire error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The credential does not exist (or is outside the scope; see the server).
    NotFound,
    /// The request is malformed.
    InvalidRequest,
    /// Too many requests, or a refresh inside its cooldown.
    RateLimited,
    /// Capability token or scope check failed.
    Unauthorized,
    /// The host failed.
    InternalError,
    /// No common protocol version.
    UnknownVersion,
    /// Unknown OAuth session.
    SessionNotFound,
    /// OAuth session too old.
    SessionExpired,
    /// OAuth session used twice.
    SessionAlreadyUsed,
    /// The provider refused the authorization code.
    ExchangeFailed,
    /// No OAuth provider of that name.
    ProviderNotFound,
    /// The refresh token was revoked; log in again.
    ReauthRequired,
    /// The operation is not permitted for the sandbox (SPEC §11.1).
    Forbidden,
    /// A login from the sandbox would replace another account's login.
    AccountMismatch,
    /// Version 2: too many requests in flight on the connection.
    ResourceExhausted,
    /// Version 2: the request was cancelled.
    Cancelled,
    /// Version 1: the answer does not fit in a version-1 frame.
    ResponseTooLarge,
    /// `github`: no such operation.
    UnknownOp,
    /// `github`: a parameter is missing, unknown or invalid.
    InvalidParam,
    /// `github`: GitHub or the host refused (`--github-repo`).
    PermissionDenied,
    /// `github`: `gh` on the host is not logged in.
    HostAuthRequired,
    /// `github`: `gh` is not installed on the host.
    HostGhUnavailable,
    /// `github`: any other failure of `gh` or GitHub.
    GithubError,
}

impl ErrorCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::UnknownVersion => "UNKNOWN_VERSION",
            ErrorCode::SessionNotFound => "SESSION_NOT_FOUND",
            ErrorCode::SessionExpired => "SESSION_EXPIRED",
            ErrorCode::SessionAlreadyUsed => "SESSION_ALREADY_USED",
            ErrorCode::ExchangeFailed => "EXCHANGE_FAILED",
            ErrorCode::ProviderNotFound => "PROVIDER_NOT_FOUND",
            ErrorCode::ReauthRequired => "REAUTH_REQUIRED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::AccountMismatch => "ACCOUNT_MISMATCH",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::ResponseTooLarge => "RESPONSE_TOO_LARGE",
            ErrorCode::UnknownOp => "UNKNOWN_OP",
            ErrorCode::InvalidParam => "INVALID_PARAM",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::HostAuthRequired => "HOST_AUTH_REQUIRED",
            ErrorCode::HostGhUnavailable => "HOST_GH_UNAVAILABLE",
            ErrorCode::GithubError => "GITHUB_ERROR",
        }
    }

    /// Every code, for [`from_wire`](Self::from_wire).
    const ALL: [ErrorCode; 23] = [
        ErrorCode::NotFound,
        ErrorCode::InvalidRequest,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
        ErrorCode::InternalError,
        ErrorCode::UnknownVersion,
        ErrorCode::SessionNotFound,
        ErrorCode::SessionExpired,
        ErrorCode::SessionAlreadyUsed,
        ErrorCode::ExchangeFailed,
        ErrorCode::ProviderNotFound,
        ErrorCode::ReauthRequired,
        ErrorCode::Forbidden,
        ErrorCode::AccountMismatch,
        ErrorCode::ResourceExhausted,
        ErrorCode::Cancelled,
        ErrorCode::ResponseTooLarge,
        ErrorCode::UnknownOp,
        ErrorCode::InvalidParam,
        ErrorCode::PermissionDenied,
        ErrorCode::HostAuthRequired,
        ErrorCode::HostGhUnavailable,
        ErrorCode::GithubError,
    ];

    /// The code a daemon sent, when this library knows it.
    pub fn from_wire(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == code)
    }
}

/// Why a login flow ended without a token: the `code` of an `oauth_poll`
/// answer with `status:"error"`, and the kind behind a failed
/// `oauth_exchange`. The fixed text each one shows the sandbox is chosen in
/// `server::wire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowFailure {
    /// The provider refused the authorization code, or its answer was unusable.
    ExchangeFailed,
    /// The pasted text is not `code#state`.
    BadPaste,
    /// The pasted code's state is not this login's.
    StateMismatch,
    /// The user denied the login.
    AccessDenied,
    /// The device code expired before the login was approved.
    ExpiredToken,
    /// Polling the provider failed.
    PollFailed,
    /// The browser did not come back in time.
    CallbackTimeout,
    /// The provider would not start a login.
    StartFailed,
    /// The account has device-code login turned off.
    DeviceNotEnabled,
    /// Logged in, but the token could not be stored.
    StoreFailed,
    /// The login was cancelled.
    Cancelled,
    /// A sandbox login would replace another account's login.
    AccountMismatch,
}

impl FlowFailure {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowFailure::ExchangeFailed | FlowFailure::BadPaste | FlowFailure::StateMismatch => {
                "EXCHANGE_FAILED"
            }
            FlowFailure::AccessDenied => "ACCESS_DENIED",
            FlowFailure::ExpiredToken => "EXPIRED_TOKEN",
            FlowFailure::PollFailed => "POLL_FAILED",
            FlowFailure::CallbackTimeout => "CALLBACK_TIMEOUT",
            FlowFailure::StartFailed | FlowFailure::DeviceNotEnabled | FlowFailure::StoreFailed => {
                "INTERNAL_ERROR"
            }
            FlowFailure::Cancelled => "CANCELLED",
            FlowFailure::AccountMismatch => "ACCOUNT_MISMATCH",
        }
    }

    /// The fixed text the sandbox is shown (details stay in the host log).
    pub fn text(self) -> &'static str {
        match self {
            FlowFailure::ExchangeFailed => "The provider refused the authorization code",
            FlowFailure::BadPaste => {
                "Paste the whole code#state string the provider showed after you signed in"
            }
            FlowFailure::StateMismatch => {
                "The pasted code does not belong to this login (state mismatch); start a new login"
            }
            FlowFailure::AccessDenied => "The login was denied",
            FlowFailure::ExpiredToken => "The device code expired before the login was approved",
            FlowFailure::PollFailed => "Polling the provider failed",
            FlowFailure::CallbackTimeout => "The browser did not come back in time",
            FlowFailure::StartFailed => "The login could not start on the host",
            FlowFailure::DeviceNotEnabled => "Device code login is not enabled for this account",
            FlowFailure::StoreFailed => "Logged in, but the token could not be stored on the host",
            FlowFailure::Cancelled => "The login was cancelled",
            FlowFailure::AccountMismatch => {
                "This bucket holds another account's login; log in on the host to replace it"
            }
        }
    }
}

#[cfg(test)]
mod wire_name_tests {
    use super::ErrorCode;

    #[test]
    fn every_code_reads_back_from_its_wire_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_wire(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::from_wire("SOMETHING_NEW"), None);
    }
}
