/*!
The soak (`soak`): does the real daemon stay the same size under
hours of ordinary traffic?

It stores a token and two API keys in a private temporary file store,
starts the real `llxprt-credd` binary on it (64 connections, the default
cap; the rate limits off, because this one process stands for 64 client
processes and the limits count per process; audit log at the default
level, to a file in the temporary directory), and runs 64 connections of
mixed requests, each paced at 60 requests/s (the per-process default),
for the given minutes: reads of the
token and the keys, lists, stats, a request outside the scope, a malformed
request, and once a minute per connection a `save_token` (a real encrypted
write). Every connection reconnects every 30 s (staggered), so connection
threads come and go all the time.

It samples the daemon's resident memory (`VmRSS`), open descriptors
(`/proc/PID/fd`) and threads (`/proc/PID/status`) idle before the load,
once the load runs, every minute, at the end of the load and idle after
it, prints a Markdown table, and fails when memory grew by more than
[`RSS_GROWTH_KIB`] or descriptors or threads did not come back.
*/

use std::io::ErrorKind;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use llxprt_credd::store::{Backend, HostStore, KeyStore, TokenStore};
use llxprt_credd::token::{OAuthToken, now_unix_seconds};

use crate::fixture::{BenchDaemon, Result, exchange, io, paths, start_daemon, temp_root};
use crate::measure::{fmt_duration, summarise};
use crate::{launch, procfs};

/// Exit code when the soak passes.
const EXIT_OK: i32 = 0;
/// Exit code when something grew or requests failed.
const EXIT_FAILURE: i32 = 1;

const TOKEN: &str = r#"{"access_token":"soak-access-token","refresh_token":"soak-refresh","expiry":1893456000,"token_type":"Bearer"}"#;
/// Connections, as many as the daemon's default cap.
const CONNECTIONS: usize = 64;
/// Requests per second per connection: the daemon's default per-process rate limit.
const RATE_PER_SECOND: u32 = 60;
/// Each connection closes and reconnects this often.
const RECONNECT_EVERY: Duration = Duration::from_secs(30);
/// Allowed growth of resident memory from the start of the load to its
/// end, and from idle before to idle after.
pub const RSS_GROWTH_KIB: u64 = 4096;
/// Descriptors and threads may differ this much between two samples under
/// load (a connection may be between its close and its reconnect).
const UNDER_LOAD_SLACK: i64 = 4;

/// The requests one connection cycles through; `save_token` is sent
/// separately, once a minute.
fn mix() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    vec![
        ("get_token", json!({"provider": "claudecode"})),
        ("get_api_key", json!({"name": "OPENAI"})),
        ("has_api_key", json!({"name": "GEMINI"})),
        ("list_api_keys", json!({})),
        ("list_providers", json!({})),
        ("list_buckets", json!({"provider": "claudecode"})),
        ("get_bucket_stats", json!({"provider": "claudecode"})),
        ("get_api_key", json!({"name": "OUTSIDE"})),
        ("get_token", json!({"provider": ""})),
    ]
}

/// One request/response exchange; the response body.
fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let r = exchange(&mut s, br#"{"v":1,"op":"handshake","payload":{"minVersion":1,"maxVersion":2}}"#)?;
    if !contains(&r, br#""ok":true"#) {
        return Err(std::io::Error::other(format!("handshake refused: {}", String::from_utf8_lossy(&r))));
    }
    Ok(s)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Counters shared by the load threads.
#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    rate_limited: AtomicU64,
    unexpected: AtomicU64,
    reconnects: AtomicU64,
    /// Reconnects refused at the cap (the old connection's thread had not
    /// ended yet): retried after 100 ms.
    refused: AtomicU64,
    /// The first few unexpected answers or errors, for the report.
    examples: std::sync::Mutex<Vec<String>>,
}

impl Counters {
    fn unexpected(&self, what: String) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
        let mut examples = self.examples.lock().unwrap_or_else(|e| e.into_inner());
        if examples.len() < 5 {
            examples.push(what);
        }
    }
}

