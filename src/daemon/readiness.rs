/*!
Telling whoever started the daemon that it is ready and where: the fork of
background mode (the parent exits once the child is ready), the
`-s`/`-c`/`--print-socket` announcement on stdout, and the readiness
signals (stdout closing, `--ready-fd`, `sd_notify`).
*/
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use crate::cli::credd::Announce;
use crate::cli::{EXIT_FAILURE, EXIT_OK};
use crate::error::{Error, Result};
use crate::log;
use crate::sys;

/// The ways a daemon says it is ready, all used at once.
#[derive(Default)]
pub struct Readiness {
    /// Close stdout (the ssh-agent convention; off in exec mode, where the
    /// child writes there).
    pub close_stdout: bool,
    /// Descriptors that get the socket path and a newline, then close
    /// (`--ready-fd`, and the pipe to our own parent in background mode).
    pub fds: Vec<File>,
}

impl Readiness {
    /// Reports readiness everywhere it was asked for. Failures are logged,
    /// not fatal: the daemon serves either way.
    pub fn ready(self, socket: &Path) {
        for mut fd in self.fds {
            let line = format!("{}\n", socket.display());
            if let Err(e) = fd.write_all(line.as_bytes()) {
                crate::log_warn!("cannot write readiness to a descriptor: {e}");
            }
        }
        if self.close_stdout {
            if let Err(e) = sys::detach_stdout() {
                crate::log_warn!("cannot close stdout: {e}");
            }
        }
        match sd_notify(&format!(
            "READY=1\nMAINPID={}\nSTATUS=serving {}",
            sys::current_pid().0,
            socket.display()
        )) {
            Ok(true) => crate::log_debug!("told the service manager we are ready"),
            Ok(false) => {}
            Err(e) => crate::log_warn!("sd_notify failed: {e}"),
        }
    }
}

/// Sends `state` to the service manager's `NOTIFY_SOCKET`, if there is
/// one (`@name` is a Linux abstract socket). Returns whether it was sent.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) {
        Some(target) => sd_notify_to(&target, state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` to the notification socket `target`.
pub fn sd_notify_to(target: &std::ffi::OsStr, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = target.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?;
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(io::Error::other("abstract NOTIFY_SOCKET is Linux only"));
        }
    } else {
        socket.send_to(state.as_bytes(), Path::new(target))?;
    }
    Ok(())
}

/// Background mode: fork before any thread exists. The parent waits until
/// the child says it is ready (or dies) and exits; the child goes on in a
/// new session. Returns the readiness pipe in the child, or the exit code
/// in the parent.
pub(super) fn daemonize() -> Result<std::result::Result<File, i32>> {
    let (mut reader, writer) = sys::pipe().map_err(|e| Error::io("cannot create a pipe", e))?;
    match sys::fork().map_err(|e| Error::io("cannot fork", e))? {
        sys::Forked::Parent(child) => {
            drop(writer);
            let mut line = Vec::new();
            let _ = reader.read_to_end(&mut line);
            if line.ends_with(b"\n") {
                return Ok(Err(EXIT_OK));
            }
            // The child failed before it was ready and has said why on stderr.
            let code = sys::wait_child(child).map_err(|e| Error::io("cannot wait for the daemon", e))?;
            Ok(Err(if code == EXIT_OK { EXIT_FAILURE } else { code }))
        }
        sys::Forked::Child => {
            log::forget_pid();
            drop(reader);
            sys::setsid().map_err(|e| Error::io("cannot start a session", e))?;
            Ok(Ok(writer))
        }
    }
}

pub(super) fn announce(
    how: Announce,
    socket: &std::path::Path,
    capability: Option<&std::path::Path>,
) -> Result<()> {
    let text = announce_text(how, socket, capability, sys::current_pid().0);
    if text.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| Error::io("stdout", e))
}

/// What `-s`, `-c` or `--print-socket` print (empty for none).
fn announce_text(
    how: Announce,
    socket: &std::path::Path,
    capability: Option<&std::path::Path>,
    pid: i32,
) -> String {
    let mut vars = vec![
        (crate::env::CREDENTIAL_SOCKET, shell_quote(&socket.to_string_lossy())),
        (crate::env::CREDD_PID, pid.to_string()),
    ];
    if let Some(cap) = capability {
        vars.push((crate::env::CAPABILITY_FILE, shell_quote(&cap.to_string_lossy())));
    }
    match how {
        Announce::None => String::new(),
        Announce::Path => format!("{}\n", socket.display()),
        Announce::Sh => vars.iter().map(|(k, v)| format!("{k}={v}; export {k};\n")).collect(),
        Announce::Csh => vars.iter().map(|(k, v)| format!("setenv {k} {v};\n")).collect(),
    }
}

/// Single-quotes `s` for sh and csh.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_datagram() {
        let dir = std::env::temp_dir().join(format!("credd-notify-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        sd_notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("credd-notify-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let abstract_listener = UnixDatagram::bind_addr(&addr).unwrap();
            sd_notify_to(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
            let n = abstract_listener.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }
    }

    #[test]
    fn announcements() {
        let sock = std::path::Path::new("/t/s.sock");
        let cap = std::path::Path::new("/t/cap.env");
        assert_eq!(announce_text(Announce::None, sock, None, 7), "");
        assert_eq!(announce_text(Announce::Path, sock, None, 7), "/t/s.sock\n");
        assert_eq!(
            announce_text(Announce::Sh, sock, Some(cap), 7),
            "LLXPRT_CREDENTIAL_SOCKET='/t/s.sock'; export LLXPRT_CREDENTIAL_SOCKET;\n\
             LLXPRT_CREDD_PID=7; export LLXPRT_CREDD_PID;\n\
             LLXPRT_CAPABILITY_FILE='/t/cap.env'; export LLXPRT_CAPABILITY_FILE;\n"
        );
        assert_eq!(
            announce_text(Announce::Csh, sock, None, 7),
            "setenv LLXPRT_CREDENTIAL_SOCKET '/t/s.sock';\nsetenv LLXPRT_CREDD_PID 7;\n"
        );
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
    }
}
