//! What every benchmark stands on: the result type, a private temporary
//! directory, the real daemon started in it (through the integration
//! tests' launcher), and one request/response exchange in frames.

use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use llxprt_credd::protocol::frame;
use llxprt_credd::store::Paths;

use crate::launch;

/// A benchmark's failure, printed once by `main`.
pub type Error = Box<dyn std::error::Error>;
/// Result alias for the benchmarks.
pub type Result<T> = std::result::Result<T, Error>;

/// Maps an I/O error to a failure that says what was being done.
pub fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| format!("{what}: {e}").into()
}

/// A private temporary directory for a benchmark run (mode 0700, created
/// afresh: a directory already there is an error, never reused).
pub fn temp_root() -> Result<PathBuf> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let dir = std::env::temp_dir().join(format!("llxprt-credd-bench-{}-{nanos:x}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(io("temporary directory"))?;
    Ok(dir)
}

/// The store under a benchmark's `root`: config, data and log homes beside
/// each other (what [`start_daemon`] gives the daemon).
pub fn paths(root: &Path) -> Paths {
    Paths { data: root.join("data"), log: root.join("log"), config: root.join("config") }
}

/// A daemon started by a benchmark; stopped with SIGTERM when dropped.
pub struct BenchDaemon {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its pid.
    pub pid: u32,
    /// Time from exec to the socket path on stdout (listening).
    pub ready: Duration,
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill has no memory arguments; the pid is our child's,
            // not yet reaped (we wait for it below).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = self.child.wait();
    }
}

/// Starts `llxprt-credd -D --store file` on the store under `root` (see
/// [`paths`]), listening on `root/sock/NAME.sock` and logging to
/// `root/NAME.log` at the default level, without a capability token (the
/// benchmarks measure requests, not the handshake), with `args` and `env`
/// added; returns once it listens.
pub fn start_daemon(root: &Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> Result<BenchDaemon> {
    let socket = root.join("sock").join(format!("{name}.sock"));
    let log = root.join(format!("{name}.log"));
    let store = paths(root);
    let started = Instant::now();
    let mut cmd = Command::new(launch::CREDD);
    cmd.env("LLXPRT_CONFIG_HOME", &store.config)
        .env("LLXPRT_DATA_HOME", &store.data)
        .env("LLXPRT_LOG_HOME", &store.log)
        .envs(env.iter().copied());
    let all: Vec<&str> = ["--no-capability"].iter().chain(args).copied().collect();
    let child = launch::start_foreground(cmd, &socket, &log, &all)?;
    let ready = started.elapsed();
    let pid = child.id();
    Ok(BenchDaemon { child, socket, pid, ready })
}

/// Sends one request body as a frame and returns the answer's body.
pub fn exchange(stream: &mut UnixStream, body: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(&frame::encode_frame(body).ok_or_else(|| std::io::Error::other("frame too large"))?)?;
    let mut header = [0u8; frame::HEADER_LEN];
    stream.read_exact(&mut header)?;
    let len = frame::frame_len(header).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut answer = vec![0u8; len];
    stream.read_exact(&mut answer)?;
    Ok(answer)
}
