//! The abuse suite: the real daemon (the default cap of 64 connections;
//! the request rate limits off, because they count per client process and
//! here one test process plays both the attacker and the healthy client;
//! the limits have their own tests in `hardening.rs`) against a
//! 1000-connection flood, slowloris
//! connections, oversized and malformed frames by the thousand, rapid
//! connect/disconnect, and a client that never reads its answers.
//!
//! Throughout, a healthy client that connected first (as a sandbox's
//! client library does) keeps asking for an API key at 50 requests/s;
//! each of its round trips must stay within [`LATENCY_BUDGET`] at the 99th
//! percentile. Afterwards the daemon's threads (`/proc/PID/status`) come
//! back to what they were before, and its resident memory to within
//! [`RSS_SLACK_KIB`] of it.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

/// p99 of the healthy client's round trips while the abuse runs.
const LATENCY_BUDGET: Duration = Duration::from_millis(50);
/// How far above its pre-abuse resident memory the daemon may end.
const RSS_SLACK_KIB: u64 = 4096;
/// The daemon's default connection cap.
const CAP: usize = 64;

fn seeded(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.set_key("OPENAI", "sk-PLANTED-KEY");
    dir.import_token("anthropic", r#"{"access_token":"at-PLANTED-abuse","refresh_token":"rt-CANARY-abuse","expiry":1999999999,"token_type":"Bearer"}"#);
    dir
}

/// Raises this process's soft descriptor limit to `want` when it is lower
/// (the flood holds 1000 sockets; the daemon inherits the limit).
fn raise_nofile(want: u64) {
    let soft = || {
        let out = std::process::Command::new("sh").args(["-c", "ulimit -n"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap_or(u64::MAX)
    };
    if soft() < want {
        let st = std::process::Command::new("prlimit")
            .args(["--pid", &std::process::id().to_string(), &format!("--nofile={want}:")])
            .status()
            .expect("prlimit (util-linux)");
        assert!(st.success(), "cannot raise RLIMIT_NOFILE to {want}");
    }
}

/// The daemon's resident memory (KiB) and thread count.
fn vitals(d: &Daemon) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line[name.len()..].trim().trim_end_matches("kB").trim().parse().unwrap()
    };
    (field("VmRSS:"), field("Threads:") as usize)
}

/// A started daemon, warmed up (the store's cache, a full set of
/// connection threads once), with a healthy client attached and the
/// baseline taken.
struct Scene {
    d: Daemon,
    probe: Probe,
    baseline: (u64, usize),
}

impl Scene {
    fn start(dir: &TestDir, env: &[(&str, &str)]) -> Scene {
        raise_nofile(4096);
        let d = dir.daemon_with_env(
            &[
                "--allow-key",
                "OPENAI",
                "--allow",
                "anthropic",
                "--rate-limit",
                "0",
                "--daemon-rate-limit",
                "0",
            ],
            env,
        );
        // Warm-up: the store's cache (a cold read decrypts, and scrypt
        // takes 16 MiB), and every connection thread the cap allows, once,
        // so the allocator's per-thread arenas exist before the baseline.
        let mut warm: Vec<Raw> = (0..CAP).map(|_| d.connect()).collect();
        for c in &mut warm {
            c.handshake();
            assert_eq!(c.request("get_api_key", json!({"name":"OPENAI"}))["ok"], true);
            assert_eq!(c.request("get_token", json!({"provider":"anthropic"}))["ok"], true);
        }
        drop(warm);
        let probe = Probe::start(&d);
        steady_threads(&d);
        std::thread::sleep(Duration::from_millis(200));
        let baseline = vitals(&d);
        Scene { d, probe, baseline }
    }

    /// Stops the healthy client (its latency within budget, every answer
    /// right) and checks threads and memory came back.
    fn finish(self, what: &str) {
        let (threads, rss) = (self.baseline.1, self.baseline.0);
        let after_threads = settle_threads(&self.d, threads);
        assert_eq!(after_threads, threads, "{what}: threads back to the baseline");
        std::thread::sleep(Duration::from_millis(300));
        let (after_rss, _) = vitals(&self.d);
        eprintln!(
            "{what}: RSS {rss} KiB before, {after_rss} KiB after; threads {threads} before, {after_threads} after"
        );
        assert!(after_rss <= rss + RSS_SLACK_KIB, "{what}: RSS {after_rss} KiB after, {rss} KiB before");
        let samples = self.probe.stop();
        let (n, p50, p99, max) = percentiles(samples);
        eprintln!("{what}: healthy client {n} round trips, p50 {p50:?}, p99 {p99:?}, max {max:?}");
        assert!(n >= 20, "{what}: the healthy client made {n} round trips");
        assert!(p99 < LATENCY_BUDGET, "{what}: healthy p99 {p99:?} over {LATENCY_BUDGET:?}");
        // and a newcomer is served
        let mut c = self.d.connect();
        c.handshake();
        assert_eq!(c.request("get_api_key", json!({"name":"OPENAI"}))["data"]["key"], "sk-PLANTED-KEY");
    }
}

/// Waits until the daemon's thread count holds still for 300 ms (the
/// warm-up's connection threads have ended).
fn steady_threads(d: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut last, mut still) = (vitals(d).1, 0);
    while still < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = vitals(d).1;
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
}

