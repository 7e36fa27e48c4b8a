/*!
The host store: where the daemon's credentials live, shared with
llxprt-code on the same host.

[`TokenStore`] and [`KeyStore`] are the two interfaces every consumer uses;
the host implementations are [`KeyringTokenStore`] and
[`ProviderKeyStorage`] over a [`SecureStore`] each (keyring first, encrypted
file fallback); the client library implements the same traits over the
socket. [`HostStore::open`] wires everything from the environment.
*/
#![forbid(unsafe_code)]

#[cfg(feature = "host")]
mod cache;
#[cfg(feature = "host")]
pub(crate) mod envelope;
pub(crate) mod error;
#[cfg(feature = "host")]
mod host;
#[cfg(feature = "host")]
pub(crate) mod key_storage;
#[cfg(feature = "host")]
pub(crate) mod keyring;
pub(crate) mod lock;
#[cfg(feature = "host")]
pub(crate) mod machine_secret;
pub mod names;
pub(crate) mod paths;
#[cfg(feature = "host")]
pub(crate) mod secure;
#[cfg(feature = "host")]
pub(crate) mod token_store;
#[cfg(feature = "host")]
pub(crate) mod update;

use std::sync::Arc;
use std::time::Duration;

pub use error::{StoreError, StoreErrorKind, StoreResult};
#[cfg(feature = "host")]
pub use host::{BACKEND_ENV, DISABLE_KEYRING_ENV, HostStore, resolve_backend};
#[cfg(feature = "host")]
pub use key_storage::ProviderKeyStorage;
#[cfg(feature = "host")]
pub use keyring::{KeyringAccess, KeyringStatus};
pub use lock::OwnerLock;
#[cfg(feature = "host")]
pub use machine_secret::MachineSecret;
pub use paths::Paths;
#[cfg(feature = "host")]
pub use secure::{Backend, SecureStore};
#[cfg(feature = "host")]
pub use token_store::KeyringTokenStore;
#[cfg(feature = "host")]
pub(crate) use update::{Change, LockWait, Stored, UpdateError, update_token};

use crate::error::{Error, Result};
use crate::secret::SecretString;
use crate::token::OAuthToken;

/// Usage figures of a bucket. This store keeps no usage data, so the
/// counters are zero; the record's existence says a token exists.
#[derive(Clone, Debug, PartialEq)]
pub struct BucketStats {
    /// The bucket name.
    pub bucket: String,
    /// Requests made with this bucket (always 0 here).
    pub request_count: u64,
    /// Share of requests (always 0 here).
    pub percentage: f64,
}

/// A held refresh or auth lock, or a no-op stand-in (the socket client's
/// stores lock nothing: the daemon locks on the host). Dropping releases.
#[derive(Debug)]
pub struct RefreshLock(Option<OwnerLock>);

impl RefreshLock {
    /// A lock that is really held.
    pub fn held(lock: OwnerLock) -> Self {
        RefreshLock(Some(lock))
    }

    /// A stand-in that holds nothing.
    pub fn none() -> Self {
        RefreshLock(None)
    }

    /// Releases the lock, reporting I/O errors.
    pub fn release(self) -> Result<()> {
        match self.0 {
            Some(lock) => lock.release().map_err(|e| Error::io("cannot release lock", e)),
            None => Ok(()),
        }
    }
}

