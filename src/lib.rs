/*!
llxprt-credd: a host-side credential broker for llxprt-code sandboxes.

The library holds everything the two binaries use, so that Rust programs
can use the same pieces: the host store ([`store`]), the token rules
([`token`]), and (in later modules) the wire protocol, the server and the
blocking client.
*/

pub mod cli;
pub mod error;
pub mod log;
pub mod profile;
pub mod protocol;
pub mod random;
pub mod secret;
pub mod server;
pub mod store;
pub mod sys;
pub mod token;

pub use error::{Error, Result};
