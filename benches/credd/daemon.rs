/*!
The daemon benchmark (`daemon`): how fast and how small the real daemon
is.

It stores one token in a private temporary file store, starts the real
`llxprt-credd` binary on it (rate limit off, audit log on at the default
level, written to a file), and measures with one tool:

- time from exec to ready (the socket path read from the daemon's stdout);
- resident memory idle, with 64 open connections, and after they close;
- `get_token` round trips with 1 and 8 connections, under protocol
  version 1 and version 2, daemon and clients pinned to the same CPU and
  to different CPUs (what `taskset` does, through `sched_setaffinity`),
  next to a raw Unix-socket ping-pong that moves frames of exactly the
  same sizes (the floor);
- version 2's concurrency: 16 requests in flight on one connection (each
  round writes 16 requests and reads 16 answers), next to the same
  pipelining against the ping-pong floor;
- requests per second, unpinned.

Prints Markdown tables. Never touches real credentials.
*/

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use llxprt_credd::protocol::frame;
use llxprt_credd::store::{Backend, HostStore, TokenStore};
use llxprt_credd::token::OAuthToken;

use crate::cpu::{pin_process, pin_to_cpus};
use crate::fixture::{BenchDaemon, Result, io, paths, start_daemon, temp_root};
use crate::measure::{Summary, fmt_duration, summarise};
use crate::{launch, procfs};

const TOKEN: &str = r#"{"access_token":"bench-access-token-0123456789abcdef","refresh_token":"bench-refresh","expiry":1893456000,"token_type":"Bearer","scope":"user:inference"}"#;
const HANDSHAKE_V1: &[u8] = br#"{"v":1,"op":"handshake","payload":{"minVersion":1,"maxVersion":1}}"#;
const HANDSHAKE_V2: &[u8] = br#"{"v":2,"op":"handshake","payload":{"minVersion":1,"maxVersion":2}}"#;
/// Requests in flight per round of the pipelined rows.
const IN_FLIGHT: usize = 16;
const REQUEST: &[u8] =
    br#"{"v":1,"id":"00000000-0000-4000-8000-000000000000","op":"get_token","payload":{"provider":"claudecode"}}"#;
const STARTS: usize = 20;

