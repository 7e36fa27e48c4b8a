/*!
Process control: probing whether a process lives, forking into the
background, a new session, waiting for a child, and changing the
environment. `fork` and `remove_env_vars` are only sound while the process
runs one thread, so both count the threads first ([`thread_count`]) and
refuse when there is more than one. They stay safe functions because of
that check; where the OS does not tell (no `/proc`: macOS), they rely on
being called before the first thread starts, as the daemon does.
*/

use std::io;

use super::proc_fs::{is_zombie, thread_count};
use super::{ProcessId, cerr};

/// What `kill(pid, 0)` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The process exists (it may belong to another user).
    Alive,
    /// No such process.
    Dead,
    /// The probe failed in some other way.
    Unknown,
}

/// Probes a process with signal 0; a zombie counts as dead.
pub fn process_liveness(pid: ProcessId) -> Liveness {
    if pid.0 <= 0 {
        return Liveness::Unknown;
    }
    // SAFETY: signal 0 performs only the existence and permission checks.
    match cerr(unsafe { libc::kill(pid.0, 0) }) {
        Ok(_) if is_zombie(pid) => Liveness::Dead,
        Ok(_) => Liveness::Alive,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Liveness::Dead,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Liveness::Alive,
        Err(_) => Liveness::Unknown,
    }
}

/// Clock ticks per second, for `/proc/<pid>/stat` start times.
pub(super) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Which side of a [`fork`] we are on.
#[derive(Debug, PartialEq, Eq)]
pub enum Forked {
    /// The original process; the child has this pid.
    Parent(ProcessId),
    /// The new process.
    Child,
}

/// Forks. Refuses when the process already runs more than one thread
/// (where that can be seen), because the child would inherit locks held
/// by threads that do not exist in it.
pub fn fork() -> io::Result<Forked> {
    if thread_count().is_some_and(|n| n > 1) {
        return Err(io::Error::other("fork refused: the process already runs several threads"));
    }
    // SAFETY: the process is single-threaded (checked above where the OS
    // tells us, and by construction: callers fork before starting threads),
    // so the child continues with a consistent heap and no held locks.
    match cerr(unsafe { libc::fork() })? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(ProcessId(pid))),
    }
}

/// Starts a new session (leaves the controlling terminal).
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid has no arguments.
    cerr(unsafe { libc::setsid() }).map(|_| ())
}

/// Waits for child `pid` and returns its exit code (128 + signal when a
/// signal ended it, as shells report it).
pub fn wait_child(pid: ProcessId) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is valid for writes.
        match cerr(unsafe { libc::waitpid(pid.0, &mut status, 0) }) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Ok(128 + libc::WTERMSIG(status))
    } else {
        Ok(1)
    }
}

/// Removes variables from this process's environment. Refused while the
/// process runs more than one thread (where that can be seen): another
/// thread reading the environment at the same time is undefined behaviour.
pub fn remove_env_vars(names: &[&str]) -> io::Result<()> {
    if thread_count().is_some_and(|n| n > 1) {
        return Err(io::Error::other(
            "cannot change the environment: the process already runs several threads",
        ));
    }
    for name in names {
        // SAFETY: the process is single-threaded (checked above where the
        // OS tells us, and by construction: the daemon calls this before it
        // starts any thread), so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(name) };
    }
    Ok(())
}
