/*!
Unix sockets: the peer's credentials, waiting for readability or a peer
that hung up, and taking over a listening socket passed by a service
manager (socket activation).
*/

use std::io;
use std::mem::MaybeUninit;

use super::{ProcessId, UserId, cerr};

/// Credentials of the process at the other end of a Unix socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCred {
    /// Effective user id of the peer.
    pub uid: UserId,
    /// Peer process id, where the platform reports it.
    pub pid: Option<ProcessId>,
}

/// Reads the peer's credentials of a connected Unix socket
/// (`SO_PEERCRED` on Linux).
#[cfg(target_os = "linux")]
pub fn peer_cred(fd: std::os::fd::RawFd) -> io::Result<PeerCred> {
    let mut cred = MaybeUninit::<libc::ucred>::zeroed();
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is valid for writes of `len` bytes and `len` is a valid
    // in/out length; the kernel writes at most `len` bytes.
    cerr(unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_PEERCRED, cred.as_mut_ptr().cast(), &mut len)
    })?;
    // SAFETY: zero-initialised and then filled by getsockopt; every bit
    // pattern is a valid ucred.
    let cred = unsafe { cred.assume_init() };
    Ok(PeerCred { uid: UserId(cred.uid), pid: (cred.pid > 0).then_some(ProcessId(cred.pid)) })
}

/// Reads the peer's credentials of a connected Unix socket (`getpeereid`
/// and `LOCAL_PEERPID` on macOS).
#[cfg(target_os = "macos")]
pub fn peer_cred(fd: std::os::fd::RawFd) -> io::Result<PeerCred> {
    let mut uid: libc::uid_t = 0;
    let mut gid: libc::gid_t = 0;
    // SAFETY: both out-pointers are valid for writes.
    cerr(unsafe { libc::getpeereid(fd, &mut uid, &mut gid) })?;
    let mut pid: libc::pid_t = 0;
    let mut len = std::mem::size_of::<libc::pid_t>() as libc::socklen_t;
    // SAFETY: `pid` is valid for writes of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_LOCAL,
            libc::LOCAL_PEERPID,
            (&mut pid as *mut libc::pid_t).cast(),
            &mut len,
        )
    };
    Ok(PeerCred { uid: UserId(uid), pid: (rc == 0 && pid > 0).then_some(ProcessId(pid)) })
}

/// Peer credentials are not available on this platform.
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
pub fn peer_cred(_fd: std::os::fd::RawFd) -> io::Result<PeerCred> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no peer credentials on this platform"))
}

/// Waits until `first` or `second` is readable (or has hung up): which
/// of the two are. Retries when a signal interrupts the wait.
pub fn wait_readable(
    first: std::os::fd::BorrowedFd<'_>,
    second: std::os::fd::BorrowedFd<'_>,
) -> io::Result<(bool, bool)> {
    use std::os::fd::AsRawFd;
    let mut fds = [
        libc::pollfd { fd: first.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        libc::pollfd { fd: second.as_raw_fd(), events: libc::POLLIN, revents: 0 },
    ];
    loop {
        // SAFETY: `fds` is valid for reads and writes of its two entries,
        // whose descriptors the borrows keep open for the call.
        match cerr(unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) }) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let ready =
        |p: &libc::pollfd| p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0;
    Ok((ready(&fds[0]), ready(&fds[1])))
}

/// Waits up to `timeout` for the peer of socket `fd` to hang up or shut
/// its writing side down (`POLLRDHUP` where the OS has it). Data waiting
/// to be read does not count.
pub fn peer_hung_up(fd: std::os::fd::BorrowedFd<'_>, timeout: std::time::Duration) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let events = libc::POLLRDHUP;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let events = 0;
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events, revents: 0 };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is valid for reads and writes of one entry, whose
    // descriptor the borrow keeps open for the call.
    match cerr(unsafe { libc::poll(&mut pfd, 1, ms) }) {
        Ok(_) => Ok(pfd.revents & (events | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
        Err(e) => Err(e),
    }
}

/// An integer socket option of `fd` at `SOL_SOCKET`.
fn socket_option(fd: i32, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is valid for writes of `len` bytes and `len` is a
    // valid in/out length; the kernel writes at most `len` bytes.
    cerr(unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, option, (&mut value as *mut libc::c_int).cast(), &mut len)
    })?;
    Ok(value)
}

/// Takes ownership of descriptor `fd`, passed by a service manager
/// (socket activation), after checking that it is a listening `AF_UNIX`
/// stream socket. The descriptor is marked close-on-exec and put in
/// blocking mode, which the accept loop expects.
///
/// # Safety
///
/// As for [`adopt_fd`](super::adopt_fd): nothing else in the process owns
/// `fd` or uses it by number; call it before the process opens descriptors
/// of its own.
pub unsafe fn adopt_listening_unix_socket(fd: i32) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::FromRawFd;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("descriptor {fd} {what}"));
    if fd <= libc::STDERR_FILENO {
        return Err(invalid("is a standard descriptor"));
    }
    if socket_option(fd, libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(invalid("is not a stream socket"));
    }
    let mut addr = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `addr` is valid for writes of `len` bytes; the kernel writes
    // at most `len` bytes and updates `len`.
    cerr(unsafe { libc::getsockname(fd, addr.as_mut_ptr().cast(), &mut len) })?;
    // SAFETY: zero-initialised and then (partly) filled by getsockname;
    // every bit pattern is a valid sockaddr_storage.
    let family = unsafe { addr.assume_init() }.ss_family;
    if libc::c_int::from(family) != libc::AF_UNIX {
        return Err(invalid("is not a Unix domain socket"));
    }
    if socket_option(fd, libc::SO_ACCEPTCONN)? == 0 {
        return Err(invalid("is not listening"));
    }
    // SAFETY: F_GETFD/F_SETFD take no pointers; the descriptor is open
    // (getsockopt succeeded on it).
    let flags = cerr(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: as above.
    cerr(unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) })?;
    // SAFETY: the descriptor is an open listening socket and, by the
    // caller's promise, owned by nothing else in the process.
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
    listener.set_nonblocking(false)?;
    Ok(listener)
}
