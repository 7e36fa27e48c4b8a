/*!
`llxprt-cred bench store`: how fast the host store is. Runs in a private
temporary data directory (and, for the keyring rows, a dedicated keyring
service that is cleaned up afterwards), so it never touches real
credentials. Prints a Markdown table of percentiles.
*/
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::secret::SecretString;
use crate::store::keyring::KeyringStatus;
use crate::store::{Backend, HostStore, MachineSecret, Paths, SecureStore};

const BENCH_SERVICE: &str = "llxprt-credd-bench";
const BENCH_VALUE: &str = r#"{"access_token":"bench-access","expiry":1893456000,"token_type":"Bearer","refresh_token":"bench-refresh"}"#;

/// Percentiles of a set of samples.
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// Summarises samples (sorted in place).
pub fn summarise(samples: &mut [Duration]) -> Summary {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Summary { n: samples.len(), p50: at(0.5), p90: at(0.9), p99: at(0.99) }
}

/// Formats a duration with a unit that suits it.
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 10_000 {
        format!("{:.2} µs", ns as f64 / 1000.0)
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1000.0)
    } else {
        format!("{:.2} ms", ns as f64 / 1e6)
    }
}

fn time(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<Summary> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(summarise(&mut samples))
}

fn row(name: &str, s: &Summary) {
    println!(
        "| {name} | {} | {} | {} | {} |",
        s.n,
        fmt_duration(s.p50),
        fmt_duration(s.p90),
        fmt_duration(s.p99)
    );
}

/// A private temporary directory for a benchmark run.
pub fn temp_root() -> Result<PathBuf> {
    let dir = std::env::temp_dir()
        .join(format!("llxprt-credd-bench-{}", crate::random::hex(6).map_err(|e| Error::io("random", e))?));
    crate::store::paths::create_private_dir(&dir)?;
    Ok(dir)
}

/// Runs the store benchmark. `host` supplies the keyring in force.
pub fn store(host: &HostStore, iterations: usize) -> Result<()> {
    let root = temp_root()?;
    let paths = Paths { data: root.join("data"), log: root.join("log"), config: root.join("config") };
    let secret = Arc::new(MachineSecret::new(None, paths.machine_secret_file(), paths.credential_lock_dir()));
    let file_store = || {
        SecureStore::new(
            BENCH_SERVICE,
            paths.data.join("bench"),
            Backend::File,
            None,
            secret.clone(),
            paths.credential_lock_dir(),
        )
    };
    let value = SecretString::from(BENCH_VALUE);
    let slow_n = iterations.clamp(1, 30);
    println!("| operation | samples | p50 | p90 | p99 |");
    println!("|---|---|---|---|---|");
    let store = file_store();
    row(
        "file write (scrypt + AES-GCM + fsync + rename)",
        &time(slow_n, || Ok(store.set("k", &value).map(|_| ())?))?,
    );
    row("cold file read (scrypt + AES-GCM)", &time(slow_n, || Ok(file_store().get("k").map(|_| ())?))?);
    row("warm cached read", &time(iterations * 50, || Ok(store.get("k").map(|_| ())?))?);
    let mut keyring_rows = 0;
    if let Some(keyring) = host.keyring.as_ref().filter(|k| k.status() == KeyringStatus::Ready) {
        let v = value.clone();
        row(
            "keyring write (Secret Service round trip)",
            &time(slow_n, || {
                let v = v.clone();
                Ok(keyring.call(move |k| k.set(BENCH_SERVICE, "bench", &v))?)
            })?,
        );
        row(
            "keyring read, uncached",
            &time(iterations, || Ok(keyring.call(|k| k.get(BENCH_SERVICE, "bench")).map(|_| ())?))?,
        );
        let _ = keyring.call(|k| k.delete(BENCH_SERVICE, "bench"));
        keyring_rows = 2;
    }
    let _ = std::fs::remove_dir_all(&root);
    if keyring_rows == 0 {
        println!("\n(no OS keyring reachable: keyring rows skipped)");
    }
    Ok(())
}

/// Maps an I/O error to the crate's error with context.
pub fn io(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(what, e)
}

/// Where `llxprt-credd` is: beside this program, else on `PATH`.
pub fn find_credd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("llxprt-credd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("llxprt-credd"))
}

/// A daemon started by a benchmark; stopped with SIGTERM when dropped.
pub struct BenchDaemon {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its pid.
    pub pid: crate::sys::ProcessId,
    /// Time from exec to the socket path on stdout (listening).
    pub ready: Duration,
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        let _ = crate::sys::send_signal(self.pid, libc::SIGTERM);
        let _ = self.child.wait();
    }
}

/// Starts `credd -D --store file` on the store under `root` (config, data
/// and log homes beside each other), listening on `root/sock/NAME.sock`
/// and logging to `root/NAME.log`, without a capability token (the
/// benchmarks measure requests, not the handshake), with `args` and `env`
/// added; returns once it listens.
pub fn start_daemon(
    credd: &Path,
    root: &Path,
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<BenchDaemon> {
    let socket = root.join("sock").join(format!("{name}.sock"));
    let started = Instant::now();
    let mut child = Command::new(credd)
        .args(["-D", "--store", "file", "--no-capability", "--print-socket", "--log-file"])
        .arg(root.join(format!("{name}.log")))
        .arg("--socket")
        .arg(&socket)
        .args(args)
        .env("LLXPRT_CONFIG_HOME", root.join("config"))
        .env("LLXPRT_DATA_HOME", root.join("data"))
        .env("LLXPRT_LOG_HOME", root.join("log"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Error::io(format!("cannot run {}", credd.display()), e))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).map_err(io("daemon stdout"))?;
    let ready = started.elapsed();
    if line.trim() != socket.to_string_lossy() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Connection(format!("the daemon did not start (said {line:?})")));
    }
    let pid = crate::sys::ProcessId(child.id() as i32);
    Ok(BenchDaemon { child, socket, pid, ready })
}

/// Sends one request body as a frame and returns the answer's body.
pub fn exchange(stream: &mut UnixStream, body: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(
        &crate::protocol::frame::encode_frame(body)
            .ok_or_else(|| std::io::Error::other("frame too large"))?,
    )?;
    let mut header = [0u8; crate::protocol::frame::HEADER_LEN];
    stream.read_exact(&mut header)?;
    let len = crate::protocol::frame::frame_len(header).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut answer = vec![0u8; len];
    stream.read_exact(&mut answer)?;
    Ok(answer)
}
