/*!
The crate's error type. The store has its own [`StoreError`] (with
llxprt-code's kinds); everything that crosses a module boundary towards a
binary or a library user becomes an [`Error`]. Every message is safe to
print: none carries a secret.
*/
#![forbid(unsafe_code)]

use std::fmt;
use std::io;

pub use crate::store::error::{StoreError, StoreErrorKind};
pub use crate::token::TokenError;

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
        code: String,
        /// The daemon's message.
        message: String,
    },
    /// The connection to the daemon failed or was lost.
    Connection(String),
    /// The command line or a config file is wrong.
    Usage(String),
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
            Error::Connection(m) | Error::Usage(m) => f.write_str(m),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

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
