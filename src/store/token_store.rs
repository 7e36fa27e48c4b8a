/*!
`KeyringTokenStore`: OAuth tokens in the `llxprt-code-oauth` secure store,
under the account `{provider}:{bucket}`, exactly where llxprt-code keeps
them. Names are checked before any storage call. A stored entry that cannot
be decoded, parsed or validated reads as absent, with a warning naming only
a hash of its account; it is never deleted.
*/
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use super::error::StoreErrorKind;
use super::lock::{LockFamily, OwnerLock, auth_lock_path, refresh_lock_path};
use super::names::{DEFAULT_BUCKET, check_bucket, check_provider};
use super::secure::SecureStore;
use super::{BucketStats, RefreshLock, TokenStore};
use crate::error::Result;
use crate::secret::SecretString;
use crate::token::OAuthToken;

/// Secure-store service of OAuth tokens.
pub const SERVICE: &str = "llxprt-code-oauth";

/// A short, stable, non-reversible name for an account in log lines.
pub fn hashed_id(account: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::random::to_hex(&Sha256::digest(account.as_bytes())[..6])
}

/// Token store on the host's secure store.
pub struct KeyringTokenStore {
    store: SecureStore,
    lock_dir: PathBuf,
}

impl KeyringTokenStore {
    /// Wraps a secure store for `llxprt-code-oauth` and the OAuth lock dir.
    pub fn new(store: SecureStore, lock_dir: PathBuf) -> Self {
        KeyringTokenStore { store, lock_dir }
    }

    /// The underlying secure store.
    pub fn secure_store(&self) -> &SecureStore {
        &self.store
    }

    /// Acquires the auth (login) lock of `provider:bucket`.
    pub fn acquire_auth_lock(
        &self,
        provider: &str,
        bucket: Option<&str>,
        wait: Duration,
    ) -> Result<RefreshLock> {
        self.oauth_lock(auth_lock_path, provider, bucket, wait)
    }

    fn oauth_lock(
        &self,
        path_of: fn(&std::path::Path, &str, &str) -> PathBuf,
        provider: &str,
        bucket: Option<&str>,
        wait: Duration,
    ) -> Result<RefreshLock> {
        let (provider, bucket) = names(provider, bucket)?;
        let path = path_of(&self.lock_dir, provider, bucket);
        Ok(RefreshLock::held(OwnerLock::acquire(&path, LockFamily::OAuth, wait)?))
    }
}

fn names<'a>(provider: &'a str, bucket: Option<&'a str>) -> Result<(&'a str, &'a str)> {
    let bucket = bucket.unwrap_or(DEFAULT_BUCKET);
    check_provider(provider)?;
    check_bucket(bucket)?;
    Ok((provider, bucket))
}

fn account(provider: &str, bucket: Option<&str>) -> Result<String> {
    let (provider, bucket) = names(provider, bucket)?;
    Ok(format!("{provider}:{bucket}"))
}

impl TokenStore for KeyringTokenStore {
    fn save_token(&self, provider: &str, bucket: Option<&str>, token: &OAuthToken) -> Result<()> {
        let key = account(provider, bucket)?;
        self.store.set(&key, &SecretString::new(token.to_json()))?;
        Ok(())
    }

    fn get_token(&self, provider: &str, bucket: Option<&str>) -> Result<Option<OAuthToken>> {
        self.read(provider, bucket, false)
    }

    fn get_token_for_update(&self, provider: &str, bucket: Option<&str>) -> Result<Option<OAuthToken>> {
        self.read(provider, bucket, true)
    }

    fn remove_token(&self, provider: &str, bucket: Option<&str>) -> Result<()> {
        let key = account(provider, bucket)?;
        self.store.delete(&key)?;
        Ok(())
    }

    fn list_providers(&self) -> Result<Vec<String>> {
        let mut providers: Vec<String> = self
            .store
            .list()?
            .into_iter()
            .filter_map(|k| k.split_once(':').map(|(p, _)| p.to_owned()))
            .collect();
        providers.sort();
        providers.dedup();
        Ok(providers)
    }

    fn list_buckets(&self, provider: &str) -> Result<Vec<String>> {
        check_provider(provider)?;
        let prefix = format!("{provider}:");
        Ok(self
            .store
            .list()?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
            .collect())
    }

    fn get_bucket_stats(&self, provider: &str, bucket: Option<&str>) -> Result<Option<BucketStats>> {
        let resolved = bucket.unwrap_or(DEFAULT_BUCKET).to_owned();
        Ok(self.get_token(provider, bucket)?.map(|_| BucketStats {
            bucket: resolved,
            request_count: 0,
            percentage: 0.0,
        }))
    }

    fn acquire_refresh_lock(
        &self,
        provider: &str,
        bucket: Option<&str>,
        wait: Duration,
    ) -> Result<RefreshLock> {
        self.oauth_lock(refresh_lock_path, provider, bucket, wait)
    }
}

impl KeyringTokenStore {
    /// Reads a token; `checked`: see [`SecureStore::get_checked`].
    fn read(&self, provider: &str, bucket: Option<&str>, checked: bool) -> Result<Option<OAuthToken>> {
        let key = account(provider, bucket)?;
        let raw = match if checked { self.store.get_checked(&key) } else { self.store.get(&key) } {
            Ok(raw) => raw,
            Err(e) if e.kind == StoreErrorKind::Corrupt => {
                crate::log_warn!(
                    "corrupt token entry [{}] treated as absent: {}",
                    hashed_id(&key),
                    e.message
                );
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let Some(raw) = raw else { return Ok(None) };
        match OAuthToken::from_json(raw.expose()) {
            Ok(token) => Ok(Some(token)),
            Err(e) => {
                crate::log_warn!("unreadable token entry [{}] treated as absent: {e}", hashed_id(&key));
                Ok(None)
            }
        }
    }
}
