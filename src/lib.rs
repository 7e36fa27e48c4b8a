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

pub mod cli;
pub mod client;
mod commands;
mod daemon;
pub mod error;
pub mod github;
pub mod inject;
pub mod log;
pub mod oauth;
pub mod profile;
pub mod protocol;
pub mod random;
pub mod secret;
pub mod server;
pub mod store;
pub mod sys;
pub mod token;

pub use error::{Error, Result};
