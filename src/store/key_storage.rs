/*!
`ProviderKeyStorage`: API keys in the `llxprt-code-provider-keys` secure
store (fallback files in `{data}/provider-keys`), with llxprt-code's name
rule and value normalisation (trimmed, trailing CR/LF removed, never empty).
*/
#![forbid(unsafe_code)]

use super::KeyStore;
use super::error::{StoreError, StoreErrorKind};
use super::names::{check_key_name, is_valid_key_name};
use super::secure::SecureStore;
use super::token_store::hashed_id;
use crate::error::Result;
use crate::secret::SecretString;

/// Secure-store service of API keys.
pub const SERVICE: &str = "llxprt-code-provider-keys";

/// API key storage on the host's secure store.
pub struct ProviderKeyStorage {
    store: SecureStore,
}

impl ProviderKeyStorage {
    /// Wraps a secure store for `llxprt-code-provider-keys`.
    pub fn new(store: SecureStore) -> Self {
        ProviderKeyStorage { store }
    }

    /// The underlying secure store.
    pub fn secure_store(&self) -> &SecureStore {
        &self.store
    }
}

/// llxprt-code's normalisation of a key value: trim, then strip trailing
/// CR and LF. `None` when nothing is left.
pub fn normalise_key_value(raw: &str) -> Option<SecretString> {
    let value = raw.trim().trim_end_matches(['\r', '\n']);
    (!value.is_empty()).then(|| SecretString::from(value))
}

impl KeyStore for ProviderKeyStorage {
    fn save_key(&self, name: &str, value: &str) -> Result<()> {
        check_key_name(name)?;
        let value = normalise_key_value(value)
            .ok_or_else(|| StoreError::new(StoreErrorKind::InvalidName, "API key value cannot be empty"))?;
        self.store.set(name, &value)?;
        Ok(())
    }

    fn get_key(&self, name: &str) -> Result<Option<SecretString>> {
        check_key_name(name)?;
        match self.store.get(name) {
            Ok(v) => Ok(v),
            Err(e) if e.kind == StoreErrorKind::Corrupt => {
                crate::log_warn!(
                    "corrupt API key entry [{}] treated as absent: {}",
                    hashed_id(name),
                    e.message
                );
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn delete_key(&self, name: &str) -> Result<bool> {
        check_key_name(name)?;
        Ok(self.store.delete(name)?)
    }

    fn list_keys(&self) -> Result<Vec<String>> {
        Ok(self.store.list()?.into_iter().filter(|k| is_valid_key_name(k)).collect())
    }

    fn has_key(&self, name: &str) -> Result<bool> {
        check_key_name(name)?;
        Ok(self.store.has(name)?)
    }
}