/// Waits (up to 10 s) for the daemon's thread count to come down to
/// `want`; the count it ended at.
fn settle_threads(d: &Daemon, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, threads) = vitals(d);
        if threads <= want || Instant::now() > deadline {
            return threads;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn percentiles(mut s: Vec<Duration>) -> (usize, Duration, Duration, Duration) {
    s.sort();
    let at = |q: f64| s[((s.len() as f64 - 1.0) * q).round() as usize];
    (s.len(), at(0.5), at(0.99), *s.last().unwrap())
}

/// The healthy client: one connection, `get_api_key` every 20 ms.
struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Duration>>,
}

impl Probe {
    fn start(d: &Daemon) -> Probe {
        let mut c = d.connect();
        c.handshake();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = c.request("get_api_key", json!({"name":"OPENAI"}));
                samples.push(t.elapsed());
                assert_eq!(r["data"]["key"], "sk-PLANTED-KEY", "the healthy client is served: {r}");
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        });
        Probe { stop, thread }
    }

    fn stop(self) -> Vec<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the healthy client")
    }
}

/// Reads one frame if its first byte is already there (a refusal is
/// written in one piece); `None` when nothing has arrived.
fn try_recv(s: &mut UnixStream) -> Option<serde_json::Value> {
    let mut header = [0u8; 4];
    s.set_nonblocking(true).unwrap();
    let got = s.read(&mut header[..1]);
    s.set_nonblocking(false).unwrap();
    match got {
        Ok(1) => {}
        Ok(_) => panic!("closed without a refusal frame"),
        Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
        Err(e) => panic!("read: {e}"),
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut header[1..]).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut body).unwrap();
    let text = String::from_utf8_lossy(&body);
    check_answer(&text);
    Some(serde_json::from_str(&text).unwrap())
}

