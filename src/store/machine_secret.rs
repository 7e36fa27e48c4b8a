/*!
The machine secret: 32 random bytes that key llxprt-code's v2 fallback
envelopes. It lives in the keyring (`llxprt-code-machine-secret` /
`default`, base64) or, when the keyring cannot hold it, in
`{data}/machine_secret` (base64, mode 0600, directory 0700).

Readers never create it. A writer that finds none creates it under the
credential lock llxprt-code uses for the same purpose, re-reading both
places first so that two processes never mint two secrets. It is not
minted while v2 files already exist and the keyring is out of reach: those
files were sealed with a secret we cannot see, and a second secret would
strand them.
*/
#![forbid(unsafe_code)]

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use zeroize::Zeroizing;

use super::envelope::{MACHINE_SECRET_LEN, MachineSecretBytes};
use super::error::{StoreError, StoreErrorKind, StoreResult};
use super::keyring::KeyringAccess;
use super::lock::{CREDENTIAL_LOCK_WAIT, LockFamily, OwnerLock, credential_lock_path};
use crate::secret::SecretString;

/// Keyring service of the machine secret.
pub const SERVICE: &str = "llxprt-code-machine-secret";
/// Keyring account of the machine secret.
pub const ACCOUNT: &str = "default";

/// Where a machine secret was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// In the OS keyring.
    Keyring,
    /// In `{data}/machine_secret`.
    File,
}

enum Lookup {
    Found(MachineSecretBytes, SecretSource),
    Missing,
    Unusable,
}

/// Finds (and when asked, creates) the machine secret.
pub struct MachineSecret {
    keyring: Option<Arc<KeyringAccess>>,
    file: PathBuf,
    lock_dir: PathBuf,
    cached: Mutex<Option<(MachineSecretBytes, SecretSource)>>,
}

fn decode(text: &str) -> Option<MachineSecretBytes> {
    let bytes = Zeroizing::new(BASE64.decode(text.trim()).ok()?);
    let array: [u8; MACHINE_SECRET_LEN] = bytes.as_slice().try_into().ok()?;
    Some(Zeroizing::new(array))
}

impl MachineSecret {
    /// A finder using `keyring` (when the keyring is in use) and `file`.
    pub fn new(keyring: Option<Arc<KeyringAccess>>, file: PathBuf, lock_dir: PathBuf) -> Self {
        MachineSecret { keyring, file, lock_dir, cached: Mutex::new(None) }
    }

    /// The file location.
    pub fn file(&self) -> &Path {
        &self.file
    }

    fn lookup(&self) -> Lookup {
        if let Some(Ok(Some(text))) =
            self.keyring.as_ref().map(|keyring| keyring.call(|k| k.get(SERVICE, ACCOUNT)))
        {
            return match decode(text.expose()) {
                Some(secret) => Lookup::Found(secret, SecretSource::Keyring),
                None => Lookup::Unusable,
            };
        }
        match read_secret_file(&self.file) {
            Ok(text) => match decode(&text) {
                Some(secret) => Lookup::Found(secret, SecretSource::File),
                None => Lookup::Unusable,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Lookup::Missing,
            Err(e) => {
                crate::log_warn!("machine secret {}: {e}; not used", self.file.display());
                Lookup::Unusable
            }
        }
    }

    /// The secret if one exists (never creates one).
    pub fn get(&self) -> Option<(MachineSecretBytes, SecretSource)> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if cached.is_none() {
            if let Lookup::Found(secret, source) = self.lookup() {
                *cached = Some((secret, source));
            }
        }
        cached.clone()
    }

    /// The secret, created when missing. `Ok(None)` when an existing secret
    /// is unusable (the caller then writes v1, as llxprt-code does).
    /// `v2_files_exist` tells whether minting would strand existing files.
    pub fn get_or_create(
        &self,
        v2_files_exist: impl Fn() -> bool,
    ) -> StoreResult<Option<MachineSecretBytes>> {
        if let Some((secret, _)) = self.get() {
            return Ok(Some(secret));
        }
        let lock_path = credential_lock_path(&self.lock_dir, SERVICE, ACCOUNT)?;
        let _lock = OwnerLock::acquire(&lock_path, LockFamily::Credential, CREDENTIAL_LOCK_WAIT)?;
        match self.lookup() {
            Lookup::Found(secret, source) => {
                *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((secret.clone(), source));
                return Ok(Some(secret));
            }
            Lookup::Unusable => return Ok(None),
            Lookup::Missing => {}
        }
        let keyring_usable =
            self.keyring.as_ref().is_some_and(|k| k.status() == super::keyring::KeyringStatus::Ready);
        if !keyring_usable && v2_files_exist() {
            return Err(StoreError::new(
                StoreErrorKind::Unavailable,
                "v2 fallback files exist but their machine secret cannot be found (it may be in an OS keyring this process cannot reach; try --store auto on the desktop session)",
            ));
        }
        let mut fresh = Zeroizing::new([0u8; MACHINE_SECRET_LEN]);
        crate::random::fill(fresh.as_mut()).map_err(|e| StoreError::io("machine secret", &e))?;
        let encoded = SecretString::new(BASE64.encode(fresh.as_ref()));
        let mut in_keyring = false;
        if let (Some(keyring), true) = (&self.keyring, keyring_usable) {
            let value = encoded.clone();
            in_keyring = keyring.call(move |k| k.set(SERVICE, ACCOUNT, &value)).is_ok()
                && keyring.call(|k| k.get(SERVICE, ACCOUNT)).ok().flatten().as_ref() == Some(&encoded);
        }
        if !in_keyring {
            write_secret_file(&self.file, encoded.expose())
                .map_err(|e| StoreError::io(format!("cannot write {}", self.file.display()), &e))?;
        }
        // Re-read: whoever's secret is in place now is the one to use.
        match self.lookup() {
            Lookup::Found(secret, source) => {
                *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some((secret.clone(), source));
                Ok(Some(secret))
            }
            _ => Ok(None),
        }
    }
}

/// Opens `path` without following a symbolic link in its last component
/// (`O_NOFOLLOW`), so a repair of its permissions acts on it and never on
/// where a planted link points.
fn open_no_follow(path: &Path, flags: i32) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | flags)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(io::ErrorKind::InvalidData, "is a symbolic link")
            } else {
                e
            }
        })
}

/// Reads the machine secret file, first narrowing its directory to 0700
/// and the file to 0600 (llxprt-code's modes) through descriptors of the
/// directory and the file themselves (`fchmod`): a symbolic link in place
/// of either is refused, and nothing it points to is changed.
fn read_secret_file(file: &Path) -> io::Result<Zeroizing<String>> {
    use std::io::Read;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        let d = open_no_follow(dir, libc::O_DIRECTORY)?;
        d.set_permissions(fs::Permissions::from_mode(0o700))?;
    }
    let f = open_no_follow(file, 0)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "is not a regular file"));
    }
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    let mut text = Zeroizing::new(String::new());
    f.take(4096).read_to_string(&mut text)?;
    Ok(text)
}

fn write_secret_file(file: &Path, encoded: &str) -> io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    super::paths::create_private_dir(dir).map_err(|e| io::Error::other(e.message))?;
    let tmp = dir.join(format!("machine_secret.tmp.{}", crate::random::hex(4)?));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(encoded.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, file)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
