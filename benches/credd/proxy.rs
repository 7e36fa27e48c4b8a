/*!
The proxy benchmark (`proxy`): what inject mode costs. It stores one API key
in a private temporary file store, starts the real `llxprt-credd --inject`
with the Anthropic route pointed at a fake provider on 127.0.0.1 (written
here), and measures, side by side with the same requests sent to the fake
provider directly (the floor):

- a small non-streaming request: round trip, one new upstream connection
  per request either way (the proxy opens one per request), the client on
  a kept-alive connection to the proxy;
- streamed SSE events at a 300 ms cadence: the time from the provider's
  write of each event to the client's read of it;
- the daemon's resident memory idle and with 16 streams at once.

Prints Markdown tables. Never touches real credentials.
*/

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use llxprt_credd::store::{Backend, HostStore, KeyStore};

use crate::fixture::{Result, exchange, io, paths, start_daemon, temp_root};
use crate::measure::{Summary, fmt_duration, summarise};
use crate::procfs;

const KEY: &str = "sk-ant-api03-bench-not-a-real-key-0123456789";
const EVENTS: usize = 15;
const CADENCE: Duration = Duration::from_millis(300);
const STREAMS: usize = 16;

/// The bench's clock: nanoseconds since the first call, shared by the
/// fake provider (stamping events) and the client (reading them).
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The fake provider: `POST /v1/messages` answers `{"ok":true}`, or with
/// `?events=N&gap_ms=M` an SSE stream of N events M ms apart, each
/// carrying the time it was written.
fn start_provider() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io("bind the fake provider"))?;
    let port = listener.local_addr().map_err(io("fake provider address"))?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = answer(stream);
            });
        }
    });
    Ok(port)
}

fn answer(stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut target = String::new();
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if target.is_empty() {
            target = line.split_whitespace().nth(1).unwrap_or_default().to_owned();
        } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let param = |name: &str| {
        target
            .split_once('?')
            .and_then(|(_, q)| q.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('=')))
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (param("events"), param("gap_ms")) {
        (Some(events), Some(gap)) => {
            writer.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            )?;
            for _ in 0..events {
                std::thread::sleep(Duration::from_millis(gap));
                let event = format!("event: delta\ndata: {}\n\n", now_ns());
                writer.write_all(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes())?;
            }
            writer.write_all(b"0\r\n\r\n")
        }
        _ => writer.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}",
        ),
    }
}

/// A request to the messages endpoint, with `key` as `x-api-key`.
fn request(prefix: &str, query: &str, key: &str, close: bool) -> Vec<u8> {
    let body = br#"{"model":"bench-model","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut r = format!(
        "POST {prefix}/v1/messages{query} HTTP/1.1\r\nhost: bench\r\nx-api-key: {key}\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
        body.len(),
        if close { "connection: close\r\n" } else { "" }
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Reads one response: its head, then its body by its framing. Calls
/// `event` with the arrival time of each `data:` line of an SSE body.
fn read_response(reader: &mut impl BufRead, mut event: impl FnMut(u64, u64)) -> std::io::Result<()> {
    let mut chunked = false;
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("closed before the response"));
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        } else if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if line == "\r\n" {
            break;
        }
    }
    if !chunked {
        let mut body = vec![0u8; length];
        return reader.read_exact(&mut body);
    }
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim(), 16).map_err(|_| std::io::Error::other("bad chunk"))?;
        let mut data = vec![0u8; size + 2];
        reader.read_exact(&mut data)?;
        let arrived = now_ns();
        if size == 0 {
            return Ok(());
        }
        for sent in String::from_utf8_lossy(&data).lines().filter_map(|l| l.strip_prefix("data: ")) {
            if let Ok(sent) = sent.trim().parse::<u64>() {
                event(sent, arrived);
            }
        }
    }
}

fn row(what: &str, proxied: &Summary, direct: &Summary) {
    println!(
        "| {what} | {} | {} | {} | {} | {} |",
        fmt_duration(proxied.p50),
        fmt_duration(proxied.p99),
        fmt_duration(direct.p50),
        fmt_duration(direct.p99),
        fmt_duration(proxied.p50.saturating_sub(direct.p50)),
    );
}