#[test]
fn a_flood_of_1000_connections_is_capped_and_the_healthy_client_keeps_its_latency() {
    let dir = seeded("abuse-flood");
    let scene = Scene::start(&dir, &[]);
    let started = Instant::now();
    let mut conns: Vec<UnixStream> =
        (0..1000).map(|_| UnixStream::connect(&scene.d.socket).unwrap()).collect();
    let opened = started.elapsed();
    // Over the cap (the healthy client holds one slot): RATE_LIMITED and a
    // close, at once. Under it: an idle connection the daemon keeps.
    let mut refused = vec![false; conns.len()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while refused.iter().filter(|r| **r).count() < conns.len() - (CAP - 1) && Instant::now() < deadline {
        for (i, c) in conns.iter_mut().enumerate() {
            if let Some(r) = (!refused[i]).then(|| try_recv(c)).flatten() {
                assert_eq!(r["code"], "RATE_LIMITED", "{r}");
                assert_eq!(r["retryAfter"], 1, "{r}");
                refused[i] = true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let admitted: Vec<usize> = (0..conns.len()).filter(|i| !refused[*i]).collect();
    assert_eq!(admitted.len(), CAP - 1, "the cap admits 63 besides the healthy client");
    assert_eq!(admitted, (0..CAP - 1).collect::<Vec<_>>(), "first come, first served");
    // the refused are closed; some of the admitted handshake and are served
    for (i, c) in conns.iter_mut().enumerate().filter(|(i, _)| refused[*i]).step_by(50) {
        let mut b = [0u8; 1];
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(c.read(&mut b), Ok(0) | Err(_)), "refused connection {i} is closed");
    }
    for i in admitted.iter().step_by(4) {
        let mut raw = Raw::from_stream(conns[*i].try_clone().unwrap());
        raw.handshake();
        assert_eq!(raw.request("get_api_key", json!({"name":"OPENAI"}))["ok"], true);
    }
    eprintln!(
        "flood: 1000 connections opened in {opened:?}, {} refused, {} admitted",
        1000 - admitted.len(),
        admitted.len()
    );
    let log = scene.d.log_text();
    assert!(log.matches("refused: 64 connections open (cap)").count() >= 900, "each refusal is logged");
    conns.clear();
    scene.finish("flood");
}

#[test]
fn slowloris_connections_are_cut_at_the_partial_frame_deadline() {
    let dir = seeded("abuse-slowloris");
    let scene = Scene::start(&dir, &[]);
    // 200 connections trickle one byte every 250 ms: 63 are admitted (half
    // of them handshake first, so the trickle is a request), the rest refused.
    let request = frame(
        json!({"v":1,"id":"slow","op":"get_api_key","payload":{"name":"OPENAI"}}).to_string().as_bytes(),
    );
    let mut conns: Vec<(UnixStream, usize, Option<Duration>)> = Vec::new();
    for i in 0..200 {
        let mut s = UnixStream::connect(&scene.d.socket).unwrap();
        if i % 2 == 0 && i < CAP - 1 {
            let mut raw = Raw::from_stream(s.try_clone().unwrap());
            raw.handshake();
        }
        s.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
        let _ = s.write_all(&request[..1]);
        conns.push((s, 1, None));
    }
    let started = Instant::now();
    while conns.iter().any(|c| c.2.is_none()) && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(250));
        for (s, sent, cut) in conns.iter_mut().filter(|c| c.2.is_none()) {
            // the request would finish after 25 s at this pace
            let at = (*sent).min(request.len() - 1);
            if s.write_all(&request[at..at + 1]).is_err() {
                *cut = Some(started.elapsed());
            } else {
                *sent += 1;
            }
        }
    }
    let admitted: Vec<Duration> =
        conns[..CAP - 1].iter().map(|c| c.2.expect("an admitted slowloris is cut")).collect();
    let latest = admitted.iter().max().unwrap();
    let earliest = admitted.iter().min().unwrap();
    eprintln!("slowloris: admitted ones cut between {earliest:?} and {latest:?}");
    assert!(
        *earliest >= Duration::from_millis(4000),
        "not before the 5 s partial-frame deadline: {earliest:?}"
    );
    assert!(*latest <= Duration::from_secs(8), "at the 5 s deadline: {latest:?}");
    assert!(conns[CAP - 1..].iter().all(|c| c.2.is_some()), "the refused are closed");
    scene.finish("slowloris");
}

#[test]
fn thousands_of_oversized_and_malformed_frames_get_errors_or_closes() {
    let dir = seeded("abuse-frames");
    let scene = Scene::start(&dir, &[]);
    let socket = scene.d.socket.clone();
    // Frame-level garbage after a handshake: an error answer and a close.
    let fatal: Vec<Vec<u8>> = vec![
        u32::MAX.to_be_bytes().to_vec(),
        (64 * 1024 + 1u32).to_be_bytes().to_vec(),
        [(1u32 << 31).to_be_bytes().to_vec(), vec![b'x'; 1000]].concat(),
        0u32.to_be_bytes().to_vec(),
    ];
    // Well-framed nonsense: an error answer each, the connection goes on.
    let depth_bomb = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let nonsense: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"[]".to_vec(),
        b"{\"v\":1}".to_vec(),
        b"{\"v\":99,\"id\":\"x\",\"op\":\"get_api_key\",\"payload\":{}}".to_vec(),
        b"{\"v\":1,\"id\":\"x\",\"op\":\"no_such_op\",\"payload\":{}}".to_vec(),
        b"{\"v\":1,\"id\":\"x\",\"op\":\"get_api_key\",\"payload\":{\"name\":\"../../etc/passwd\"}}".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        json!({"v":1,"id":"y".repeat(60_000),"op":"get_api_key","payload":{}}).to_string().into_bytes(),
        depth_bomb.clone().into_bytes(),
    ];
    let workers: Vec<JoinHandle<(usize, usize)>> = (0..8)
        .map(|w| {
            let (socket, fatal, nonsense) = (socket.clone(), fatal.clone(), nonsense.clone());
            std::thread::spawn(move || {
                let (mut closed, mut answered) = (0, 0);
                // 250 connections that send one fatal frame each
                for i in 0..250 {
                    let mut c = Raw::connect(&socket);
                    c.handshake();
                    c.send_bytes(&fatal[(i + w) % fatal.len()]).unwrap();
                    let r = c.recv().expect("an error answer before the close");
                    assert_eq!(r["ok"], false, "{r}");
                    assert_eq!(r["code"], "INVALID_REQUEST", "{r}");
                    assert!(c.closed(), "closed after a bad frame");
                    closed += 1;
                }
                // one connection that pipelines 500 nonsense frames, then a good one
                let mut c = Raw::connect(&socket);
                c.handshake();
                for chunk in 0..10 {
                    let burst: Vec<u8> =
                        (0..50).flat_map(|i| frame(&nonsense[(chunk * 50 + i) % nonsense.len()])).collect();
                    c.send_bytes(&burst).unwrap();
                    for _ in 0..50 {
                        let r = c.recv().expect("an answer to each nonsense frame");
                        assert_eq!(r["ok"], false, "{r}");
                        answered += 1;
                    }
                }
                assert_eq!(c.request("get_api_key", json!({"name":"OPENAI"}))["ok"], true, "still served");
                (closed, answered)
            })
        })
        .collect();
    let (mut closed, mut answered) = (0, 0);
    for w in workers {
        let (c, a) = w.join().expect("a worker");
        closed += c;
        answered += a;
    }
    // Nonsense as the first frame: the failed-handshake delay, then a close.
    let started = Instant::now();
    let bad_handshakes: Vec<JoinHandle<()>> = (0..16)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let mut c = Raw::connect(&socket);
                    c.send_frame(if i % 2 == 0 { b"garbage" } else { b"{\"v\":1,\"op\":\"get_token\"}" })
                        .unwrap();
                    let r = c.recv().expect("an error answer");
                    assert_eq!(r["ok"], false, "{r}");
                    assert!(c.closed());
                }
            })
        })
        .collect();
    for t in bad_handshakes {
        t.join().unwrap();
    }
    eprintln!(
        "frames: {closed} fatal frames closed, {answered} nonsense frames answered, 160 bad handshakes in {:?}",
        started.elapsed()
    );
    assert_eq!((closed, answered), (2000, 4000));
    scene.finish("malformed frames");
}

