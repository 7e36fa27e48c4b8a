/*!
Every environment variable the project reads or sets, by name, in one
place. llxprt-code's own names come first (the two programs share them);
then this project's, all `LLXPRT_CREDD_*`. The tuning knobs below the
first group exist for tests and unusual hosts; the man pages document the
ones a user sets.
*/
#![forbid(unsafe_code)]

// llxprt-code's names, shared with it

/// The daemon's socket; set, a program talks to the daemon (sandbox mode).
pub const CREDENTIAL_SOCKET: &str = "LLXPRT_CREDENTIAL_SOCKET";
/// The capability token itself (llxprt-code's client reads it from a descriptor instead).
pub const CAPABILITY_TOKEN: &str = "LLXPRT_CAPABILITY_TOKEN";
/// A file holding `LLXPRT_CAPABILITY_TOKEN=...`.
pub const CAPABILITY_FILE: &str = "LLXPRT_CAPABILITY_FILE";
/// The descriptor the capability token is read from (llxprt-code: 3).
pub const CAPABILITY_FD: &str = "LLXPRT_CAPABILITY_FD";
/// llxprt-code's profiles directory, in place of `~/.llxprt`.
pub const CONFIG_HOME: &str = "LLXPRT_CONFIG_HOME";
/// llxprt-code's data directory (the encrypted fallback files).
pub const DATA_HOME: &str = "LLXPRT_DATA_HOME";
/// llxprt-code's log directory (the lock files live under it).
pub const LOG_HOME: &str = "LLXPRT_LOG_HOME";
/// `1`/`true`: no OS keyring (llxprt-code's switch).
pub const DISABLE_OS_KEYRING: &str = "LLXPRT_DISABLE_OS_KEYRING";
/// How long a login session lives, in seconds (llxprt-code's name).
pub const OAUTH_SESSION_TIMEOUT_SECONDS: &str = "LLXPRT_OAUTH_SESSION_TIMEOUT_SECONDS";

// this project's names

/// The daemon `llxprt-credd -k` stops (set by the daemon's announcement).
pub const CREDD_PID: &str = "LLXPRT_CREDD_PID";
/// The store backend when no `--store` flag is given.
pub const STORE: &str = "LLXPRT_CREDD_STORE";
/// The providers file when no `--providers-file` flag is given.
pub const PROVIDERS_FILE: &str = "LLXPRT_CREDD_PROVIDERS_FILE";
/// Prefix of the per-provider overrides `LLXPRT_CREDD_{PROVIDER}_{FIELD}`.
pub const PROVIDER_OVERRIDE_PREFIX: &str = "LLXPRT_CREDD_";
/// Prefix and suffix of inject mode's loopback upstream overrides
/// `LLXPRT_CREDD_UPSTREAM_{HOST}_URL`.
pub const UPSTREAM_OVERRIDE: (&str, &str) = ("LLXPRT_CREDD_UPSTREAM_", "_URL");
/// How long info log lines may gather, in milliseconds (0: at once).
pub const LOG_FLUSH_MS: &str = "LLXPRT_CREDD_LOG_FLUSH_MS";
/// The log file's rotation size in bytes.
pub const LOG_ROTATE_BYTES: &str = "LLXPRT_CREDD_LOG_ROTATE_BYTES";
/// Multiplies the OAuth delays, cooldown and renewal times (tests).
pub const TIME_SCALE: &str = "LLXPRT_CREDD_TIME_SCALE";
/// The token endpoints' HTTP timeout in milliseconds.
pub const HTTP_TIMEOUT_MS: &str = "LLXPRT_CREDD_HTTP_TIMEOUT_MS";
/// The keyring's call timeout in milliseconds.
pub const KEYRING_TIMEOUT_MS: &str = "LLXPRT_CREDD_KEYRING_TIMEOUT_MS";
/// The `gh` timeout of the GitHub broker in milliseconds.
pub const GH_TIMEOUT_MS: &str = "LLXPRT_CREDD_GH_TIMEOUT_MS";
/// A connection's idle timeout in seconds.
pub const IDLE_TIMEOUT_SECS: &str = "LLXPRT_CREDD_IDLE_TIMEOUT_SECS";
/// A connection's write timeout in milliseconds.
pub const WRITE_TIMEOUT_MS: &str = "LLXPRT_CREDD_WRITE_TIMEOUT_MS";
