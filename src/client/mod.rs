/*!
The blocking client library: what a program inside the sandbox uses to
reach the host's `llxprt-credd`.

- [`ProxySocketClient`] ([`socket`]) speaks the wire protocol over one
  lazily opened Unix socket connection and never reconnects after a
  failure.
- [`ProxyTokenStore`] and [`ProxyProviderKeyStorage`] ([`stores`])
  implement the same [`TokenStore`] and [`KeyStore`] traits as the host
  store, so code written against the traits runs unchanged in the sandbox.
- [`ProxyOAuthAdapter`] ([`oauth`]) runs an OAuth login on the host
  through the daemon: the sandbox sees the URL to open and the user code,
  never a verifier, state or device code.
- [`capability`] finds the capability token the daemon may require.
- [`create_token_store`] and [`create_key_storage`] pick the proxy when
  `LLXPRT_CREDENTIAL_SOCKET` is set and the host store otherwise, the way
  llxprt-code's credential store factory does.
*/
#![forbid(unsafe_code)]

pub mod capability;
mod mux;
pub mod oauth;
pub mod socket;
pub mod stores;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

pub use oauth::{LoginDriver, LoginPoll, LoginStart, ProxyOAuthAdapter};
pub use socket::{CLIENT_IDLE_CLOSE, CONNECTION_LOST, ProxySocketClient, REQUEST_TIMEOUT, Response};
pub use stores::{ProxyProviderKeyStorage, ProxyTokenStore, SANDBOX_KEY_MANAGEMENT};

use crate::error::Result;
use crate::store::{KeyStore, TokenStore};

/// Environment variable naming the daemon's socket; a non-empty value
/// switches a program into proxy (sandbox) mode.
pub const SOCKET_ENV: &str = crate::env::CREDENTIAL_SOCKET;

/// The socket named by `lookup(SOCKET_ENV)`, when it is set and non-empty.
pub fn socket_from(lookup: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    lookup(SOCKET_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// The process environment as a lookup function.
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// The token store for this process: the proxy when
/// `LLXPRT_CREDENTIAL_SOCKET` is set, the host store otherwise.
pub fn create_token_store() -> Result<Box<dyn TokenStore>> {
    create_token_store_from(&process_env)
}

/// [`create_token_store`] with the variables read through `lookup`
/// instead of the process environment (which tests cannot change safely
/// while other threads run). `lookup` decides proxy or host; the host
/// store itself reads its paths and backend from the process environment.
pub fn create_token_store_from(lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Box<dyn TokenStore>> {
    match ProxySocketClient::from_lookup(lookup)? {
        Some(client) => Ok(Box::new(ProxyTokenStore::new(Arc::new(client)))),
        None => host_tokens(),
    }
}

/// The API key storage for this process: the proxy when
/// `LLXPRT_CREDENTIAL_SOCKET` is set, the host store otherwise.
pub fn create_key_storage() -> Result<Box<dyn KeyStore>> {
    create_key_storage_from(&process_env)
}

/// [`create_key_storage`] with the variables read through `lookup`.
pub fn create_key_storage_from(lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Box<dyn KeyStore>> {
    match ProxySocketClient::from_lookup(lookup)? {
        Some(client) => Ok(Box::new(ProxyProviderKeyStorage::new(Arc::new(client)))),
        None => host_keys(),
    }
}

/// The host store's tokens, from the environment.
#[cfg(feature = "host")]
fn host_tokens() -> Result<Box<dyn TokenStore>> {
    Ok(Box::new(crate::store::HostStore::open(crate::store::resolve_backend(None)?)?.tokens))
}

/// The host store's keys, from the environment.
#[cfg(feature = "host")]
fn host_keys() -> Result<Box<dyn KeyStore>> {
    Ok(Box::new(crate::store::HostStore::open(crate::store::resolve_backend(None)?)?.keys))
}

/// Without the `host` feature there is no host store to fall back to.
#[cfg(not(feature = "host"))]
fn no_host_store<T: ?Sized>() -> Result<Box<T>> {
    Err(crate::error::Error::Connection(format!(
        "{SOCKET_ENV} is not set, and this program was built without the host store (the `host` feature)"
    )))
}

#[cfg(not(feature = "host"))]
fn host_tokens() -> Result<Box<dyn TokenStore>> {
    no_host_store()
}

#[cfg(not(feature = "host"))]
fn host_keys() -> Result<Box<dyn KeyStore>> {
    no_host_store()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_non_empty_socket_variable_selects_the_proxy() {
        assert_eq!(socket_from(&|_| None), None);
        assert_eq!(socket_from(&|_| Some(OsString::new())), None);
        let named = |n: &str| (n == SOCKET_ENV).then(|| OsString::from("/run/x.sock"));
        assert_eq!(socket_from(&named), Some(PathBuf::from("/run/x.sock")));
        let client = ProxySocketClient::from_lookup(&named).unwrap().expect("proxy mode");
        assert_eq!(client.socket_path(), std::path::Path::new("/run/x.sock"));
        assert!(ProxySocketClient::from_lookup(&|_| None).unwrap().is_none());
    }
}
