/*!
The crate's error type. The store has its own [`StoreError`] (with
llxprt-code's kinds); everything that crosses a module boundary towards a
binary or a library user becomes an [`Error`], which keeps what callers
branch on typed: the store's kind, the daemon's [`ErrorCode`]
([`RemoteCode`]), and a usage error (exit 2) apart from an environment that
does not allow the request (exit 1). [`std::error::Error::source`] gives the
store, token or I/O error underneath. Every message is safe to print: none
carries a secret.
*/
#![forbid(unsafe_code)]

use std::fmt;
use std::io;

pub use crate::protocol::message::ErrorCode;
pub use crate::store::error::{StoreError, StoreErrorKind};
pub use crate::token::TokenError;

/// The code of an error answer from the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteCode {
    /// A code of this protocol.
    Known(ErrorCode),
    /// A code this library does not know (a newer daemon's), as sent.
    Other(String),
}

impl RemoteCode {
    /// The code a daemon sent.
    pub fn parse(code: &str) -> RemoteCode {
        ErrorCode::from_wire(code).map_or_else(|| RemoteCode::Other(code.to_owned()), RemoteCode::Known)
    }

    /// The code as sent.
    pub fn as_str(&self) -> &str {
        match self {
            RemoteCode::Known(c) => c.as_str(),
            RemoteCode::Other(s) => s,
        }
    }
}

impl PartialEq<ErrorCode> for RemoteCode {
    fn eq(&self, other: &ErrorCode) -> bool {
        *self == RemoteCode::Known(*other)
    }
}

impl fmt::Display for RemoteCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Anything that can go wrong in the library.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The host store failed.
    Store(StoreError),
    /// A token failed validation.
    Token(TokenError),
    /// The daemon answered with an error code (client side).
    Remote {
        /// The wire code (`NOT_FOUND`, `UNAUTHORIZED`, ...).
        code: RemoteCode,
        /// The daemon's message.
        message: String,
    },
    /// The connection to the daemon failed or was lost.
    Connection(String),
    /// The command line or a config file is wrong (the binaries exit 2).
    Usage(String),
    /// The host's environment does not allow it: a variable unset or
    /// invalid, a directory or socket path that cannot be used, no keyring
    /// on this platform (the binaries exit 1, like any other failure).
    Environment(String),
    /// An I/O operation on `what` failed.
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: io::Error,
    },
}

impl Error {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Store(e) => write!(f, "{e}"),
            Error::Token(e) => write!(f, "invalid token: {e}"),
            Error::Remote { code, message } => write!(f, "{message} ({code})"),
            Error::Connection(m) | Error::Usage(m) | Error::Environment(m) => f.write_str(m),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Store(e) => Some(e),
            Error::Token(e) => Some(e),
            Error::Io { source, .. } => Some(source),
            Error::Remote { .. } | Error::Connection(_) | Error::Usage(_) | Error::Environment(_) => None,
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        Error::Store(e)
    }
}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        Error::Token(e)
    }
}

/// Result alias for the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
