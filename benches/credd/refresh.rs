/*!
The refresh benchmark (`refresh`): the refresh storm. 256 clients ask the
real daemon for the same expired token at once; the provider must be called
once, and every client must be answered within a single refresh's time
plus a small margin.

Everything is private: a temporary file store, the real `llxprt-credd`
binary started on it, and an in-process OAuth token endpoint on 127.0.0.1
that answers after a fixed delay (the upstream round trip). Each round
uses a fresh bucket (the 30 s cooldown is per bucket) whose token is read
once through `get_bucket_stats` first, so the storm measures the refresh,
not the first decryption of the stored entry.

Reported: the provider's round trip measured directly, one store write
(the daemon saves the renewed token before it answers), one client alone
refreshing an expired token (the baseline), and the storm's latencies and
provider calls.
*/

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use llxprt_credd::store::{Backend, HostStore, TokenStore};
use llxprt_credd::token::{OAuthToken, now_unix_seconds};

use crate::fixture::{BenchDaemon, Result, exchange, io, paths, start_daemon, temp_root};
use crate::launch;
use crate::measure::{Summary, fmt_duration, summarise};

/// Clients in one storm.
pub const STORM_CLIENTS: usize = 256;
/// The fake provider's answer delay.
const UPSTREAM_DELAY: Duration = Duration::from_millis(50);
/// Storms (and baseline refreshes) measured.
const ROUNDS: usize = 5;
/// The margin a storm may add to one refresh.
const MARGIN: Duration = Duration::from_millis(20);
const HANDSHAKE: &[u8] = br#"{"v":1,"op":"handshake","payload":{"minVersion":1,"maxVersion":1}}"#;

/// The in-process token endpoint: `/oauth/token` counts as a refresh,
/// any other path only measures the round trip.
struct Upstream {
    base: String,
    refreshes: Arc<AtomicUsize>,
}

fn answer(mut stream: TcpStream, refreshes: &AtomicUsize) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let (head_end, path, len) = loop {
        let Ok(n) = stream.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
            let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
                .unwrap_or(0usize);
            break (p + 4, path, len);
        }
    };
    while buf.len() < head_end + len {
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let n = if path == "/oauth/token" { refreshes.fetch_add(1, Ordering::SeqCst) + 1 } else { 0 };
    std::thread::sleep(UPSTREAM_DELAY);
    let body = format!(
        r#"{{"access_token":"bench-access-{n}","refresh_token":"bench-refresh-{n}","expires_in":3600,"token_type":"Bearer"}}"#
    );
    let _ = stream.write_all(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
}

impl Upstream {
    fn start() -> Result<Upstream> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind the fake provider"))?;
        let base = format!("http://{}", listener.local_addr().map_err(io("local address"))?);
        let refreshes = Arc::new(AtomicUsize::new(0));
        let count = refreshes.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let count = count.clone();
                std::thread::spawn(move || answer(stream, &count));
            }
        });
        Ok(Upstream { base, refreshes })
    }

    /// The round trip of one POST, as the daemon's HTTP client sees it.
    fn round_trip(&self) -> Result<Duration> {
        let agent: ureq::Agent = ureq::Agent::config_builder().proxy(None).build().into();
        let t = Instant::now();
        let mut r = agent
            .post(format!("{}/rtt", self.base))
            .send_form([("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", "bench")])
            .map_err(|e| format!("fake provider: {e}"))?;
        let _ = r.body_mut().read_to_string();
        Ok(t.elapsed())
    }
}

fn start_refresh_daemon(root: &Path, token_url: &str) -> Result<BenchDaemon> {
    let cap = (STORM_CLIENTS + 16).to_string();
    let args =
        ["--allow", "claudecode", "--rate-limit", "0", "--daemon-rate-limit", "0", "--max-connections", &cap];
    start_daemon(root, "refresh", &args, &[("LLXPRT_CREDD_CLAUDECODE_TOKEN_URL", token_url)])
}
fn connect(socket: &Path) -> Result<UnixStream> {
    let mut s = UnixStream::connect(socket).map_err(io("connect"))?;
    exchange(&mut s, HANDSHAKE).map_err(io("handshake"))?;
    Ok(s)
}

