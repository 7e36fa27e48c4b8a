/*!
Secret Service backend (gnome-keyring, KeePassXC, ...), on the
`secret-service` crate's blocking API.

Items are found by the attributes `{service, username}`, which matches both
what llxprt-code writes today (`@napi-rs/keyring` 1.3: exactly those two)
and what its older releases wrote (`keyring` v3: plus `target` and
`application`). New items carry the superset, so every reader finds them;
an existing item is updated in place so its attributes stay as they were.
Only the `default` collection is used, never the non-persistent `session`
one, and nothing here unlocks or creates a collection.
*/
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use secret_service::EncryptionType;
use secret_service::blocking::{Collection, SecretService};

use super::{Keyring, PROBE_ACCOUNT_PREFIX};
use crate::secret::SecretString;
use crate::store::error::{StoreError, StoreErrorKind, StoreResult};

/// The Secret Service client. The D-Bus connection is opened on first use
/// and dropped after a connection-level error, so a restarted keyring
/// daemon is found again.
pub struct SecretServiceKeyring {
    conn: Mutex<Option<Arc<SecretService<'static>>>>,
}

impl SecretServiceKeyring {
    /// A client that has not connected yet.
    pub fn new() -> Self {
        SecretServiceKeyring { conn: Mutex::new(None) }
    }

    /// The connection, and whether it was opened before this call.
    fn connection(&self) -> StoreResult<(Arc<SecretService<'static>>, bool)> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ss) = conn.as_ref() {
            return Ok((ss.clone(), true));
        }
        let ss = SecretService::connect(EncryptionType::Dh).map_err(|e| {
            StoreError::new(StoreErrorKind::Unavailable, format!("cannot reach the Secret Service: {e}"))
        })?;
        let ss = Arc::new(ss);
        *conn = Some(ss.clone());
        Ok((ss, false))
    }

    /// Runs `op` on the default collection, checking it is unlocked first.
    /// A connection opened before the keyring daemon restarted fails with
    /// a connection-level error (its session is gone): it is dropped and
    /// `op` is tried once more on a fresh one.
    fn with_collection<T>(
        &self,
        op: impl Fn(&Collection<'_>) -> Result<T, secret_service::Error>,
    ) -> StoreResult<T> {
        match self.try_with_collection(&op) {
            Err((e, true)) if e.kind == StoreErrorKind::Unavailable => {
                self.try_with_collection(&op).map_err(|(e, _)| e)
            }
            result => result.map_err(|(e, _)| e),
        }
    }

    /// One try of [`with_collection`](Self::with_collection); an error says
    /// whether the connection had been opened before.
    fn try_with_collection<T>(
        &self,
        op: &impl Fn(&Collection<'_>) -> Result<T, secret_service::Error>,
    ) -> Result<T, (StoreError, bool)> {
        let (ss, reused) = self.connection().map_err(|e| (e, false))?;
        let result = (|| {
            let service: &SecretService<'_> = &ss;
            let collection = service.get_default_collection()?;
            if collection.is_locked()? {
                return Err(secret_service::Error::Locked);
            }
            op(&collection)
        })();
        result.map_err(|e| {
            let err = classify(&e);
            if err.kind == StoreErrorKind::Unavailable {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            (err, reused)
        })
    }
}

impl Default for SecretServiceKeyring {
    fn default() -> Self {
        Self::new()
    }
}

fn classify(e: &secret_service::Error) -> StoreError {
    use secret_service::Error as E;
    let text = e.to_string();
    let (kind, message) = match e {
        E::Locked => (StoreErrorKind::Locked, "the default keyring collection is locked".to_owned()),
        E::Prompt => (
            StoreErrorKind::Denied,
            "the keyring asked for an interactive prompt, which the daemon never answers".to_owned(),
        ),
        E::NoResult => (
            StoreErrorKind::Unavailable,
            "the Secret Service has no default collection (create one with your desktop's keyring tool)"
                .to_owned(),
        ),
        _ if text.contains("IsLocked") => (StoreErrorKind::Locked, "the keyring item is locked".to_owned()),
        _ if text.contains("AccessDenied") => {
            (StoreErrorKind::Denied, format!("keyring access denied: {text}"))
        }
        _ => (StoreErrorKind::Unavailable, format!("Secret Service error: {text}")),
    };
    StoreError::new(kind, message)
}

fn attributes<'a>(service: &'a str, account: &'a str) -> HashMap<&'a str, &'a str> {
    HashMap::from([("service", service), ("username", account)])
}

const CONTENT_TYPE: &str = "text/plain";

impl Keyring for SecretServiceKeyring {
    fn describe(&self) -> String {
        "Secret Service (default collection)".to_owned()
    }

    fn check(&self) -> StoreResult<()> {
        self.with_collection(|_| Ok(()))
    }

    fn get(&self, service: &str, account: &str) -> StoreResult<Option<SecretString>> {
        let bytes = self.with_collection(|c| {
            let items = c.search_items(attributes(service, account))?;
            match items.first() {
                Some(item) => item.get_secret().map(Some),
                None => Ok(None),
            }
        })?;
        match bytes {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(|s| Some(SecretString::new(s)))
                .map_err(|_| StoreError::new(StoreErrorKind::Corrupt, "keyring item is not UTF-8")),
        }
    }

    fn set(&self, service: &str, account: &str, value: &SecretString) -> StoreResult<()> {
        self.with_collection(|c| {
            let items = c.search_items(attributes(service, account))?;
            if items.is_empty() {
                let mut attrs = attributes(service, account);
                attrs.insert("target", "default");
                attrs.insert("application", "rust-keyring");
                let label = format!("keyring:{account}@{service}");
                c.create_item(&label, attrs, value.expose().as_bytes(), true, CONTENT_TYPE)?;
            } else {
                for item in &items {
                    item.set_secret(value.expose().as_bytes(), CONTENT_TYPE)?;
                }
            }
            Ok(())
        })
    }

    fn delete(&self, service: &str, account: &str) -> StoreResult<bool> {
        self.with_collection(|c| {
            let items = c.search_items(attributes(service, account))?;
            for item in &items {
                item.delete()?;
            }
            Ok(!items.is_empty())
        })
    }

    fn list(&self, service: &str) -> StoreResult<Vec<String>> {
        self.with_collection(|c| {
            let items = c.search_items(HashMap::from([("service", service)]))?;
            let mut accounts = Vec::with_capacity(items.len());
            for item in &items {
                if let Some(account) = item.get_attributes()?.remove("username") {
                    if !account.starts_with(PROBE_ACCOUNT_PREFIX) {
                        accounts.push(account);
                    }
                }
            }
            Ok(accounts)
        })
    }
}
