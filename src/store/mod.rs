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

mod cache;
pub mod envelope;
pub mod error;
pub mod key_storage;
pub mod keyring;
pub mod lock;
pub mod machine_secret;
pub mod names;
pub mod paths;
pub mod secure;
pub mod token_store;
pub mod update;

use std::sync::Arc;
use std::time::Duration;

pub use error::{StoreError, StoreErrorKind, StoreResult};
pub use key_storage::ProviderKeyStorage;
pub use keyring::{KeyringAccess, KeyringStatus};
pub use lock::OwnerLock;
pub use machine_secret::MachineSecret;
pub use paths::Paths;
pub use secure::{Backend, SecureStore};
pub use token_store::KeyringTokenStore;
pub use update::{Change, LockWait, Stored, UpdateError, update_token};

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

/// Environment variable choosing the backend when no flag does.
pub const BACKEND_ENV: &str = "LLXPRT_CREDD_STORE";
/// llxprt-code's switch that turns the OS keyring off.
pub const DISABLE_KEYRING_ENV: &str = "LLXPRT_DISABLE_OS_KEYRING";

/// Resolves the backend: the flag, else `LLXPRT_CREDD_STORE`, else `file`
/// when `LLXPRT_DISABLE_OS_KEYRING=1`, else `auto`.
pub fn resolve_backend(flag: Option<Backend>) -> Result<Backend> {
    if let Some(b) = flag {
        return Ok(b);
    }
    if let Some(v) = std::env::var(BACKEND_ENV).ok().filter(|v| !v.is_empty()) {
        return Backend::parse(&v)
            .ok_or_else(|| Error::Usage(format!("{BACKEND_ENV} must be auto, keyring or file, not {v:?}")));
    }
    if std::env::var(DISABLE_KEYRING_ENV).is_ok_and(|v| v == "1" || v == "true") {
        return Ok(Backend::File);
    }
    Ok(Backend::Auto)
}

/// Everything on the host side of the store, wired together.
pub struct HostStore {
    /// Resolved directories.
    pub paths: Paths,
    /// The backend in force.
    pub backend: Backend,
    /// The keyring, when the backend may use it and the platform has one.
    pub keyring: Option<Arc<KeyringAccess>>,
    /// The machine secret finder.
    pub machine_secret: Arc<MachineSecret>,
    /// OAuth tokens.
    pub tokens: Arc<KeyringTokenStore>,
    /// API keys.
    pub keys: Arc<ProviderKeyStorage>,
}

impl HostStore {
    /// Opens the host store for `backend` with paths from the environment.
    pub fn open(backend: Backend) -> Result<HostStore> {
        Self::open_at(Paths::from_env()?, backend)
    }

    /// Opens the host store for `backend` at `paths`.
    pub fn open_at(paths: Paths, backend: Backend) -> Result<HostStore> {
        let keyring = match backend {
            Backend::File => None,
            _ => {
                keyring::platform_keyring().map(|k| KeyringAccess::with_fallback(k, backend == Backend::Auto))
            }
        };
        if backend == Backend::Keyring && keyring.is_none() {
            return Err(Error::Usage("--store keyring: this platform has no supported OS keyring".into()));
        }
        let lock_dir = paths.credential_lock_dir();
        let machine_secret =
            Arc::new(MachineSecret::new(keyring.clone(), paths.machine_secret_file(), lock_dir.clone()));
        let secure = |service: &'static str, dir| {
            SecureStore::new(service, dir, backend, keyring.clone(), machine_secret.clone(), lock_dir.clone())
        };
        let tokens = Arc::new(KeyringTokenStore::new(
            secure(token_store::SERVICE, paths.secure_store_dir(token_store::SERVICE)),
            paths.oauth_lock_dir(),
        ));
        let keys = Arc::new(ProviderKeyStorage::new(secure(key_storage::SERVICE, paths.provider_keys_dir())));
        Ok(HostStore { paths, backend, keyring, machine_secret, tokens, keys })
    }
}
