/*!
Exec mode (`llxprt-credd ... -- COMMAND`): the command starts with the
socket in its environment and the signals unblocked, its exit status
becomes the daemon's, and the daemon logs to a file off the command's
terminal by default.
*/
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use super::{CAPABILITY_FILE_ENV, PID_ENV, SOCKET_ENV};
use crate::error::{Error, Result};
use crate::server::socket;
use crate::sys;

/// Where an exec-mode daemon logs by default:
/// `$XDG_STATE_HOME/llxprt-code/credd.log` (else under `~/.local/state`),
/// its directory made 0700 when missing.
pub(super) fn exec_log_path() -> Result<PathBuf> {
    let dir = socket::state_dir("llxprt-code").ok_or_else(|| {
        Error::Environment("neither XDG_STATE_HOME nor HOME is set: use --log-file or --log-stderr".into())
    })??;
    Ok(dir.join("credd.log"))
}

/// Starts exec mode's command with the socket (and capability file) in its
/// environment and an empty signal mask, so the signals the daemon blocks
/// (and passes on) reach it.
pub fn spawn_command(command: &[OsString], socket: &Path, capability: Option<&Path>) -> io::Result<Child> {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..])
        .env(SOCKET_ENV, socket)
        .env(PID_ENV, sys::current_pid().0.to_string())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_FDNAMES");
    match capability {
        Some(cap) => cmd.env(CAPABILITY_FILE_ENV, cap),
        None => cmd.env_remove(CAPABILITY_FILE_ENV),
    };
    sys::spawn_with_empty_signal_mask(&mut cmd);
    cmd.spawn()
}

/// The exit code a shell would report for `status`.
pub fn exit_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1)
}

/// The exit code for a command that could not be started (as shells do:
/// 127 not found, 126 not executable).
pub fn spawn_failure_code(e: &io::Error) -> i32 {
    match e.kind() {
        io::ErrorKind::NotFound => 127,
        _ => 126,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 128 + libc::SIGTERM);
        assert_eq!(spawn_failure_code(&io::Error::from(io::ErrorKind::NotFound)), 127);
        assert_eq!(spawn_failure_code(&io::Error::from(io::ErrorKind::PermissionDenied)), 126);
    }
}