#[test]
fn thousands_of_rapid_connects_and_disconnects_leave_nothing_behind() {
    let dir = seeded("abuse-churn");
    let scene = Scene::start(&dir, &[]);
    let socket = scene.d.socket.clone();
    let started = Instant::now();
    let workers: Vec<JoinHandle<usize>> = (0..4)
        .map(|w| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut handshakes = 0;
                for i in 0..1500 {
                    let s = UnixStream::connect(&socket).unwrap();
                    if i % 5 == w {
                        let mut raw = Raw::from_stream(s);
                        // Over the cap for a moment: a refusal, not an error. A
                        // refused connection is answered RATE_LIMITED and closed at
                        // once, so our handshake may meet a closed socket (EPIPE or
                        // a reset read) instead of the refusal frame.
                        let hello = br#"{"v":2,"op":"handshake","payload":{"minVersion":1,"maxVersion":2}}"#;
                        let _ = raw.send_frame(hello);
                        match raw.recv() {
                            Some(r) if r["ok"] == true => handshakes += 1,
                            Some(r) => assert_eq!(r["code"], "RATE_LIMITED", "{r}"),
                            // closed or reset: a refusal whose frame we could not read
                            None => {}
                        }
                    }
                }
                handshakes
            })
        })
        .collect();
    let handshakes: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    eprintln!("churn: 6000 connect/close cycles ({handshakes} with a handshake) in {:?}", started.elapsed());
    assert!(handshakes > 0);
    scene.finish("connect/disconnect churn");
}

#[test]
fn a_client_that_never_reads_is_cut_at_the_write_timeout_and_stalls_no_one() {
    let dir = seeded("abuse-noread");
    let scene = Scene::start(&dir, &[("LLXPRT_CREDD_WRITE_TIMEOUT_MS", "1500")]);
    let mut c = scene.d.connect();
    c.handshake();
    // Pipeline get_token requests without reading until nothing more can
    // be written: our receive buffer is full, the daemon's write blocks,
    // it stops reading, and our send buffer fills.
    let request = frame(
        json!({"v":1,"id":"r","op":"get_token","payload":{"provider":"anthropic"}}).to_string().as_bytes(),
    );
    let burst: Vec<u8> = (0..64).flat_map(|_| request.clone()).collect();
    c.stream.set_nonblocking(true).unwrap();
    let (mut sent, mut stuck_since) = (0usize, None::<Instant>);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.stream.write(&burst) {
            Ok(n) => {
                sent += n;
                stuck_since = None;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write: {e}"),
        }
        assert!(Instant::now() < deadline, "the buffers never filled ({sent} bytes sent)");
    }
    let stalled = Instant::now();
    // The daemon gives up on the write after 1.5 s and closes; the healthy
    // client was served all along (checked in finish).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !scene.d.log_text().contains("op=write outcome=closed") {
        assert!(Instant::now() < deadline, "the daemon never gave up writing:\n{}", scene.d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let cut_after = stalled.elapsed();
    eprintln!(
        "never-reading client: {sent} bytes of requests pipelined; cut {cut_after:?} after the buffers filled"
    );
    assert!(cut_after < Duration::from_secs(5), "{cut_after:?}");
    // what was written before the cut is readable, then EOF
    c.stream.set_nonblocking(false).unwrap();
    c.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = c.stream.read_to_end(&mut rest);
    assert!(!rest.is_empty());
    check_answer(&String::from_utf8_lossy(&rest));
    drop(c);
    scene.finish("never-reading client");
}
