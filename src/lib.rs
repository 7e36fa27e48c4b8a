/*!
llxprt-credd: a host-side credential broker for llxprt-code sandboxes.

The public library is what a Rust program needs on either side of the
socket: the blocking client ([`client`]: `ProxySocketClient`,
`ProxyTokenStore`, `ProxyProviderKeyStorage`, `create_token_store`) that a
program in the sandbox uses in place of the host store, the wire protocol
([`protocol`]), the token type and its rules ([`token`]), the store traits
and, with the `host` feature (on by default), the host store factory
([`store`]), the errors ([`error`]), secrets ([`secret`]) and the
environment names ([`env`](mod@env)). Everything else (the daemon, the server,
OAuth, inject mode, the GitHub broker) is the two binaries' and private;
without the `host` feature the library is the sandbox side only and links
none of the HTTP, TLS, keyring or cipher crates.
*/

/// The two binaries' command lines (each `main`) and their flag tables:
/// public for the binaries and the documentation tests, not an API.
#[cfg(feature = "host")]
#[doc(hidden)]
pub mod cli;
pub mod client;
#[cfg(feature = "host")]
mod commands;
#[cfg(feature = "host")]
mod daemon;
pub mod env;
pub mod error;
#[cfg(feature = "host")]
pub(crate) mod github;
#[cfg(feature = "host")]
pub(crate) mod inject;
pub(crate) mod log;
#[cfg(feature = "host")]
pub(crate) mod oauth;
#[cfg(feature = "host")]
pub(crate) mod profile;
pub mod protocol;
pub(crate) mod random;
pub mod secret;
#[cfg(feature = "host")]
pub(crate) mod server;
pub mod store;
pub(crate) mod sys;
pub mod token;

pub use error::{Error, Result};
#[cfg_attr(not(feature = "host"), allow(unused_imports))]
pub(crate) use log::{log_debug, log_error, log_info, log_warn};
/// The global allocator both binaries install: every freed block is wiped.
pub use sys::wipe_alloc::WipeOnFree;