/// One request/response exchange on a blocking stream.
fn exchange(stream: &mut UnixStream, request: &[u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
    stream.write_all(request)?;
    let mut header = [0u8; frame::HEADER_LEN];
    stream.read_exact(&mut header)?;
    let len = frame::frame_len(header).map_err(|e| std::io::Error::other(e.to_string()))?;
    buf.resize(len, 0);
    stream.read_exact(buf)
}

fn connect(socket: &Path, version: u64) -> Result<UnixStream> {
    let mut s = UnixStream::connect(socket).map_err(io("connect"))?;
    let mut buf = Vec::new();
    let hello = if version >= 2 { HANDSHAKE_V2 } else { HANDSHAKE_V1 };
    exchange(&mut s, &frame::encode_frame(hello).expect("small"), &mut buf).map_err(io("handshake"))?;
    Ok(s)
}

/// The `get_token` request with request id number `n` (same length for
/// every `n`, so every frame is the same size).
fn request_with_id(n: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(REQUEST).replace("000000000000\"", &format!("{n:012}\""));
    frame::encode_frame(text.as_bytes()).expect("small")
}

/// One connection, [`IN_FLIGHT`] requests written per round, then their
/// answers read (in any order): the round times and requests per second.
fn run_pipelined(socket: &Path, version: u64, rounds: usize, cpus: &[usize]) -> Result<(Summary, f64)> {
    let mut stream = connect(socket, version)?;
    pin_to_cpus(0, cpus).map_err(io("sched_setaffinity"))?;
    let batch: Vec<u8> = (1..=IN_FLIGHT).flat_map(request_with_id).collect();
    let mut buf = Vec::new();
    let mut round = |stream: &mut UnixStream| -> std::io::Result<()> {
        stream.write_all(&batch)?;
        for _ in 0..IN_FLIGHT {
            let mut header = [0u8; frame::HEADER_LEN];
            stream.read_exact(&mut header)?;
            buf.resize(frame::frame_len(header).map_err(|e| std::io::Error::other(e.to_string()))?, 0);
            stream.read_exact(&mut buf)?;
        }
        Ok(())
    };
    for _ in 0..rounds / 10 {
        round(&mut stream).map_err(io("pipelined warm-up"))?;
    }
    let started = Instant::now();
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        round(&mut stream).map_err(io("pipelined round"))?;
        samples.push(t.elapsed());
    }
    let rate = (rounds * IN_FLIGHT) as f64 / started.elapsed().as_secs_f64();
    let all: Vec<usize> = (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    pin_to_cpus(0, &all).map_err(io("sched_setaffinity"))?;
    Ok((summarise(&mut samples), rate))
}

fn start(root: &Path, n: usize) -> Result<BenchDaemon> {
    let args = [
        "--allow",
        "claudecode",
        "--rate-limit",
        "0",
        "--daemon-rate-limit",
        "0",
        "--max-connections",
        "128",
    ];
    start_daemon(root, &format!("d{n}"), &args, &[])
}

/// Round trips on `conns` connections at once; samples and requests per
/// second.
fn run_clients(
    socket: &Path,
    conns: usize,
    per_conn: usize,
    cpus: &[usize],
    version: u64,
) -> Result<(Summary, f64)> {
    let barrier = Arc::new(Barrier::new(conns + 1));
    let request = Arc::new(frame::encode_frame(REQUEST).expect("small"));
    let mut threads = Vec::new();
    for _ in 0..conns {
        let mut stream = connect(socket, version)?;
        let (barrier, request, cpus) = (barrier.clone(), request.clone(), cpus.to_vec());
        threads.push(std::thread::spawn(move || -> std::io::Result<Vec<Duration>> {
            pin_to_cpus(0, &cpus)?;
            let mut buf = Vec::new();
            for _ in 0..per_conn / 10 {
                exchange(&mut stream, &request, &mut buf)?;
            }
            barrier.wait();
            let mut samples = Vec::with_capacity(per_conn);
            for _ in 0..per_conn {
                let t = Instant::now();
                exchange(&mut stream, &request, &mut buf)?;
                samples.push(t.elapsed());
            }
            Ok(samples)
        }));
    }
    barrier.wait();
    let started = Instant::now();
    let mut all = Vec::with_capacity(conns * per_conn);
    for t in threads {
        all.extend(t.join().map_err(|_| "a client thread panicked")?.map_err(io("round trip"))?);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((summarise(&mut all), rate))
}

/// The floor: a ping-pong server that reads a frame and answers with a
/// frame of `response_len` bytes, one thread per connection, pinned to
/// `cpus`.
fn ping_pong_server(socket: &Path, response_len: usize, cpus: Vec<usize>) -> Result<()> {
    let listener = UnixListener::bind(socket).map_err(io("bind ping-pong socket"))?;
    let response = Arc::new(frame::encode_frame(&vec![b' '; response_len]).expect("small"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (response, cpus) = (response.clone(), cpus.clone());
            std::thread::spawn(move || {
                let _ = pin_to_cpus(0, &cpus);
                let mut body = Vec::new();
                loop {
                    let mut header = [0u8; frame::HEADER_LEN];
                    if stream.read_exact(&mut header).is_err() {
                        return;
                    }
                    body.resize(frame::frame_len(header).unwrap_or(0), 0);
                    if stream.read_exact(&mut body).is_err() || stream.write_all(&response).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(())
}

fn rss(pid: u32) -> String {
    procfs::rss_kib(pid).map_or_else(|| "n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn latency_row(what: &str, conns: &str, pinning: &str, s: &Summary, floor: Option<&Summary>, rate: f64) {
    let ratio =
        floor.map_or_else(|| "—".into(), |f| format!("{:.2}×", s.p50.as_secs_f64() / f.p50.as_secs_f64()));
    println!(
        "| {what} | {conns} | {pinning} | {} | {} | {} | {} | {ratio} | {:.0} |",
        s.n,
        fmt_duration(s.p50),
        fmt_duration(s.p90),
        fmt_duration(s.p99),
        rate
    );
}

/// Runs the daemon benchmark with `per_conn` timed round trips per
/// connection.
pub fn daemon(per_conn: usize) -> Result<()> {
    let root = temp_root()?;
    let result = run(&root, per_conn.max(100));
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn run(root: &Path, per_conn: usize) -> Result<()> {
    let host = HostStore::open_at(paths(root), Backend::File)?;
    let token: serde_json::Map<String, serde_json::Value> = serde_json::from_str(TOKEN)?;
    host.tokens.save_token("claudecode", None, &OAuthToken::from_map(token)?)?;

    let mut ready = Vec::new();
    for n in 0..STARTS {
        ready.push(start(root, n)?.ready);
    }
    let ready = summarise(&mut ready);
    let daemon = start(root, STARTS)?;
    std::thread::sleep(Duration::from_millis(100));
    let idle_start = rss(daemon.pid);

    // Warm the store's cache (the first read decrypts: scrypt).
    let mut warm = connect(&daemon.socket, 1)?;
    let mut response = Vec::new();
    exchange(&mut warm, &frame::encode_frame(REQUEST).expect("small"), &mut response)
        .map_err(io("warm-up"))?;
    if !response.windows(b"\"ok\":true".len()).any(|w| w == b"\"ok\":true") {
        return Err(format!("get_token failed: {}", String::from_utf8_lossy(&response)).into());
    }
    drop(warm);

    let held: Vec<UnixStream> = (0..64)
        .map(|_| {
            let mut s = connect(&daemon.socket, 2)?;
            exchange(&mut s, &frame::encode_frame(REQUEST).expect("small"), &mut Vec::new())
                .map_err(io("get_token"))?;
            Ok(s)
        })
        .collect::<Result<_>>()?;
    std::thread::sleep(Duration::from_millis(100));
    let with_64 = rss(daemon.pid);
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let idle_after = rss(daemon.pid);

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all: Vec<usize> = (0..cpus).collect();
    println!("Daemon: {} (file store, audit log at info level to a file, rate limit off)\n", launch::CREDD);
    println!("| measurement | value |");
    println!("|---|---|");
    println!(
        "| exec → ready (listening), {} starts | p50 {}, p90 {}, p99 {} |",
        ready.n,
        fmt_duration(ready.p50),
        fmt_duration(ready.p90),
        fmt_duration(ready.p99)
    );
    println!("| RSS idle after start | {idle_start} |");
    println!("| RSS with 64 open connections | {with_64} |");
    println!("| RSS after they close | {idle_after} |");
    println!(
        "\nRound trips: a {}-byte get_token request frame, a {}-byte response frame.\n",
        REQUEST.len() + frame::HEADER_LEN,
        response.len() + frame::HEADER_LEN
    );
    println!("| exchange | conns | pinning | samples | p50 | p90 | p99 | p50 / floor | req/s |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut layouts: Vec<(&str, Vec<usize>, Vec<usize>)> = vec![];
    if cpus >= 2 {
        layouts.push(("same core", vec![0], vec![0]));
        layouts.push(("cross core", vec![0], vec![1]));
    } else {
        println!("(one CPU: pinned rows skipped)");
    }
    layouts.push(("unpinned", all.clone(), all.clone()));
    for (i, (pinning, server_cpus, client_cpus)) in layouts.iter().enumerate() {
        let socket = root.join("sock").join(format!("ping-pong-{i}.sock"));
        ping_pong_server(&socket, response.len(), server_cpus.clone())?;
        pin_process(daemon.pid, server_cpus).map_err(io("sched_setaffinity"))?;
        for conns in [1usize, 8] {
            let (floor, floor_rate) = run_clients(&socket, conns, per_conn, client_cpus, 1)?;
            latency_row("raw ping-pong (floor)", &conns.to_string(), pinning, &floor, None, floor_rate);
            for version in [1, 2] {
                let (s, rate) = run_clients(&daemon.socket, conns, per_conn, client_cpus, version)?;
                let what = format!("llxprt-credd get_token, v{version}");
                latency_row(&what, &conns.to_string(), pinning, &s, Some(&floor), rate);
            }
        }
        let (floor, floor_rate) = run_pipelined(&socket, 1, per_conn, client_cpus)?;
        let label = format!("1, {IN_FLIGHT} in flight");
        latency_row("raw ping-pong, pipelined (floor)", &label, pinning, &floor, None, floor_rate);
        let (s, rate) = run_pipelined(&daemon.socket, 2, per_conn, client_cpus)?;
        latency_row("llxprt-credd get_token, v2", &label, pinning, &s, Some(&floor), rate);
    }
    println!(
        "\nThe pipelined rows time a round: {IN_FLIGHT} requests written at once, then {IN_FLIGHT} answers read."
    );
    pin_process(daemon.pid, &all).map_err(io("sched_setaffinity"))?;
    match syscalls_per_request(root, &daemon, SYSCALL_REQUESTS)? {
        Some(line) => println!(
            "\nSystem calls of the daemon per warm get_token (v1, one connection, `strace -c -f` over \
             {SYSCALL_REQUESTS} requests; the raw floor makes one read and one write): {line}"
        ),
        None => println!("\n(strace is not installed: no system call count)"),
    }
    Ok(())
}

/// Requests whose system calls are counted.
const SYSCALL_REQUESTS: usize = 2000;

/// Runs `n` warm `get_token` requests under `strace -c -f` attached to the
/// daemon: the calls per request, by name (`None` without strace).
fn syscalls_per_request(root: &Path, daemon: &BenchDaemon, n: usize) -> Result<Option<String>> {
    let out = root.join("strace.txt");
    let Ok(mut strace) = std::process::Command::new("strace")
        .args(["-c", "-f", "-q", "-o"])
        .arg(&out)
        .args(["-p", &daemon.pid.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return Ok(None);
    };
    // attached once the summary file exists and a first request is traced
    std::thread::sleep(Duration::from_millis(500));
    let mut s = connect(&daemon.socket, 1)?;
    let request = frame::encode_frame(REQUEST).expect("small");
    let mut buf = Vec::new();
    for _ in 0..n {
        exchange(&mut s, &request, &mut buf).map_err(io("get_token under strace"))?;
    }
    // SAFETY: `strace` is our child; SIGINT makes it detach and write its summary.
    unsafe { libc::kill(strace.id() as libc::pid_t, libc::SIGINT) };
    let _ = strace.wait();
    drop(s);
    let text = std::fs::read_to_string(&out).map_err(io("strace output"))?;
    let mut calls: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let name = *cols.last()?;
            // rows: % time, seconds, usecs/call, calls, [errors,] syscall
            let count = cols.get(3)?.parse::<u64>().ok()?;
            (name != "total" && cols.len() >= 5).then(|| (name.to_owned(), count))
        })
        .collect();
    calls.sort_by_key(|c| std::cmp::Reverse(c.1));
    let total: u64 = calls.iter().map(|c| c.1).sum();
    let per = |c: u64| c as f64 / n as f64;
    let named: Vec<String> =
        calls.iter().filter(|c| per(c.1) >= 0.01).map(|(name, c)| format!("{name} {:.2}", per(*c))).collect();
    Ok(Some(format!("{:.2} ({})", per(total), named.join(", "))))
}
