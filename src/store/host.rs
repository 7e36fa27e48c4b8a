/*!
The host store wired together ([`HostStore`]): the keyring when the backend
may use it, the machine secret, the encrypted fallback files, the OAuth
token store and the API key storage; and the backend choice from the flag
and the environment ([`resolve_backend`]).
*/
#![forbid(unsafe_code)]

use std::sync::Arc;

use super::{
    Backend, KeyringAccess, KeyringTokenStore, MachineSecret, Paths, ProviderKeyStorage, SecureStore,
    key_storage, keyring, token_store,
};
use crate::error::{Error, Result};

/// Environment variable choosing the backend when no flag does.
pub const BACKEND_ENV: &str = crate::env::STORE;
/// llxprt-code's switch that turns the OS keyring off.
pub const DISABLE_KEYRING_ENV: &str = crate::env::DISABLE_OS_KEYRING;

/// Resolves the backend: the flag, else `LLXPRT_CREDD_STORE`, else `file`
/// when `LLXPRT_DISABLE_OS_KEYRING=1`, else `auto`.
pub fn resolve_backend(flag: Option<Backend>) -> Result<Backend> {
    if let Some(b) = flag {
        return Ok(b);
    }
    if let Some(v) = std::env::var(BACKEND_ENV).ok().filter(|v| !v.is_empty()) {
        return Backend::parse(&v).ok_or_else(|| {
            Error::Environment(format!("{BACKEND_ENV} must be auto, keyring or file, not {v:?}"))
        });
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
            return Err(Error::Environment(
                "--store keyring: this platform has no supported OS keyring".into(),
            ));
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
