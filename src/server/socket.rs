/*!
The listening socket: a 0700 per-user directory we own, a 0600 socket with
a random nonce in its name, a stale socket at our path removed only when
nothing answers on it, and the `sun_path` length checked up front. Or,
under socket activation, the listening socket a service manager passed
(`LISTEN_PID`/`LISTEN_FDS`), which the daemon then never binds or removes.
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

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;
/// The socket-activation variables, removed once the socket is taken.
pub const LISTEN_ENV: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// How many descriptors a service manager passed to process `pid`
/// (`LISTEN_FDS` when `LISTEN_PID` is `pid`); `None` when none were, or
/// the variables are meant for another process or malformed.
pub fn activation_fd_count(listen_pid: Option<&str>, listen_fds: Option<&str>, pid: i32) -> Option<i32> {
    let for_us = listen_pid?.trim().parse::<i32>().ok()? == pid;
    let count = listen_fds?.trim().parse::<i32>().ok()?;
    (for_us && count >= 1).then_some(count)
}

/// [`activation_fd_count`] for this process, from its environment.
pub fn activation_fd_count_from_env() -> Option<i32> {
    let var = |name| std::env::var(name).ok();
    activation_fd_count(var("LISTEN_PID").as_deref(), var("LISTEN_FDS").as_deref(), sys::current_pid().0)
}

/// A listening socket passed by a service manager.
pub struct Activated {
    /// The listener (descriptor 3).
    pub listener: UnixListener,
    /// The path it is bound to.
    pub path: PathBuf,
}

/// Takes the `count` descriptors a service manager passed: the first
/// must be a listening Unix stream socket bound to a path (the daemon
/// wakes its accept loop by connecting to the path); the others are
/// closed. Removes the `LISTEN_*` variables so no child sees them. Call
/// before any thread starts.
pub fn take_activated(count: i32) -> Result<Activated> {
    let what = || format!("socket activation: descriptor {LISTEN_FDS_START}");
    let listener = sys::adopt_listening_unix_socket(LISTEN_FDS_START).map_err(|e| Error::io(what(), e))?;
    for extra in LISTEN_FDS_START + 1..LISTEN_FDS_START.saturating_add(count) {
        crate::log_warn!("socket activation: descriptor {extra} is not used; closing it");
        drop(sys::adopt_fd(extra));
    }
    sys::remove_env_vars(&LISTEN_ENV).map_err(|e| Error::io("socket activation", e))?;
    let addr = listener.local_addr().map_err(|e| Error::io(what(), e))?;
    let path = addr.as_pathname().map(Path::to_path_buf).ok_or_else(|| {
        Error::Usage(format!(
            "{}: the socket has no path (abstract or unnamed); use a socket in the file system",
            what()
        ))
    })?;
    Ok(Activated { listener, path })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_variables() {
        assert_eq!(activation_fd_count(Some("42"), Some("1"), 42), Some(1));
        assert_eq!(activation_fd_count(Some("42"), Some("2"), 42), Some(2));
        assert_eq!(activation_fd_count(Some("41"), Some("1"), 42), None, "for another process");
        assert_eq!(activation_fd_count(Some("42"), Some("0"), 42), None);
        assert_eq!(activation_fd_count(None, Some("1"), 42), None);
        assert_eq!(activation_fd_count(Some("42"), None, 42), None);
        assert_eq!(activation_fd_count(Some("x"), Some("1"), 42), None);
        assert_eq!(activation_fd_count(Some("42"), Some("-1"), 42), None);
    }
}
