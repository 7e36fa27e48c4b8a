/*!
Every call into libc lives here, so that the rest of the crate can forbid
`unsafe` outright. Each wrapper turns a C failure into `io::Error` through
[`cerr`] and says in a `SAFETY:` comment why its pointers are valid.
*/

pub mod inotify;
pub mod wipe_alloc;

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::path::Path;

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

/// The real user id of this process.
pub fn current_uid() -> UserId {
    // SAFETY: getuid takes no arguments and cannot fail.
    UserId(unsafe { libc::getuid() })
}

/// The id of this process.
pub fn current_pid() -> ProcessId {
    ProcessId(std::process::id() as libc::pid_t)
}

/// The host name as `gethostname(2)` reports it (what Node's `os.hostname()`
/// returns), lossily decoded.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for writes of its whole length, and we pass
    // one less so the result is always NUL-terminated.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Name and home directory of a user from the password database.
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Home directory.
    pub home: String,
}

/// Looks up `uid` in the password database with `getpwuid_r`.
pub fn passwd_entry(uid: UserId) -> Option<PasswdEntry> {
    // SAFETY: sysconf only reads a configuration value.
    let hint = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    let mut size = if hint > 0 { hint as usize } else { 1024 };
    loop {
        let mut buf = vec![0u8; size];
        let mut pwd = MaybeUninit::<libc::passwd>::uninit();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `pwd` and `buf` are valid for writes of their sizes and
        // outlive the call; `result` is a valid out-pointer. On success
        // `result` points at `pwd`, whose string fields point into `buf`.
        let rc =
            unsafe { libc::getpwuid_r(uid.0, pwd.as_mut_ptr(), buf.as_mut_ptr().cast(), size, &mut result) };
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 2;
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: getpwuid_r succeeded and `result` is non-null, so `pwd` is
        // initialised and its name/dir fields are NUL-terminated strings in
        // `buf`, which is still alive here.
        let (name, home) = unsafe {
            let pwd = pwd.assume_init();
            (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_dir))
        };
        return Some(PasswdEntry {
            name: name.to_string_lossy().into_owned(),
            home: home.to_string_lossy().into_owned(),
        });
    }
}

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

/// Whether `pid` has exited and waits only to be reaped (Linux
/// `/proc/PID/stat` state `Z`): it holds nothing and will never run again.
fn is_zombie(pid: ProcessId) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.0))
        .ok()
        .and_then(|stat| stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3).map(|s| s == "Z")))
        .unwrap_or(false)
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
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as u64 } else { 100 }
}

/// Start time of a process in Unix milliseconds, whole seconds as `ps -o
/// lstart` shows it, computed from `/proc` (Linux only; `None` elsewhere).
pub fn process_start_time_ms(pid: ProcessId) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.0)).ok()?;
    // The command name may contain spaces and parentheses; fields resume
    // after the last ')'. starttime is field 22, i.e. index 19 after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let ticks: u64 = rest.split(' ').nth(19)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    Some((btime + ticks / clock_ticks_per_second()) * 1000)
}

/// Sets the process umask and returns the previous one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask cannot fail and only changes process state.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// The owner uid and mode bits of a path, without following a final symlink.
pub fn owner_and_mode(path: &Path) -> io::Result<(UserId, u32)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    Ok((UserId(meta.uid()), meta.mode() & 0o7777))
}

/// The binary form of a POSIX access ACL (the `system.posix_acl_access`
/// extended attribute, version 2): the owner gets `owner_perm`, each of
/// `uids` gets `perm`, the owning group and others nothing, and the mask
/// is `perm`. Permission bits: 4 read, 2 write, 1 execute/search.
pub fn posix_acl_bytes(owner_perm: u16, uids: &[UserId], perm: u16) -> Vec<u8> {
    const VERSION: u32 = 2;
    const UNDEFINED_ID: u32 = u32::MAX;
    let (user_obj, user, group_obj, mask, other) = (0x01u16, 0x02u16, 0x04u16, 0x10u16, 0x20u16);
    let mut ids: Vec<u32> = uids.iter().map(|u| u.0).collect();
    ids.sort_unstable();
    ids.dedup();
    let mut entries = vec![(user_obj, owner_perm, UNDEFINED_ID)];
    entries.extend(ids.iter().map(|&id| (user, perm, id)));
    entries.extend([(group_obj, 0, UNDEFINED_ID), (mask, perm, UNDEFINED_ID), (other, 0, UNDEFINED_ID)]);
    let mut out = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// Sets the access ACL of `path` (see [`posix_acl_bytes`]). Fails with
/// `EOPNOTSUPP` where the file system has no POSIX ACLs.
pub fn set_access_acl(path: &Path, owner_perm: u16, uids: &[UserId], perm: u16) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
    let value = posix_acl_bytes(owner_perm, uids, perm);
    // SAFETY: both strings are NUL-terminated and live across the call;
    // `value` is a valid buffer of `value.len()` bytes.
    cerr(unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(|_| ())
}

/// Whether standard input is a terminal.
pub fn stdin_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDIN_FILENO) == 1 }
}

