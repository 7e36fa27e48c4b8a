/*!
`SecureStore`: one llxprt-code secure-store service (`llxprt-code-oauth`,
`llxprt-code-provider-keys`) with llxprt-code's semantics.

- get: the keyring wins; when it has nothing, or cannot be reached, the
  encrypted fallback file (current name, then the legacy name) answers.
- set (under the credential write lock): write the keyring and read it
  back; verified → remove both fallback files; a different value read back
  → `CONFLICT`; otherwise write the fallback file.
- delete (under the same lock): the keyring item and both files.
- list: the union of keyring accounts and fallback file names.

The [`Backend`] choice forces one side: `Keyring` never falls back (its
errors are returned), `File` never touches the keyring (not even for the
machine secret).

Reads are cached ([`super::cache`]). A cached value is reused while
neither fallback file changed (a watch on the directory says so, or, without
one, both files keep the identity they had when it was read) and, when the
keyring was consulted, for at most [`KEYRING_READ_TTL`]. So a write by
another process to a fallback file is seen on the next read, and one to the
keyring within that TTL. Writes and deletes through this store update the
cache at once.
*/
#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::cache::ReadCache;
use super::envelope::{self, KeyInputs, Version};
use super::error::{StoreError, StoreErrorKind, StoreResult};
use super::keyring::KeyringAccess;
use super::lock::{CREDENTIAL_LOCK_WAIT, LockFamily, OwnerLock, credential_lock_path};
use super::machine_secret::MachineSecret;
use crate::secret::SecretString;

/// How long a value read from the keyring is trusted without asking again.
pub const KEYRING_READ_TTL: Duration = Duration::from_secs(5);

/// Which storage a store may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Keyring first, encrypted file when the keyring is unavailable.
    Auto,
    /// The keyring only; its errors are returned.
    Keyring,
    /// The encrypted file only; the keyring is never touched.
    File,
}

impl Backend {
    /// Parses `auto|keyring|file`.
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "auto" => Some(Backend::Auto),
            "keyring" => Some(Backend::Keyring),
            "file" => Some(Backend::File),
            _ => None,
        }
    }

    /// The flag spelling.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Keyring => "keyring",
            Backend::File => "file",
        }
    }
}

/// Where a value was found, for `doctor` and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The OS keyring.
    Keyring,
    /// The encrypted fallback file.
    File,
}

/// One secure-store service.
pub struct SecureStore {
    service: &'static str,
    dir: PathBuf,
    backend: Backend,
    keyring: Option<Arc<KeyringAccess>>,
    secret: Arc<MachineSecret>,
    lock_dir: PathBuf,
    cache: ReadCache,
    /// Held while a cache miss is filled: one cold read at a time, and
    /// whoever waited for it finds the value cached. Without it, a
    /// rewritten file (another process's write, or ours before its cache
    /// update) sent every connection thread into its own scrypt decrypt
    /// at once: 16 MiB each, 64 threads, over a gigabyte in the soak test.
    filling: Mutex<()>,
}

impl SecureStore {
    /// A store for `service` with fallback files in `dir`.
    pub fn new(
        service: &'static str,
        dir: PathBuf,
        backend: Backend,
        keyring: Option<Arc<KeyringAccess>>,
        secret: Arc<MachineSecret>,
        lock_dir: PathBuf,
    ) -> Self {
        let keyring = if backend == Backend::File { None } else { keyring };
        let cache = ReadCache::new(dir.clone(), keyring.is_some().then_some(KEYRING_READ_TTL));
        SecureStore { service, dir, backend, keyring, secret, lock_dir, cache, filling: Mutex::new(()) }
    }

    /// The service name.
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The fallback directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The backend choice.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn paths(&self, key: &str) -> [PathBuf; 2] {
        [self.dir.join(envelope::file_name(key)), self.dir.join(envelope::legacy_file_name(key))]
    }

    fn keyring_missing(&self) -> StoreError {
        StoreError::new(StoreErrorKind::Unavailable, "this platform has no supported OS keyring")
    }