/// One connection's loop until `stop`; its round-trip times.
fn load(socket: PathBuf, index: usize, stop: Arc<AtomicBool>, counters: Arc<Counters>) -> Vec<Duration> {
    let mix = mix();
    let interval = Duration::from_secs(1) / RATE_PER_SECOND;
    let mut samples = Vec::new();
    // Stagger the reconnects and the writes over their periods.
    let phase = RECONNECT_EVERY.mul_f64(index as f64 / CONNECTIONS as f64);
    let mut reconnect_at = Instant::now() + phase;
    let mut save_at = Instant::now() + Duration::from_secs(60).mul_f64(index as f64 / CONNECTIONS as f64);
    let mut stream = None;
    let mut next = Instant::now();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            next = now; // fell far behind: do not burst past the bucket
        }
        next += interval;
        if now >= reconnect_at {
            stream = None;
            reconnect_at += RECONNECT_EVERY;
            counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match connect(&socket) {
                Ok(s) => stream.insert(s),
                Err(e)
                    if e.to_string().contains("Too many connections")
                        || matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) =>
                {
                    // our previous connection's thread has not ended yet: refused
                    // at the cap (the refusal may close before our handshake is written)
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                Err(e) => {
                    counters.unexpected(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            },
        };
        n += 1;
        let (op, payload) = if Instant::now() >= save_at {
            save_at += Duration::from_secs(60);
            let expiry = (now_unix_seconds() + 3600.0).floor();
            let token = serde_json::json!({"access_token": format!("soak-{index}-{n}"), "expiry": expiry,
                "token_type": "Bearer"});
            ("save_token", serde_json::json!({"provider": "claudecode", "token": token}))
        } else {
            let (op, p) = &mix[(n as usize) % mix.len()];
            (*op, p.clone())
        };
        let request =
            serde_json::json!({"v": 1, "id": format!("s{index}-{n}"), "op": op, "payload": payload});
        let t = Instant::now();
        let body = match exchange(s, request.to_string().as_bytes()) {
            Ok(b) => b,
            Err(e) => {
                counters.unexpected(format!("{op}: {e}"));
                stream = None;
                continue;
            }
        };
        samples.push(t.elapsed());
        counters.requests.fetch_add(1, Ordering::Relaxed);
        let ok = contains(&body, br#""ok":true"#);
        let expected_error =
            (op == "get_api_key" && payload["name"] == "OUTSIDE" && contains(&body, b"UNAUTHORIZED"))
                || (op == "get_token" && payload["provider"] == "" && contains(&body, b"INVALID_REQUEST"));
        if contains(&body, b"RATE_LIMITED") {
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        } else if !ok && !expected_error {
            counters.unexpected(format!("{op}: {}", String::from_utf8_lossy(&body)));
        }
    }
    samples
}

/// The daemon's resident memory, descriptors and threads.
#[derive(Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: i64,
    threads: i64,
}

fn sample(pid: u32) -> Sample {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(-1, |d| d.count() as i64);
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(-1);
    Sample { rss_kib: procfs::rss_kib(pid).unwrap_or(0), fds, threads }
}

