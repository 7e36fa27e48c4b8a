/*!
The listening socket: a 0700 per-user directory we own, a 0600 socket with
a random nonce in its name, a stale socket at our path removed only when
nothing answers on it, and the `sun_path` length checked up front.
*/
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys;

/// Longest socket path the platform accepts (`sun_path` minus the NUL).
#[cfg(target_os = "linux")]
pub const MAX_SOCKET_PATH: usize = 107;
/// Longest socket path the platform accepts (`sun_path` minus the NUL).
#[cfg(not(target_os = "linux"))]
pub const MAX_SOCKET_PATH: usize = 103;

/// The default socket path: `{realpath(tmpdir)}/llxprt-cred-{uid}/llxprt-cred-{pid}-{nonce}.sock`.
pub fn default_socket_path() -> Result<PathBuf> {
    let tmp = std::env::temp_dir();
    let tmp =
        fs::canonicalize(&tmp).map_err(|e| Error::io(format!("cannot resolve {}", tmp.display()), e))?;
    let dir = tmp.join(format!("llxprt-cred-{}", sys::current_uid().0));
    let nonce = crate::random::hex(4).map_err(|e| Error::io("random", e))?;
    Ok(dir.join(format!("llxprt-cred-{}-{nonce}.sock", sys::current_pid().0)))
}

/// Makes sure `dir` exists, is ours, and has no group/other bits.
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("cannot create socket directory {}", dir.display()), e)),
    }
    let meta =
        fs::symlink_metadata(dir).map_err(|e| Error::io(format!("cannot inspect {}", dir.display()), e))?;
    let (owner, mode) = sys::owner_and_mode(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    if !meta.is_dir() || owner != sys::current_uid() || mode & 0o077 != 0 {
        return Err(Error::Usage(format!(
            "socket directory {} is not a private directory of ours (owner uid {}, mode {:o}); \
             remove it or choose another path with --socket",
            dir.display(),
            owner.0,
            mode
        )));
    }
    Ok(())
}

/// Binds the listener at `path` (in a private directory), mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(Error::Usage(format!(
            "socket path is {len} bytes; the limit is {MAX_SOCKET_PATH}: choose a shorter --socket or TMPDIR"
        )));
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    ensure_private_dir(dir)?;
    remove_stale(path)?;
    // The socket is created under a 0177 umask so it is never briefly
    // reachable by others, then chmod-ed to be sure.
    let old = sys::set_umask(0o177);
    let bound = UnixListener::bind(path);
    sys::set_umask(old);
    let listener = bound.map_err(|e| Error::io(format!("cannot listen on {}", path.display()), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("cannot chmod {}", path.display()), e))?;
    Ok(listener)
}

fn remove_stale(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path.display().to_string(), e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Usage(format!("{} exists and is not a socket; not touching it", path.display())));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(Error::Usage(format!("{} is in use by a running daemon", path.display())));
    }
    fs::remove_file(path).map_err(|e| Error::io(format!("cannot remove stale socket {}", path.display()), e))
}