    /// Runs a keyring call. `Ok(None)` means "no keyring in play: use the
    /// file"; errors are returned only when the caller must not fall back.
    fn keyring_call<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn super::keyring::Keyring) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<Option<T>> {
        let Some(keyring) = &self.keyring else {
            return match self.backend {
                Backend::Keyring => Err(self.keyring_missing()),
                _ => Ok(None),
            };
        };
        match keyring.call(op) {
            Ok(v) => Ok(Some(v)),
            Err(e) if self.backend == Backend::Keyring => Err(e),
            Err(e) if e.kind == StoreErrorKind::Corrupt => Err(e),
            Err(e) => {
                crate::log_debug!(
                    "{}: keyring unavailable, using the fallback file: {}",
                    self.service,
                    e.message
                );
                Ok(None)
            }
        }
    }

    /// Reads `key`: `None` when absent everywhere. A fallback file that
    /// cannot be decoded is `Corrupt` (and stays where it is).
    pub fn get(&self, key: &str) -> StoreResult<Option<SecretString>> {
        self.get_with_source(key).map(|v| v.map(|(value, _)| value))
    }

    /// Like [`get`](Self::get), also saying where the value came from.
    pub fn get_with_source(&self, key: &str) -> StoreResult<Option<(SecretString, Source)>> {
        self.read(key, false)
    }

    /// Like [`get`](Self::get) for a value a write will be based on: a
    /// cached value is used only after the files' identity says it is
    /// current, whatever the directory watch says.
    pub fn get_checked(&self, key: &str) -> StoreResult<Option<SecretString>> {
        self.read(key, true).map(|v| v.map(|(value, _)| value))
    }

    fn read(&self, key: &str, checked: bool) -> StoreResult<Option<(SecretString, Source)>> {
        envelope::check_store_key(key)?;
        if let Some(hit) = self.cache.get(key, checked, || self.paths(key)) {
            return Ok(hit);
        }
        let _filling = self.filling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(hit) = self.cache.get(key, checked, || self.paths(key)) {
            return Ok(hit);
        }
        let paths = self.paths(key);
        let ticket = self.cache.begin_fill(&paths);
        let (service, account) = (self.service, key.to_owned());
        let from_keyring = self.keyring_call(move |k| k.get(service, &account))?;
        let found = match from_keyring.flatten() {
            Some(value) => Some((value, Source::Keyring)),
            None => self.read_file(&paths)?.map(|v| (v, Source::File)),
        };
        self.cache.finish_fill(key, &paths, ticket, found.clone());
        Ok(found)
    }

    fn key_inputs<'a>(&self, secret: Option<&'a [u8; 32]>) -> KeyInputs<'a> {
        KeyInputs { service: self.service, machine_id: envelope::machine_id(), machine_secret: secret }
    }

    fn read_file(&self, paths: &[PathBuf; 2]) -> StoreResult<Option<SecretString>> {
        for path in paths {
            let text = match fs::read(path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
                    return Err(StoreError::new(StoreErrorKind::Corrupt, "fallback entry is a directory"));
                }
                Err(e) => return Err(StoreError::io("cannot read fallback file", &e)),
            };
            let secret = match envelope::version_of(&text) {
                Some(Version::V2) => self.secret.get(),
                _ => None,
            };
            let plain = envelope::open(&text, &self.key_inputs(secret.as_ref().map(|(s, _)| &**s)))?;
            let value = String::from_utf8(plain.to_vec())
                .map_err(|_| StoreError::new(StoreErrorKind::Corrupt, "fallback value is not UTF-8"))?;
            return Ok(Some(SecretString::new(value)));
        }
        Ok(None)
    }

    fn lock(&self, key: &str) -> StoreResult<OwnerLock> {
        let path = credential_lock_path(&self.lock_dir, self.service, key)?;
        OwnerLock::acquire(&path, LockFamily::Credential, CREDENTIAL_LOCK_WAIT)
    }

    /// Stores `value` under `key`.
    pub fn set(&self, key: &str, value: &SecretString) -> StoreResult<Source> {
        envelope::check_store_key(key)?;
        let _lock = self.lock(key)?;
        let paths = self.paths(key);
        let (service, account, written) = (self.service, key.to_owned(), value.clone());
        let readback = self.keyring_call(move |k| {
            k.set(service, &account, &written)?;
            k.get(service, &account)
        })?;
        let source = match readback {
            Some(Some(read)) if &read == value => {
                for path in &paths {
                    remove_if_exists(path)?;
                }
                Source::Keyring
            }
            Some(Some(_)) => {
                return Err(StoreError::new(
                    StoreErrorKind::Conflict,
                    "the keyring returned a different value after the write",
                ));
            }
            Some(None) if self.backend == Backend::Keyring => {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "the keyring did not keep the value",
                ));
            }
            _ => {
                self.write_file(&paths[0], value)?;
                Source::File
            }
        };
        self.cache.put(key, &paths, Some((value.clone(), source)));
        Ok(source)
    }

    fn any_v2_file(&self) -> bool {
        let Ok(entries) = fs::read_dir(&self.dir) else { return false };
        entries.flatten().any(|e| {
            e.file_name().to_string_lossy().ends_with(".enc")
                && fs::read(e.path()).ok().and_then(|t| envelope::version_of(&t)) == Some(Version::V2)
        })
    }

    fn write_file(&self, path: &Path, value: &SecretString) -> StoreResult<()> {
        super::paths::create_private_dir(&self.dir)?;
        let existing = fs::read(path).ok().and_then(|t| envelope::version_of(&t));
        let secret = self.secret.get_or_create(|| self.any_v2_file())?;
        let version = match (&secret, existing) {
            (Some(_), _) => Version::V2,
            (None, Some(Version::V2)) => {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "refusing to overwrite a v2 fallback file with v1 (the machine secret is unusable)",
                ));
            }
            (None, _) => Version::V1,
        };
        let text = envelope::seal(version, value.expose().as_bytes(), &self.key_inputs(secret.as_deref()))?;
        atomic_write(path, text.as_bytes())
            .map_err(|e| StoreError::io(format!("cannot write {}", path.display()), &e))
    }

    /// Deletes `key` everywhere; whether anything was deleted.
    pub fn delete(&self, key: &str) -> StoreResult<bool> {
        envelope::check_store_key(key)?;
        let _lock = self.lock(key)?;
        let paths = self.paths(key);
        let (service, account) = (self.service, key.to_owned());
        let keyring_result = match &self.keyring {
            Some(k) => match k.call(move |k| k.delete(service, &account)) {
                Ok(deleted) => Ok(deleted),
                Err(e) if e.kind == StoreErrorKind::Unavailable && self.backend == Backend::Auto => Ok(false),
                Err(e) => Err(e),
            },
            None if self.backend == Backend::Keyring => Err(self.keyring_missing()),
            None => Ok(false),
        };
        let mut file_deleted = false;
        for path in &paths {
            file_deleted |= remove_if_exists(path)?;
        }
        self.cache.remove(key);
        Ok(keyring_result? || file_deleted)
    }

    /// Every key stored, from both sides, sorted and without duplicates.
    pub fn list(&self) -> StoreResult<Vec<String>> {
        let service = self.service;
        let mut keys = self.keyring_call(move |k| k.list(service))?.unwrap_or_default();
        match fs::read_dir(&self.dir) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    if let Some(key) = envelope::key_from_file_name(&entry.file_name().to_string_lossy()) {
                        keys.push(key);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("cannot list the fallback directory", &e)),
        }
        keys.retain(|k| envelope::check_store_key(k).is_ok());
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    /// Whether `key` exists (a corrupt fallback file counts as existing).
    pub fn has(&self, key: &str) -> StoreResult<bool> {
        match self.get(key) {
            Ok(v) => Ok(v.is_some()),
            Err(e) if e.kind == StoreErrorKind::Corrupt => Ok(true),
            Err(e) => Err(e),
        }
    }
}

