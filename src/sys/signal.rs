/*!
Signals: a set blocked in every thread and waited for by one, a child that
starts with an empty signal mask, and sending a signal.
*/

use std::io;
use std::mem::MaybeUninit;

use super::{ProcessId, cerr};

/// A set of signals handled by a dedicated thread with `sigwait`.
pub struct SignalSet(libc::sigset_t);

impl SignalSet {
    /// Blocks `signals` in the calling thread (and so in every thread it
    /// starts afterwards) and returns the set for [`SignalSet::wait`].
    pub fn block(signals: &[i32]) -> io::Result<SignalSet> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given.
        unsafe { libc::sigemptyset(set.as_mut_ptr()) };
        // SAFETY: initialised by sigemptyset above.
        let mut set = unsafe { set.assume_init() };
        for &sig in signals {
            // SAFETY: `set` is a valid, initialised sigset.
            cerr(unsafe { libc::sigaddset(&mut set, sig) })?;
        }
        // SAFETY: `set` is valid; the old mask is not needed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(SignalSet(set))
    }

    /// Waits for one of the blocked signals and returns its number.
    pub fn wait(&self) -> io::Result<i32> {
        let mut sig = 0;
        // SAFETY: the set is initialised and `sig` is valid for writes.
        let rc = unsafe { libc::sigwait(&self.0, &mut sig) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(sig)
    }
}

/// Makes the child of `cmd` start with an empty signal mask. The daemon
/// blocks the signals its signal thread waits for, a child inherits the
/// mask across exec, and std's `Command` does not reset it: a command that
/// does not reset it either (bash, for one) would never see the SIGTERM the
/// daemon passes on. A safe function: the only code that runs between fork
/// and exec is the hook below, whatever the caller does.
pub fn spawn_with_empty_signal_mask(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let reset = || {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given.
        unsafe { libc::sigemptyset(set.as_mut_ptr()) };
        // SAFETY: `set` was initialised above; the old mask is not needed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, set.as_ptr(), std::ptr::null_mut()) };
        if rc == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(rc)) }
    };
    // SAFETY: the closure runs in the child between fork and exec. It
    // allocates nothing, takes no lock and calls only sigemptyset and
    // pthread_sigmask, which are async-signal-safe.
    unsafe { cmd.pre_exec(reset) };
}

/// Sends `sig` to `pid`.
pub fn send_signal(pid: ProcessId, sig: i32) -> io::Result<()> {
    // SAFETY: kill has no memory arguments.
    cerr(unsafe { libc::kill(pid.0, sig) }).map(|_| ())
}
