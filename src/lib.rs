/*!
llxprt-credd: a host-side credential broker for llxprt-code sandboxes.

The library holds everything the two binaries use, so that Rust programs
can use the same pieces: the host store ([`store`]), the token rules
([`token`]), the wire protocol ([`protocol`]), the server ([`server`]), and
the blocking client ([`client`]: `ProxySocketClient`, `ProxyTokenStore`,
`ProxyProviderKeyStorage`, `create_token_store`) that a program in the
sandbox uses in place of the host store, and host-side OAuth refresh
([`oauth`]).
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
/// The global allocator both binaries install: every freed block is wiped.
pub use sys::wipe_alloc::WipeOnFree;
