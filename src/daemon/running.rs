/*!
The other `llxprt-credd` processes of this user, as `/proc` shows them:
listed by `llxprt-cred doctor` and by `-k` when it does not know which to
stop, warned of when one already serves the same profile, and stopped by
`-k` (the daemon named by `LLXPRT_CREDD_PID`).
*/
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{CAPABILITY_FILE_ENV, PID_ENV, SOCKET_ENV};
use crate::error::{Error, Result};
use crate::log;
use crate::profile;
use crate::sys::{self, Liveness, ProcessId};

/// How long `-k` waits for the daemon to go.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

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
        Error::Environment(format!("{PID_ENV} is not set: which daemon should -k stop? {listed}"))
    })?;
    let pid = raw
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|&p| p > 0)
        .map(ProcessId)
        .ok_or_else(|| Error::Environment(format!("{PID_ENV}={raw:?} is not a process id")))?;
    if let Some(name) = sys::process_name(pid).filter(|name| name != "llxprt-credd") {
        return Err(Error::Environment(format!(
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

/// Whether `$SHELL` is a C shell (ssh-agent's guess when neither -s nor -c
/// is given).
pub(super) fn shell_is_csh() -> bool {
    std::env::var("SHELL").is_ok_and(|s| s.ends_with("csh"))
}

/// Says so (on stderr as well when the log goes to a file) when another
/// daemon of this user serves the same profile file: both work, but one
/// was probably meant to be stopped.
pub(super) fn warn_of_another_daemon(name: &str, logs_to_file: bool) {
    let Ok(paths) = crate::store::paths::Paths::from_env() else { return };
    let file = profile::profile_file(&paths.profiles_dir(), name);
    let Some(pid) = daemons_serving(&file).first().copied() else { return };
    let text = format!(
        "another llxprt-credd (pid {pid}) already serves profile {}; both work, but to keep one \
         stop the other: LLXPRT_CREDD_PID={pid} llxprt-credd -k",
        log::printable(name)
    );
    crate::log_warn!("{text}");
    if logs_to_file {
        eprintln!("llxprt-credd: warning: {text}");
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
}
