/*!
Every call into libc lives here, so that the rest of the crate can forbid
`unsafe` outright. Each wrapper turns a C failure into `io::Error` through
[`cerr`] and says in a `SAFETY:` comment why its pointers are valid.

The wrappers are grouped by concern in private submodules and re-exported
here, so callers name them as `sys::current_uid`, `sys::peer_cred`, ...:
who we are ([`identity`]), process control ([`process`]), what `/proc`
says ([`proc_fs`], no `unsafe`), signals ([`signal`]), descriptors
([`fd`]), Unix sockets ([`socket`]), files and ACLs ([`fs`]), the terminal
([`term`]), hardening of the daemon's process ([`hardening`]), directory
watches ([`inotify`]) and the wiping allocator ([`wipe_alloc`]).

A function whose soundness rests on a promise only the caller can keep is
an `unsafe fn` with a `# Safety` section ([`adopt_fd`],
[`adopt_listening_unix_socket`]); one whose precondition can be checked
checks it at run time instead and stays safe ([`fork`] and
[`remove_env_vars`] refuse to run beside other threads).
*/
// The sandbox-side build (no `host` feature) uses only a few of these.
#![cfg_attr(not(feature = "host"), allow(unused_imports, dead_code))]

mod fd;
mod fs;
mod hardening;
mod identity;
pub mod inotify;
mod proc_fs;
mod process;
mod signal;
mod socket;
mod term;
pub mod wipe_alloc;

use std::io;

pub use fd::{adopt_fd, detach_stderr, detach_stdout, fd_info, pipe};
pub use fs::{owner_and_mode, set_access_acl, set_umask};
pub use hardening::{harden_process, tune_allocator};
pub use identity::{current_pid, current_uid, hostname, passwd_entry};
pub use proc_fs::{process_name, process_start_time_ms};
pub use process::{Forked, Liveness, fork, process_liveness, remove_env_vars, setsid, wait_child};
pub use signal::{SignalSet, send_signal, spawn_with_empty_signal_mask};
pub use socket::{PeerCred, adopt_listening_unix_socket, peer_cred, peer_hung_up, wait_readable};
pub use term::{read_line_without_echo, stdin_is_tty};

/// Turns a C `-1` return into the thread's `errno` as an `io::Error`.
pub fn cerr<T: Copy + PartialEq + From<i8>>(res: T) -> io::Result<T> {
    if res == T::from(-1) { Err(io::Error::last_os_error()) } else { Ok(res) }
}

/// A user id, kept apart from other integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UserId(pub libc::uid_t);

/// A process id, kept apart from other integers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProcessId(pub libc::pid_t);
