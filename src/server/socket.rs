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

/// A directory the daemon made or checked for its socket or its
/// capability file.
#[derive(Clone, Debug)]
pub struct PrivateDir {
    /// The directory.
    pub path: PathBuf,
    /// Made with a random name because the default one belongs to someone
    /// else; removed at exit.
    pub temporary: bool,
}

/// `$XDG_RUNTIME_DIR` when it is set, absolute, a directory of ours and
/// private (SPEC §11.6).
pub fn xdg_runtime_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty())?);
    if !dir.is_absolute() || !dir.is_dir() {
        return None;
    }
    let (owner, mode) = sys::owner_and_mode(&dir).ok()?;
    (owner == sys::current_uid() && mode & 0o077 == 0).then_some(dir)
}

/// The default socket directory: `$XDG_RUNTIME_DIR/llxprt-cred/`, else
/// `{realpath(tmpdir)}/llxprt-cred-{uid}/`; a private random directory
/// beside it when that one is not ours.
pub fn default_socket_dir() -> Result<PrivateDir> {
    private_default_dir(&default_socket_dir_path()?)
}

/// Where [`default_socket_dir`] would be, without making it.
pub fn default_socket_dir_path() -> Result<PathBuf> {
    Ok(match xdg_runtime_dir() {
        Some(run) => run.join("llxprt-cred"),
        None => {
            let tmp = std::env::temp_dir();
            let tmp = fs::canonicalize(&tmp)
                .map_err(|e| Error::io(format!("cannot resolve {}", tmp.display()), e))?;
            tmp.join(format!("llxprt-cred-{}", sys::current_uid().0))
        }
    })
}

/// The default directory of capability files: never the socket's, and
/// never under the tmpdir a sandbox launcher may mount:
/// `$XDG_STATE_HOME/NAME/` (else `~/.local/state/NAME/`), made 0700 when
/// missing; `None` when neither variable is set.
pub fn state_dir(name: &str) -> Option<Result<PathBuf>> {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    let dir = state.join(name);
    Some(
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map(|()| dir.clone())
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e)),
    )
}

/// `$XDG_RUNTIME_DIR/llxprt-cred-capability/`, else
/// `$XDG_STATE_HOME/llxprt-credd/capability/` (`~/.local/state/...`).
pub fn default_capability_dir() -> Result<PrivateDir> {
    let dir = match xdg_runtime_dir() {
        Some(run) => run.join("llxprt-cred-capability"),
        None => state_dir("llxprt-credd")
            .ok_or_else(|| {
                Error::Environment("neither XDG_RUNTIME_DIR nor HOME is set: use --capability-file".into())
            })??
            .join("capability"),
    };
    private_default_dir(&dir)
}

/// `dir` when it is (or can be made) a private directory of ours; when it
/// exists but is someone else's, a fresh private directory beside it with
/// a random suffix, so another user cannot stop the daemon from starting.
fn private_default_dir(dir: &Path) -> Result<PrivateDir> {
    match ensure_private_dir(dir) {
        Ok(()) => return Ok(PrivateDir { path: dir.to_path_buf(), temporary: false }),
        Err(Error::Environment(why)) => {
            crate::log_warn!("{why}; using a private directory of its own instead")
        }
        Err(e) => return Err(e),
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let stem = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for _ in 0..16 {
        let nonce = crate::random::hex(4).map_err(|e| Error::io("random", e))?;
        let candidate = parent.join(format!("{stem}-{nonce}"));
        match fs::DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => {
                ensure_private_dir(&candidate)?;
                crate::log_info!("using private directory {}", candidate.display());
                return Ok(PrivateDir { path: candidate, temporary: true });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("cannot create {}", candidate.display()), e)),
        }
    }
    Err(Error::Environment(format!("cannot make a private directory beside {}", dir.display())))
}

/// A fresh socket path in `dir`: `llxprt-cred-{pid}-{nonce}.sock`.
pub fn socket_path_in(dir: &Path) -> Result<PathBuf> {
    let nonce = crate::random::hex(4).map_err(|e| Error::io("random", e))?;
    Ok(dir.join(format!("llxprt-cred-{}-{nonce}.sock", sys::current_pid().0)))
}

/// Makes sure `dir` exists, is ours, and has no group/other bits but a
/// group search bit (the mask of an `--allow-uid` ACL shows there).
pub fn ensure_private_dir(dir: &Path) -> Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("cannot create socket directory {}", dir.display()), e)),
    }
    let meta =
        fs::symlink_metadata(dir).map_err(|e| Error::io(format!("cannot inspect {}", dir.display()), e))?;
    let (owner, mode) = sys::owner_and_mode(dir).map_err(|e| Error::io(dir.display().to_string(), e))?;
    if !meta.is_dir() || owner != sys::current_uid() || mode & 0o067 != 0 {
        return Err(Error::Environment(format!(
            "directory {} is not a private directory of ours (owner uid {}, mode {:o}); \
             remove it or choose another path with --socket",
            dir.display(),
            owner.0,
            mode
        )));
    }
    Ok(())
}

/// Lets `uids` connect to the socket at `path`: a POSIX ACL on the socket
/// (read and write) and on its directory (search). Refused with the reason
/// where the file system cannot hold one (SPEC §11.6).
pub fn admit_uids(path: &Path, uids: &[sys::UserId]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let refuse = |what: &Path, e: io::Error| {
        Error::Environment(format!(
            "--allow-uid: cannot give the other user access to {} with a POSIX ACL ({e}); \
             put the socket on a file system with ACLs (--socket) or drop --allow-uid",
            what.display()
        ))
    };
    sys::set_access_acl(dir, 0o7, uids, 0o1).map_err(|e| refuse(dir, e))?;
    sys::set_access_acl(path, 0o6, uids, 0o6).map_err(|e| refuse(path, e))
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

/// Wraps the listener a service manager passed (taken by the caller from
/// descriptor [`LISTEN_FDS_START`]): it must be bound to a path (the
/// daemon names the path in its announcements and environment). Removes
/// the `LISTEN_*` variables so no child sees them. Call before any thread
/// starts.
pub fn activated(listener: UnixListener) -> Result<Activated> {
    let what = || format!("socket activation: descriptor {LISTEN_FDS_START}");
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
        return Err(Error::Environment(format!(
            "{} exists and is not a socket; not touching it",
            path.display()
        )));
    }
    if UnixStream::connect(path).is_ok() {
        return Err(Error::Environment(format!("{} is in use by a running daemon", path.display())));
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