fn request(op: &str, bucket: &str) -> Vec<u8> {
    format!(r#"{{"v":1,"id":"b","op":"{op}","payload":{{"provider":"claudecode","bucket":"{bucket}"}}}}"#)
        .into_bytes()
}

fn ok_access(answer: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(answer).ok()?;
    (v["ok"] == true).then(|| v["data"]["access_token"].as_str().map(str::to_owned))?
}

/// Stores an expired token in `bucket` and has the daemon read it once.
fn prepare(host: &HostStore, socket: &Path, bucket: &str) -> Result<()> {
    let token = serde_json::json!({"access_token":"bench-expired","refresh_token":"bench-refresh",
        "expiry": (now_unix_seconds() - 60.0).floor(), "token_type":"Bearer"});
    host.tokens.save_token("claudecode", Some(bucket), &OAuthToken::from_value(token)?)?;
    let mut s = connect(socket)?;
    exchange(&mut s, &request("get_bucket_stats", bucket)).map_err(io("warm-up"))?;
    Ok(())
}

/// One storm: latencies of every client, and whether all got the same
/// renewed token.
fn storm(socket: &Path, bucket: &str) -> Result<(Vec<Duration>, bool)> {
    let barrier = Arc::new(Barrier::new(STORM_CLIENTS));
    let req = Arc::new(request("get_token", bucket));
    let mut threads = Vec::with_capacity(STORM_CLIENTS);
    for _ in 0..STORM_CLIENTS {
        let mut stream = connect(socket)?;
        let (barrier, req) = (barrier.clone(), req.clone());
        threads.push(std::thread::spawn(move || -> std::io::Result<(Duration, Option<String>)> {
            barrier.wait();
            let t = Instant::now();
            let answer = exchange(&mut stream, &req)?;
            Ok((t.elapsed(), ok_access(&answer)))
        }));
    }
    let mut latencies = Vec::with_capacity(STORM_CLIENTS);
    let mut tokens = Vec::with_capacity(STORM_CLIENTS);
    for t in threads {
        let (d, token) = t.join().map_err(|_| "a client thread panicked")?.map_err(io("storm"))?;
        latencies.push(d);
        tokens.push(token);
    }
    let same = tokens[0].is_some() && tokens.iter().all(|t| t == &tokens[0]);
    Ok((latencies, same))
}

fn row(what: &str, s: &Summary, max: Duration) {
    println!(
        "| {what} | {} | {} | {} | {} | {} |",
        s.n,
        fmt_duration(s.p50),
        fmt_duration(s.p90),
        fmt_duration(s.p99),
        fmt_duration(max)
    );
}

/// Runs the refresh-storm benchmark.
pub fn refresh() -> Result<()> {
    let root = temp_root()?;
    let result = run(&root);
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn run(root: &Path) -> Result<()> {
    let host = HostStore::open_at(paths(root), Backend::File)?;
    let upstream = Upstream::start()?;
    let daemon = start_refresh_daemon(root, &format!("{}/oauth/token", upstream.base))?;

    let mut rtt = (0..20).map(|_| upstream.round_trip()).collect::<Result<Vec<_>>>()?;
    let rtt = summarise(&mut rtt);
    let sample = OAuthToken::from_value(serde_json::json!({"access_token":"a","refresh_token":"r",
        "expiry": 1893456000, "token_type":"Bearer"}))?;
    let mut writes = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        host.tokens.save_token("claudecode", Some("bench-write"), &sample)?;
        writes.push(t.elapsed());
    }
    let writes = summarise(&mut writes);

    let mut single = Vec::new();
    for r in 0..ROUNDS {
        let bucket = format!("single-{r}");
        prepare(&host, &daemon.socket, &bucket)?;
        let mut s = connect(&daemon.socket)?;
        let t = Instant::now();
        let answer = exchange(&mut s, &request("get_token", &bucket)).map_err(io("get_token"))?;
        single.push(t.elapsed());
        if ok_access(&answer).is_none() {
            return Err(format!("refresh failed: {}", String::from_utf8_lossy(&answer)).into());
        }
    }
    let calls_before = upstream.refreshes.load(Ordering::SeqCst);
    let single_max = single.iter().copied().max().unwrap_or_default();
    let single = summarise(&mut single);

    let mut all = Vec::new();
    let mut worst_over = Duration::ZERO;
    let mut storms_ok = true;
    let mut per_storm_calls = Vec::new();
    let mut per_storm = Vec::new();
    for r in 0..ROUNDS {
        let bucket = format!("storm-{r}");
        prepare(&host, &daemon.socket, &bucket)?;
        let before = upstream.refreshes.load(Ordering::SeqCst);
        let (latencies, same) = storm(&daemon.socket, &bucket)?;
        per_storm_calls.push(upstream.refreshes.load(Ordering::SeqCst) - before);
        storms_ok &= same;
        let max = latencies.iter().copied().max().unwrap_or_default();
        let min = latencies.iter().copied().min().unwrap_or_default();
        per_storm.push((min, max));
        worst_over = worst_over.max(max.saturating_sub(single.p50));
        all.extend(latencies);
    }
    let storm_max = all.iter().copied().max().unwrap_or_default();
    let storm = summarise(&mut all);

    println!(
        "Daemon: {} (file store, audit log at info level to a file, rate limit off); fake provider on 127.0.0.1 answering after {} ms\n",
        launch::CREDD,
        UPSTREAM_DELAY.as_millis()
    );
    println!("| measurement | samples | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    row("provider round trip (direct POST)", &rtt, rtt.p99);
    row("store write (scrypt + AES-GCM + fsync + rename)", &writes, writes.p99);
    row("one client, expired token (baseline refresh)", &single, single_max);
    row(&format!("{STORM_CLIENTS} clients at once, expired token ({ROUNDS} storms)"), &storm, storm_max);
    println!();
    println!("| storm | provider calls | fastest client | slowest client | slowest - fastest |");
    println!("|---|---|---|---|---|");
    for (i, ((min, max), calls)) in per_storm.iter().zip(&per_storm_calls).enumerate() {
        println!(
            "| {} | {calls} | {} | {} | {} |",
            i + 1,
            fmt_duration(*min),
            fmt_duration(*max),
            fmt_duration(max.saturating_sub(*min))
        );
    }
    println!();
    println!(
        "Provider calls: {calls_before} for {ROUNDS} baseline refreshes; per storm of {STORM_CLIENTS} clients: {per_storm_calls:?}; every client of a storm got the same token: {}",
        if storms_ok { "yes" } else { "NO" }
    );
    println!(
        "Slowest storm client minus the baseline refresh (p50): {} (target: at most {}); minus the provider round trip: {} (the store write, {} p50, is part of every refresh)",
        fmt_duration(worst_over),
        fmt_duration(MARGIN),
        fmt_duration(storm_max.saturating_sub(rtt.p50)),
        fmt_duration(writes.p50)
    );
    if per_storm_calls.iter().any(|&c| c != 1) || !storms_ok {
        return Err("a storm made more than one provider call or answered differently".into());
    }
    Ok(())
}
