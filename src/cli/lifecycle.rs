/*!
The daemon's life outside the server: telling whoever started it that it
is ready (stdout closing, `--ready-fd`, `sd_notify`), stopping a daemon
named by the environment (`-k`), and the child of exec mode.
*/
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys::{self, Liveness, ProcessId};

/// The variable naming the daemon's pid (set by `-s`/`-c` and exec mode).
pub const PID_ENV: &str = "LLXPRT_CREDD_PID";
/// The variable naming the socket.
pub const SOCKET_ENV: &str = "LLXPRT_CREDENTIAL_SOCKET";
/// The variable naming the capability env file.
pub const CAPABILITY_FILE_ENV: &str = "LLXPRT_CAPABILITY_FILE";
/// How long `-k` waits for the daemon to go.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

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

/// A running `llxprt-credd` of this user, as `/proc` shows it.
pub struct RunningDaemon {
    pub pid: i32,
    args: Vec<String>,
}

impl RunningDaemon {
    /// Its command line, escaped for a terminal.
    pub fn command_line(&self) -> String {
        crate::log::printable(&self.args.join(" ")).into_owned()
    }

    /// The profile file it serves: its `--profile` (before any `--`),
    /// looked up in its own environment's config directory, as it did.
    pub fn profile_file(&self) -> Option<PathBuf> {
        let mut args = self.args.iter().skip(1).take_while(|a| *a != "--");
        let name = loop {
            let arg = args.next()?;
            if let Some(v) = arg.strip_prefix("--profile=") {
                break v.to_owned();
            }
            if arg == "--profile" {
                break args.next()?.clone();
            }
        };
        let raw = std::fs::read(format!("/proc/{}/environ", self.pid)).ok()?;
        let env: std::collections::HashMap<&[u8], &[u8]> = raw
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let eq = kv.iter().position(|b| *b == b'=')?;
                Some((&kv[..eq], &kv[eq + 1..]))
            })
            .collect();
        let lookup = |name: &str| {
            use std::os::unix::ffi::OsStrExt;
            env.get(name.as_bytes()).map(|v| std::ffi::OsStr::from_bytes(v).to_owned())
        };
        let paths = crate::store::paths::Paths::resolve(&lookup).ok()?;
        Some(crate::profile::profile_file(&paths.profiles_dir(), &name))
    }
}

/// The `llxprt-credd` processes of this user other than this one, from
/// `/proc`, by pid.
pub fn running_daemons() -> Vec<RunningDaemon> {
    use std::os::unix::fs::MetadataExt;
    let me = sys::current_pid().0;
    let uid = sys::current_uid().0;
    let mut found: Vec<RunningDaemon> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            if pid == me || e.metadata().ok()?.uid() != uid {
                return None;
            }
            (sys::process_name(ProcessId(pid))? == "llxprt-credd").then_some(pid)
        })
        .map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            RunningDaemon { pid, args }
        })
        .collect();
    found.sort_by_key(|d| d.pid);
    found
}

/// The pids of this user's other daemons that serve the profile file
/// `file` (the same name in the same config directory).
pub fn daemons_serving(file: &Path) -> Vec<i32> {
    running_daemons()
        .into_iter()
        .filter(|d| d.profile_file().as_deref() == Some(file))
        .map(|d| d.pid)
        .collect()
}

/// Stops the daemon named by `LLXPRT_CREDD_PID`: checks that the pid is an
/// `llxprt-credd` (where the OS tells), sends SIGTERM and waits up to
/// [`KILL_WAIT`] for it to exit.
pub fn kill_from_env() -> Result<ProcessId> {
    let raw = std::env::var(PID_ENV).map_err(|_| {
        let running = running_daemons();
        let listed = if running.is_empty() {
            "no llxprt-credd of yours is running".to_owned()
        } else {
            let lines: Vec<String> =
                running.iter().map(|d| format!("  pid {}: {}", d.pid, d.command_line())).collect();
            format!(
                "yours running now:\n{}\nstop one with: LLXPRT_CREDD_PID=PID llxprt-credd -k",
                lines.join("\n")
            )
        };
        Error::Usage(format!("{PID_ENV} is not set: which daemon should -k stop? {listed}"))
    })?;
    let pid = raw
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|&p| p > 0)
        .map(ProcessId)
        .ok_or_else(|| Error::Usage(format!("{PID_ENV}={raw:?} is not a process id")))?;
    if let Some(name) = sys::process_name(pid).filter(|name| name != "llxprt-credd") {
        return Err(Error::Usage(format!(
            "process {} is {name:?}, not llxprt-credd; not stopping it",
            pid.0
        )));
    }
    sys::send_signal(pid, libc::SIGTERM)
        .map_err(|e| Error::io(format!("cannot signal llxprt-credd pid {}", pid.0), e))?;
    let deadline = Instant::now() + KILL_WAIT;
    while sys::process_liveness(pid) != Liveness::Dead {
        if Instant::now() >= deadline {
            return Err(Error::Connection(format!(
                "llxprt-credd pid {} did not exit within {} s",
                pid.0,
                KILL_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(pid)
}

/// What `-k` prints: commands that unset the variables `-s`/`-c` set.
pub fn unset_text(csh: bool, pid: ProcessId) -> String {
    let mut out = String::new();
    for var in [SOCKET_ENV, PID_ENV, CAPABILITY_FILE_ENV] {
        if csh {
            out.push_str(&format!("unsetenv {var};\n"));
        } else {
            out.push_str(&format!("unset {var};\n"));
        }
    }
    out.push_str(&format!("echo llxprt-credd pid {} stopped;\n", pid.0));
    out
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
    fn unset_commands() {
        let sh = unset_text(false, ProcessId(42));
        assert!(sh.starts_with("unset LLXPRT_CREDENTIAL_SOCKET;\nunset LLXPRT_CREDD_PID;\n"));
        assert!(sh.ends_with("echo llxprt-credd pid 42 stopped;\n"));
        assert!(unset_text(true, ProcessId(42)).starts_with("unsetenv LLXPRT_CREDENTIAL_SOCKET;\n"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGTERM)), 128 + libc::SIGTERM);
        assert_eq!(spawn_failure_code(&io::Error::from(io::ErrorKind::NotFound)), 127);
        assert_eq!(spawn_failure_code(&io::Error::from(io::ErrorKind::PermissionDenied)), 126);
    }

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
}