/// Samples idle `pid` until two in a row agree on descriptors and threads
/// (connection threads finish a moment after their clients close), at
/// most 5 s.
fn settled(pid: u32) -> Sample {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = sample(pid);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = sample(pid);
        if (now.fds == last.fds && now.threads == last.threads) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn row(label: &str, at: Duration, s: Sample, counters: &Counters) {
    println!(
        "| {label} | {:.0} s | {:.1} MiB | {} | {} | {} | {} | {} |",
        at.as_secs_f64(),
        s.rss_kib as f64 / 1024.0,
        s.fds,
        s.threads,
        counters.requests.load(Ordering::Relaxed),
        counters.rate_limited.load(Ordering::Relaxed),
        counters.unexpected.load(Ordering::Relaxed),
    );
}

fn start(root: &Path) -> Result<BenchDaemon> {
    let args = [
        "--permit",
        "write",
        "--allow",
        "claudecode",
        "--allow-key",
        "OPENAI",
        "--allow-key",
        "GEMINI",
        "--rate-limit",
        "0",
        "--daemon-rate-limit",
        "0",
    ];
    start_daemon(root, "daemon", &args, &[])
}
/// Runs the soak for `minutes`; the exit code (1 when something grew or
/// requests failed).
pub fn soak(minutes: u64) -> Result<i32> {
    let root = temp_root()?;
    let result = run(&root, Duration::from_secs(minutes * 60));
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn run(root: &Path, length: Duration) -> Result<i32> {
    let host = HostStore::open_at(paths(root), Backend::File)?;
    let token: serde_json::Map<String, serde_json::Value> = serde_json::from_str(TOKEN)?;
    host.tokens.save_token("claudecode", None, &OAuthToken::from_map(token)?)?;
    host.keys.save_key("OPENAI", "sk-soak-openai")?;
    host.keys.save_key("GEMINI", "soak-gemini")?;
    let daemon = start(root)?;
    let socket = daemon.socket.clone();

    // Warm the cache (the first read decrypts: scrypt), then the idle baseline.
    let mut warm = connect(&socket).map_err(io("warm-up"))?;
    for op in [
        &br#"{"v":1,"id":"w1","op":"get_token","payload":{"provider":"claudecode"}}"#[..],
        br#"{"v":1,"id":"w2","op":"get_api_key","payload":{"name":"OPENAI"}}"#,
    ] {
        let r = exchange(&mut warm, op).map_err(io("warm-up"))?;
        if !contains(&r, br#""ok":true"#) {
            return Err(format!("warm-up failed: {}", String::from_utf8_lossy(&r)).into());
        }
    }
    drop(warm);
    let idle_before = settled(daemon.pid);

    println!(
        "Soak: {} connections × {} requests/s for {} min against {} (file store, the connection cap, rate limits off: one process plays every client; audit log to a file)\n",
        CONNECTIONS,
        RATE_PER_SECOND,
        length.as_secs() / 60,
        launch::CREDD
    );
    println!("| sample | time | RSS | fds | threads | requests | rate limited | unexpected |");
    println!("|---|---|---|---|---|---|---|---|");
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    row("idle before", Duration::ZERO, idle_before, &counters);

    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let (socket, stop, counters) = (socket.clone(), stop.clone(), counters.clone());
            std::thread::spawn(move || load(socket, i, stop, counters))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(10).min(length / 4));
    let load_start = sample(daemon.pid);
    row("load start", started.elapsed(), load_start, &counters);
    let mut minute = 1;
    while started.elapsed() < length {
        let next_minute = Duration::from_secs(60 * minute);
        let until = next_minute.min(length).saturating_sub(started.elapsed());
        std::thread::sleep(until);
        if started.elapsed() >= next_minute && next_minute < length {
            row(&format!("minute {minute}"), started.elapsed(), sample(daemon.pid), &counters);
        }
        minute += 1;
    }
    let load_end = sample(daemon.pid);
    row("load end", started.elapsed(), load_end, &counters);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in threads {
        latencies.extend(t.join().map_err(|_| "a load thread panicked")?);
    }
    let idle_after = settled(daemon.pid);
    row("idle after", started.elapsed(), idle_after, &counters);

    let requests = counters.requests.load(Ordering::Relaxed);
    let lat = summarise(&mut latencies);
    println!(
        "\n{requests} requests ({:.0}/s), {} reconnects ({} refused at the cap and retried); round trip p50 {}, p99 {}.",
        requests as f64 / length.as_secs_f64(),
        counters.reconnects.load(Ordering::Relaxed),
        counters.refused.load(Ordering::Relaxed),
        fmt_duration(lat.p50),
        fmt_duration(lat.p99)
    );
    let mut failures = Vec::new();
    let grew = |a: Sample, b: Sample| b.rss_kib.saturating_sub(a.rss_kib);
    if grew(load_start, load_end) > RSS_GROWTH_KIB {
        failures.push(format!("memory grew {} KiB under load", grew(load_start, load_end)));
    }
    if grew(idle_before, idle_after) > RSS_GROWTH_KIB {
        failures.push(format!("idle memory grew {} KiB", grew(idle_before, idle_after)));
    }
    if (load_end.fds - load_start.fds).abs() > UNDER_LOAD_SLACK
        || (load_end.threads - load_start.threads).abs() > UNDER_LOAD_SLACK
    {
        failures.push("descriptors or threads drifted under load".into());
    }
    if idle_after.fds != idle_before.fds || idle_after.threads != idle_before.threads {
        failures.push(format!(
            "idle descriptors/threads {}/{} before, {}/{} after",
            idle_before.fds, idle_before.threads, idle_after.fds, idle_after.threads
        ));
    }
    for e in counters.examples.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!("unexpected: {e}");
    }
    if counters.unexpected.load(Ordering::Relaxed) > 0 {
        failures
            .push(format!("{} unexpected answers or errors", counters.unexpected.load(Ordering::Relaxed)));
    }
    let log_size = std::fs::metadata(root.join("daemon.log")).map_or(0, |m| m.len());
    println!("Audit log: {:.1} MiB.", log_size as f64 / (1024.0 * 1024.0));
    if failures.is_empty() {
        println!("PASS: no growth in memory (limit {RSS_GROWTH_KIB} KiB), descriptors or threads.");
        Ok(EXIT_OK)
    } else {
        for f in &failures {
            println!("FAIL: {f}");
        }
        Ok(EXIT_FAILURE)
    }
}
