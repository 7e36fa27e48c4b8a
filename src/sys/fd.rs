/*!
Descriptors: pipes, pointing standard output or error at `/dev/null`,
looking at an inherited descriptor, and taking one over ([`adopt_fd`], an
`unsafe fn`: only the caller can promise that nothing else owns the
number).
*/

use std::io;
use std::mem::MaybeUninit;

use super::cerr;

/// A pipe whose two ends close on exec: `(read end, write end)`.
pub fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0 as libc::c_int; 2];
    #[cfg(target_os = "linux")]
    // SAFETY: `fds` is valid for two ints, as pipe2 requires.
    cerr(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: `fds` is valid for two ints, as pipe requires.
        cerr(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
        for fd in fds {
            // SAFETY: `fd` was just returned by pipe and is open.
            cerr(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
        }
    }
    // SAFETY: pipe returned two new descriptors that nothing else owns.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((read.into(), write.into()))
}

/// Points standard output at `/dev/null`, so a reader waiting for it to
/// close (a shell's `$(...)`, a wrapper script) learns we are ready.
pub fn detach_stdout() -> io::Result<()> {
    point_at_null(libc::STDOUT_FILENO)
}

/// Points standard error at `/dev/null` (a daemon in the background with no
/// log file).
pub fn detach_stderr() -> io::Result<()> {
    point_at_null(libc::STDERR_FILENO)
}

/// Replaces standard descriptor `fd` with `/dev/null`. A safe function:
/// no owned handle holds 0, 1 or 2 (std's handles borrow them by number
/// and expect them to be replaced this way), so no caller promise is needed.
fn point_at_null(fd: libc::c_int) -> io::Result<()> {
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open; dup2 replaces `fd` atomically.
    cerr(unsafe { libc::dup2(null.as_raw_fd(), fd) })?;
    Ok(())
}

/// What an inherited descriptor is, as `fstat(2)` and `F_GETFL` see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdInfo {
    /// The file type bits of `st_mode` (`S_IFIFO`, `S_IFSOCK`, ...).
    pub file_type: u32,
    /// Whether the descriptor was opened for writing.
    pub writable: bool,
}

impl FdInfo {
    /// A short name for the file type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self.file_type {
            libc::S_IFIFO => "a pipe",
            libc::S_IFSOCK => "a socket",
            libc::S_IFREG => "a regular file",
            libc::S_IFCHR => "a character device",
            libc::S_IFDIR => "a directory",
            libc::S_IFBLK => "a block device",
            _ => "an unusual file",
        }
    }
}

/// Looks at descriptor `fd` without taking it: `EBADF` when it is not
/// open. Safe: only `fstat` and `fcntl(F_GETFL)`, which read.
pub fn fd_info(fd: i32) -> io::Result<FdInfo> {
    let mut st = MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is valid for writes of one `stat`; fstat fails with
    // EBADF on a closed descriptor and writes nothing then.
    cerr(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded and filled the structure.
    let st = unsafe { st.assume_init() };
    // SAFETY: F_GETFL takes no pointer.
    let flags = cerr(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    let access = flags & libc::O_ACCMODE;
    Ok(FdInfo {
        file_type: st.st_mode & libc::S_IFMT,
        writable: access == libc::O_WRONLY || access == libc::O_RDWR,
    })
}

/// Takes ownership of descriptor `fd`, inherited from whoever started us
/// (`--ready-fd`, `--capability-fd`, extra socket-activation descriptors).
/// Standard descriptors are refused, and so is a descriptor that is not
/// open. The descriptor is marked close-on-exec so no child inherits it.
///
/// # Safety
///
/// Nothing else in this process may own `fd` or use it by number, now or
/// later: the returned `File` closes it. Call it for descriptors inherited
/// at start, before the process opens any descriptor of its own (so the
/// number cannot name one of ours), once per number.
pub unsafe fn adopt_fd(fd: i32) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    if fd <= libc::STDERR_FILENO {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "descriptors 0, 1 and 2 cannot be used"));
    }
    // SAFETY: F_GETFD takes no pointer; it fails with EBADF on a closed fd.
    let flags = cerr(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: as above; F_SETFD takes an integer argument.
    cerr(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    // SAFETY: the descriptor is open (checked above) and, by the caller's
    // promise, owned by nothing else in the process.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}
