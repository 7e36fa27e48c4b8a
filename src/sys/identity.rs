/*!
Who we are: the user id, the process id, the host name, and a user's
name and home directory from the password database.
*/

use std::ffi::CStr;
use std::mem::MaybeUninit;

use super::{ProcessId, UserId};

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
