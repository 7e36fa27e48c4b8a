/*!
The descriptors `llxprt-credd` inherited (`--ready-fd`, `--capability-fd`,
a socket-activation listener), taken before the daemon opens anything of
its own: a number on the command line can then only name what the caller
passed. This is the daemon's one `unsafe` block.
*/
#![deny(unsafe_code)]

use std::fs::File;

use crate::cli::credd::Args;
use crate::error::{Error, Result};
use crate::server::socket;
use crate::sys;

/// Descriptors inherited from whoever started the daemon.
pub(super) struct Inherited {
    pub(super) activated: Option<socket::Activated>,
    pub(super) ready: Option<File>,
    pub(super) capability: Option<File>,
}

/// Checks that `fd` (named by `flag`) is an open descriptor the daemon can
/// write a line to: a pipe, a socket or a regular file, open for writing.
fn check_inherited(flag: &str, fd: i32) -> Result<()> {
    let info = sys::fd_info(fd).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBADF) {
            Error::Usage(format!("{flag} {fd}: no descriptor {fd} was passed in (e.g. {flag} {fd} {fd}>&1)"))
        } else {
            Error::io(format!("{flag} {fd}"), e)
        }
    })?;
    if ![libc::S_IFIFO, libc::S_IFSOCK, libc::S_IFREG].contains(&info.file_type) {
        return Err(Error::Usage(format!(
            "{flag} {fd}: descriptor {fd} is {}; pass a pipe, a socket or a file",
            info.type_name()
        )));
    }
    if !info.writable {
        return Err(Error::Usage(format!("{flag} {fd}: descriptor {fd} is not open for writing")));
    }
    Ok(())
}

/// Takes the inherited descriptors. Runs first in [`run`](super::run), before the
/// daemon opens a descriptor of its own (the log file, the store, a
/// socket) and before any thread starts: a number that was not passed in
/// is refused rather than later naming one of ours. Socket activation in
/// background mode is refused (the fork would leave the socket with a
/// process that exits at once).
#[allow(unsafe_code)]
pub(super) fn claim_inherited(args: &Args, background: bool) -> Result<Inherited> {
    let activation = socket::activation_fd_count_from_env();
    if let Some(count) = activation {
        if background {
            return Err(Error::Usage("socket activation (LISTEN_FDS) needs -D or a COMMAND".into()));
        }
        let passed = socket::LISTEN_FDS_START..socket::LISTEN_FDS_START.saturating_add(count);
        for (flag, fd) in [("--ready-fd", args.ready_fd), ("--capability-fd", args.capability_fd)] {
            if let Some(fd) = fd.filter(|fd| passed.contains(fd)) {
                return Err(Error::Usage(format!("{flag} {fd} is a socket passed by the service manager")));
            }
        }
    }
    for (flag, fd) in [("--ready-fd", args.ready_fd), ("--capability-fd", args.capability_fd)] {
        if let Some(fd) = fd {
            check_inherited(flag, fd)?;
        }
    }
    let take = |flag: &str, fd: i32| -> Result<File> {
        // SAFETY: `run` calls this before the process opens any descriptor,
        // so `fd` is one the caller passed in; `parse` refused 0-2 and equal
        // numbers and the check above refused the activation range, so each
        // number is taken once, here, and nothing else owns it.
        unsafe { sys::adopt_fd(fd) }.map_err(|e| Error::io(format!("{flag} {fd}"), e))
    };
    let ready = args.ready_fd.map(|fd| take("--ready-fd", fd)).transpose()?;
    let capability = args.capability_fd.map(|fd| take("--capability-fd", fd)).transpose()?;
    let activated = match activation {
        None => None,
        Some(count) => {
            let first = socket::LISTEN_FDS_START;
            let what = || format!("socket activation: descriptor {first}");
            // SAFETY: as above: the service manager passed descriptors
            // 3..3+count for this process, and nothing in it has opened
            // or taken them yet.
            let listener =
                unsafe { sys::adopt_listening_unix_socket(first) }.map_err(|e| Error::io(what(), e))?;
            for extra in first + 1..first.saturating_add(count) {
                crate::log_warn!("socket activation: descriptor {extra} is not used; closing it");
                // SAFETY: as above; each extra number is taken once, here.
                drop(unsafe { sys::adopt_fd(extra) });
            }
            Some(socket::activated(listener)?)
        }
    };
    Ok(Inherited { activated, ready, capability })
}