/// Runs the proxy benchmark.
pub fn proxy(iterations: usize) -> Result<()> {
    let root = temp_root()?;
    let result = run(&root, iterations);
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn run(root: &Path, iterations: usize) -> Result<()> {
    now_ns();
    let host = HostStore::open_at(paths(root), Backend::File)?;
    host.keys.save_key("BENCH_KEY", KEY)?;
    std::fs::create_dir_all(root.join("config/profiles")).map_err(io("profiles"))?;
    std::fs::write(
        root.join("config/profiles/bench.json"),
        r#"{"version":1,"provider":"anthropic","ephemeralSettings":{"auth-key-name":"BENCH_KEY"}}"#,
    )
    .map_err(io("profile"))?;
    let port = start_provider()?;
    let upstream = format!("http://127.0.0.1:{port}");
    let proxy_socket = root.join("sock/bench.proxy.sock");
    let daemon = start_daemon(
        root,
        "bench",
        &["--inject", "--profile", "bench", "--rate-limit", "0"],
        &[("LLXPRT_CREDD_UPSTREAM_API_ANTHROPIC_COM_URL", upstream.as_str())],
    )?;
    let sentinel = sentinel(&daemon.socket)?;

    // Small requests: through the proxy on one kept-alive connection, and
    // directly on a new connection each (the proxy opens one upstream).
    let through = UnixStream::connect(&proxy_socket).map_err(io("connect to the proxy"))?;
    let mut reader = BufReader::new(through.try_clone().map_err(io("proxy connection"))?);
    let mut writer = through;
    let ask = request("/api.anthropic.com", "", &sentinel, false);
    let mut proxied = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        writer.write_all(&ask).map_err(io("proxy request"))?;
        read_response(&mut reader, |_, _| {}).map_err(io("proxy response"))?;
        proxied.push(t.elapsed());
    }
    let ask = request("", "", KEY, true);
    let mut direct = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(io("direct connect"))?;
        let _ = s.set_nodelay(true);
        let mut r = BufReader::new(s.try_clone().map_err(io("direct"))?);
        (&s).write_all(&ask).map_err(io("direct request"))?;
        read_response(&mut r, |_, _| {}).map_err(io("direct response"))?;
        direct.push(t.elapsed());
    }

    // Streamed events at the cadence: provider write → client read.
    let query = format!("?events={EVENTS}&gap_ms={}", CADENCE.as_millis());
    let latency = |through_proxy: bool| -> Result<Vec<Duration>> {
        let mut out = Vec::new();
        for _ in 0..2 {
            let mut record =
                |sent: u64, arrived: u64| out.push(Duration::from_nanos(arrived.saturating_sub(sent)));
            if through_proxy {
                let s = UnixStream::connect(&proxy_socket).map_err(io("connect to the proxy"))?;
                let mut r = BufReader::new(s.try_clone().map_err(io("proxy"))?);
                (&s).write_all(&request("/api.anthropic.com", &query, &sentinel, true))
                    .map_err(io("stream"))?;
                read_response(&mut r, &mut record).map_err(io("stream"))?;
            } else {
                let s = TcpStream::connect(("127.0.0.1", port)).map_err(io("direct connect"))?;
                let mut r = BufReader::new(s.try_clone().map_err(io("direct"))?);
                (&s).write_all(&request("", &query, KEY, true)).map_err(io("stream"))?;
                read_response(&mut r, &mut record).map_err(io("stream"))?;
            }
        }
        Ok(out)
    };
    let mut events_proxied = latency(true)?;
    let mut events_direct = latency(false)?;

    // Memory: idle, then the peak with STREAMS streams at once.
    let idle = procfs::rss_kib(daemon.pid).unwrap_or(0);
    let streams: Vec<_> = (0..STREAMS)
        .map(|_| {
            let socket = proxy_socket.clone();
            let ask = request("/api.anthropic.com", "?events=20&gap_ms=100", &sentinel, true);
            std::thread::spawn(move || -> std::io::Result<usize> {
                let s = UnixStream::connect(&socket)?;
                let mut r = BufReader::new(s.try_clone()?);
                (&s).write_all(&ask)?;
                let mut n = 0;
                read_response(&mut r, |_, _| n += 1)?;
                Ok(n)
            })
        })
        .collect();
    let mut peak = idle;
    while streams.iter().any(|t| !t.is_finished()) {
        peak = peak.max(procfs::rss_kib(daemon.pid).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut delivered = 0;
    for t in streams {
        delivered += t.join().map_err(|_| "a stream thread panicked")?.map_err(io("stream"))?;
    }
    let after = procfs::rss_kib(daemon.pid).unwrap_or(0);

    println!("## Inject proxy (llxprt-credd --inject, fake provider on 127.0.0.1)\n");
    println!("| measurement | proxied p50 | proxied p99 | direct p50 | direct p99 | added p50 |");
    println!("|---|---|---|---|---|---|");
    row(
        &format!("small POST /v1/messages ({iterations}×)"),
        &summarise(&mut proxied),
        &summarise(&mut direct),
    );
    row(
        &format!("SSE event, write → read ({} events at {} ms)", events_proxied.len(), CADENCE.as_millis()),
        &summarise(&mut events_proxied),
        &summarise(&mut events_direct),
    );
    println!();
    println!("| daemon memory (RSS) | KiB |");
    println!("|---|---|");
    println!("| idle, after the rows above | {idle} |");
    println!("| peak with {STREAMS} concurrent streams ({delivered} events delivered) | {peak} |");
    println!("| after they ended | {after} |");
    if delivered != STREAMS * 20 {
        return Err(format!("{delivered} of {} events arrived", STREAMS * 20).into());
    }
    drop(daemon);
    Ok(())
}

/// The key's sentinel, from the credential socket.
fn sentinel(socket: &Path) -> Result<String> {
    let mut s = UnixStream::connect(socket).map_err(io("connect"))?;
    exchange(&mut s, br#"{"v":1,"op":"handshake","payload":{"minVersion":1,"maxVersion":1}}"#)
        .map_err(io("handshake"))?;
    let answer = exchange(
        &mut s,
        br#"{"v":1,"id":"00000000-0000-4000-8000-000000000001","op":"get_api_key","payload":{"name":"BENCH_KEY"}}"#,
    )
    .map_err(io("get_api_key"))?;
    let value: serde_json::Value = serde_json::from_slice(&answer).map_err(|_| "bad answer")?;
    value["data"]["key"]
        .as_str()
        .filter(|k| k.starts_with("sk-ant-api03-llxprtcredd-"))
        .map(str::to_owned)
        .ok_or_else(|| format!("no sentinel served: {value}").into())
}