fn remove_if_exists(path: &Path) -> StoreResult<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io(format!("cannot remove {}", path.display()), &e)),
    }
}

/// Writes `content` to `path` so that a crash leaves either the old file or
/// the new one: a 0600 temp file beside it, fsync, rename, fsync of the
/// directory.
pub fn atomic_write(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!("{name}.tmp.{}", crate::random::hex(4)?));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stores(tag: &str) -> (PathBuf, SecureStore, SecureStore) {
        let root =
            std::env::temp_dir().join(format!("credd-secure-{tag}-{}", crate::random::hex(6).unwrap()));
        let make = || {
            let secret = Arc::new(MachineSecret::new(None, root.join("machine_secret"), root.join("locks")));
            SecureStore::new("svc", root.join("files"), Backend::File, None, secret, root.join("locks"))
        };
        (root.clone(), make(), make())
    }

    #[test]
    fn cache_sees_writes_from_another_instance_and_its_own_at_once() {
        let (root, a, b) = stores("cache");
        assert_eq!(a.get("k").unwrap(), None);
        b.set("k", &SecretString::from("one")).unwrap();
        assert_eq!(
            a.get("k").unwrap().unwrap().expose(),
            "one",
            "a cached miss is dropped when the file appears"
        );
        b.set("k", &SecretString::from("two")).unwrap();
        assert_eq!(a.get("k").unwrap().unwrap().expose(), "two", "a replaced file is re-read");
        a.set("k", &SecretString::from("three")).unwrap();
        assert_eq!(a.get_with_source("k").unwrap().unwrap().1, Source::File);
        assert_eq!(b.get("k").unwrap().unwrap().expose(), "three");
        assert!(b.delete("k").unwrap());
        assert_eq!(a.get("k").unwrap(), None, "a deleted file is seen");
        assert!(!a.delete("k").unwrap());
        let _ = fs::remove_dir_all(root);
    }

    #[test]
    fn legacy_file_names_are_read_listed_and_deleted() {
        let (root, a, _) = stores("legacy");
        a.set("p:b", &SecretString::from("v")).unwrap();
        let dir = root.join("files");
        fs::rename(dir.join("p%3Ab.enc"), dir.join("p:b.enc")).unwrap();
        assert_eq!(a.get("p:b").unwrap().unwrap().expose(), "v");
        assert_eq!(a.list().unwrap(), ["p:b"]);
        assert!(a.delete("p:b").unwrap());
        assert!(!dir.join("p:b.enc").exists());
        let _ = fs::remove_dir_all(root);
    }
}