/// OAuth token storage: the same interface on the host and in the sandbox.
pub trait TokenStore: Send + Sync {
    /// Stores `token` for `provider` and `bucket` (absent = `default`).
    fn save_token(&self, provider: &str, bucket: Option<&str>, token: &OAuthToken) -> Result<()>;
    /// Reads a token; `None` when absent.
    fn get_token(&self, provider: &str, bucket: Option<&str>) -> Result<Option<OAuthToken>>;
    /// Reads a token that a write will be based on (under the refresh
    /// lock): never a cached value that has not been checked against the
    /// stored one. By default [`get_token`](Self::get_token).
    fn get_token_for_update(&self, provider: &str, bucket: Option<&str>) -> Result<Option<OAuthToken>> {
        self.get_token(provider, bucket)
    }
    /// Removes a token (absent is fine).
    fn remove_token(&self, provider: &str, bucket: Option<&str>) -> Result<()>;
    /// Providers with at least one token, sorted.
    fn list_providers(&self) -> Result<Vec<String>>;
    /// Buckets of `provider`, sorted.
    fn list_buckets(&self, provider: &str) -> Result<Vec<String>>;
    /// Stats of a bucket; `None` when it has no token.
    fn get_bucket_stats(&self, provider: &str, bucket: Option<&str>) -> Result<Option<BucketStats>>;
    /// Takes the refresh lock of `provider:bucket`, waiting up to `wait`.
    fn acquire_refresh_lock(
        &self,
        provider: &str,
        bucket: Option<&str>,
        wait: Duration,
    ) -> Result<RefreshLock>;
    /// Releases a lock from [`acquire_refresh_lock`](Self::acquire_refresh_lock).
    fn release_refresh_lock(&self, lock: RefreshLock) -> Result<()> {
        lock.release()
    }
}

/// API key storage: the same interface on the host and in the sandbox.
pub trait KeyStore: Send + Sync {
    /// Stores a key (trimmed; empty values are refused).
    fn save_key(&self, name: &str, value: &str) -> Result<()>;
    /// Reads a key; `None` when absent.
    fn get_key(&self, name: &str) -> Result<Option<SecretString>>;
    /// Deletes a key; whether it existed.
    fn delete_key(&self, name: &str) -> Result<bool>;
    /// Key names, sorted.
    fn list_keys(&self) -> Result<Vec<String>>;
    /// Whether a key exists.
    fn has_key(&self, name: &str) -> Result<bool>;
}

/// A shared token store is a token store (so `Arc<KeyringTokenStore>` from
/// [`HostStore`] can be boxed as a `dyn TokenStore`).
impl<T: TokenStore + ?Sized> TokenStore for Arc<T> {
    fn save_token(&self, provider: &str, bucket: Option<&str>, token: &OAuthToken) -> Result<()> {
        (**self).save_token(provider, bucket, token)
    }
    fn get_token(&self, provider: &str, bucket: Option<&str>) -> Result<Option<OAuthToken>> {
        (**self).get_token(provider, bucket)
    }
    fn get_token_for_update(&self, provider: &str, bucket: Option<&str>) -> Result<Option<OAuthToken>> {
        (**self).get_token_for_update(provider, bucket)
    }
    fn remove_token(&self, provider: &str, bucket: Option<&str>) -> Result<()> {
        (**self).remove_token(provider, bucket)
    }
    fn list_providers(&self) -> Result<Vec<String>> {
        (**self).list_providers()
    }
    fn list_buckets(&self, provider: &str) -> Result<Vec<String>> {
        (**self).list_buckets(provider)
    }
    fn get_bucket_stats(&self, provider: &str, bucket: Option<&str>) -> Result<Option<BucketStats>> {
        (**self).get_bucket_stats(provider, bucket)
    }
    fn acquire_refresh_lock(
        &self,
        provider: &str,
        bucket: Option<&str>,
        wait: Duration,
    ) -> Result<RefreshLock> {
        (**self).acquire_refresh_lock(provider, bucket, wait)
    }
    fn release_refresh_lock(&self, lock: RefreshLock) -> Result<()> {
        (**self).release_refresh_lock(lock)
    }
}

/// A shared key store is a key store.
impl<T: KeyStore + ?Sized> KeyStore for Arc<T> {
    fn save_key(&self, name: &str, value: &str) -> Result<()> {
        (**self).save_key(name, value)
    }
    fn get_key(&self, name: &str) -> Result<Option<SecretString>> {
        (**self).get_key(name)
    }
    fn delete_key(&self, name: &str) -> Result<bool> {
        (**self).delete_key(name)
    }
    fn list_keys(&self) -> Result<Vec<String>> {
        (**self).list_keys()
    }
    fn has_key(&self, name: &str) -> Result<bool> {
        (**self).has_key(name)
    }
}
