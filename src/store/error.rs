/*!
The store's error type. The kinds follow llxprt-code's secure-store
taxonomy (so a log reader sees the same words on both sides), plus
`InvalidName` for names rejected before any storage call.
*/
#![forbid(unsafe_code)]

use std::fmt;
use std::io;

/// What went wrong in a store operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend cannot be reached (no Secret Service, no file access).
    Unavailable,
    /// The keyring collection or item is locked.
    Locked,
    /// The user or the system refused access.
    Denied,
    /// An entry exists but cannot be decoded.
    Corrupt,
    /// A backend call or a lock wait took too long.
    Timeout,
    /// The entry does not exist.
    NotFound,
    /// A write was read back with a different value (another writer won).
    Conflict,
    /// A provider, bucket or key name broke the naming rules.
    InvalidName,
}

impl StoreErrorKind {
    /// The upper-case code llxprt-code uses for this kind.
    pub fn code(self) -> &'static str {
        match self {
            StoreErrorKind::Unavailable => "UNAVAILABLE",
            StoreErrorKind::Locked => "LOCKED",
            StoreErrorKind::Denied => "DENIED",
            StoreErrorKind::Corrupt => "CORRUPT",
            StoreErrorKind::Timeout => "TIMEOUT",
            StoreErrorKind::NotFound => "NOT_FOUND",
            StoreErrorKind::Conflict => "CONFLICT",
            StoreErrorKind::InvalidName => "INVALID_NAME",
        }
    }
}

/// A store error: a kind and a message that is safe to show and log (it
/// never contains a secret value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreError {
    /// The kind, for callers that branch on it.
    pub kind: StoreErrorKind,
    /// Human-readable text, free of secrets.
    pub message: String,
}

impl StoreError {
    /// Builds an error of `kind` with `message`.
    pub fn new(kind: StoreErrorKind, message: impl Into<String>) -> Self {
        StoreError { kind, message: message.into() }
    }

    /// An I/O failure on `what` (a path or an operation name).
    pub fn io(what: impl fmt::Display, err: &io::Error) -> Self {
        let kind = match err.kind() {
            io::ErrorKind::PermissionDenied => StoreErrorKind::Denied,
            io::ErrorKind::NotFound => StoreErrorKind::NotFound,
            io::ErrorKind::TimedOut => StoreErrorKind::Timeout,
            _ => StoreErrorKind::Unavailable,
        };
        StoreError::new(kind, format!("{what}: {err}"))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.code())
    }
}

impl std::error::Error for StoreError {}

/// Result alias for store operations.
pub type StoreResult<T> = Result<T, StoreError>;