/// Reads one line from the terminal on stdin with echo switched off, for
/// secrets typed at a prompt. Echo is restored even when reading fails.
pub fn read_line_without_echo() -> io::Result<String> {
    let mut term = MaybeUninit::<libc::termios>::uninit();
    // SAFETY: `term` is valid for writes of a termios.
    cerr(unsafe { libc::tcgetattr(libc::STDIN_FILENO, term.as_mut_ptr()) })?;
    // SAFETY: tcgetattr succeeded, so `term` is initialised.
    let saved = unsafe { term.assume_init() };
    let mut quiet = saved;
    quiet.c_lflag &= !(libc::ECHO | libc::ECHONL);
    quiet.c_lflag |= libc::ICANON;
    // SAFETY: `quiet` is a valid termios copied from the current settings.
    cerr(unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &quiet) })?;
    let mut line = String::new();
    let read = io::stdin().read_line(&mut line);
    // SAFETY: `saved` is the unmodified termios read above.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSAFLUSH, &saved) };
    read.map(|_| line)
}

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

/// Turns off core dumps and (on Linux) ptrace attachment by non-root
/// processes of the same user: our memory holds secrets.
pub fn harden_process() -> io::Result<()> {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `zero` is a valid rlimit.
    cerr(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) })?;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes one integer argument.
        cerr(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })?;
    }
    Ok(())
}

/// Keeps the allocator from hoarding large buffers (glibc). scrypt takes
/// 16 MiB per decrypt or encrypt; glibc's dynamic mmap threshold would
/// rise to that size after the first one was freed, and from then on
/// every connection thread's arena would keep its own 16 MiB block (the
/// soak test saw 400 MiB idle after 64 connections wrote and read
/// tokens). A fixed threshold (which also turns the dynamic one off) sends
/// such blocks back to the kernel on free; few arenas bound the rest.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two integers and only changes allocator tuning.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Whether the process is marked dumpable (Linux; `None` elsewhere).
pub fn is_dumpable() -> Option<bool> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_GET_DUMPABLE takes no further arguments.
        let rc = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        Some(rc == 1)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

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

    /// Unblocks the set in the calling thread (for a child about to exec).
    pub fn unblock(&self) {
        // SAFETY: the set is initialised.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.0, std::ptr::null_mut()) };
    }
}

/// Makes the child of `cmd` start with an empty signal mask. The daemon
/// blocks the signals its signal thread waits for, a child inherits the
/// mask across exec, and std's `Command` does not reset it: a command that
/// does not reset it either (bash, for one) would never see the SIGTERM the
/// daemon passes on.
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

fn point_at_null(fd: libc::c_int) -> io::Result<()> {
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    use std::os::fd::AsRawFd;
    // SAFETY: both descriptors are open; dup2 replaces `fd` atomically.
    cerr(unsafe { libc::dup2(null.as_raw_fd(), fd) })?;
    Ok(())
}

/// Which side of a [`fork`] we are on.
#[derive(Debug, PartialEq, Eq)]
pub enum Forked {
    /// The original process; the child has this pid.
    Parent(ProcessId),
    /// The new process.
    Child,
}

/// Number of threads in this process, where the OS tells (Linux).
pub fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
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
/// As for [`adopt_fd`]: nothing else in the process owns `fd` or uses it
/// by number; call it before the process opens descriptors of its own.
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

/// The command name of process `pid` (Linux `/proc/PID/comm`); `None`
/// where the OS does not tell.
pub fn process_name(pid: ProcessId) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{}/comm", pid.0)).ok().map(|s| s.trim_end().to_string())
}

/// Pins thread `tid` (0 = the calling thread) to `cpus` (Linux; what the
/// benchmark's `taskset` does). Elsewhere: unsupported.
pub fn pin_to_cpus(tid: i32, cpus: &[usize]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set = unsafe { MaybeUninit::<libc::cpu_set_t>::zeroed().assume_init() };
        for &cpu in cpus {
            if cpu >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "CPU number out of range"));
            }
            // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so the
            // bit is inside `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        cerr(unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) })?;
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (tid, cpus);
        Err(io::Error::new(io::ErrorKind::Unsupported, "CPU pinning is Linux only"))
    }
}

/// Resident set size of process `pid` in KiB (Linux `/proc/PID/status`).
pub fn rss_kib(pid: ProcessId) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.0)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Thread ids of process `pid` (Linux `/proc/PID/task`).
pub fn thread_ids(pid: ProcessId) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{}/task", pid.0))
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}
