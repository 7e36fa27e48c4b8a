//! A scriptable fake model provider on 127.0.0.1: what the injecting proxy
//! (`--inject`) forwards to in the tests, through the
//! `LLXPRT_CREDD_UPSTREAM_<HOST>_URL` overrides.
//!
//! It speaks HTTP/1.1 with keep-alive, a thread per connection, reads
//! request bodies (`Content-Length` or chunked) and records every request
//! (method, path and query, headers with lower-cased names, body), so a test
//! can assert what reached "the provider": the real credential, never a
//! sentinel, and nothing at all for a refused request.
//!
//! Each request takes the next scripted [`Answer`]; with none scripted it
//! answers `200 {"ok":true}`. A streamed answer is a list of [`Step`]s (send
//! bytes, sleep, or wait for a [`Gate`] the test opens once it has seen the
//! bytes before), framed chunked, close-delimited or with a
//! `Content-Length`, and it ends cleanly, with an early close (EOF) or with
//! a TCP reset ([`End`]).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::harness::LoopbackServer;

/// How long a [`Step::Wait`] waits for its gate before going on anyway (a
/// test that never opens it has failed already).
pub const GATE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may sit idle between two requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest request head the fake reads.
const MAX_HEAD_BYTES: usize = 256 * 1024;

/// One request as it reached the fake provider.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The path and query, as sent.
    pub target: String,
    /// Header fields in order, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body (decoded when it came chunked).
    pub body: Vec<u8>,
    /// Whether the body came chunked rather than with a `Content-Length`.
    pub chunked: bool,
    pub at: Instant,
}

impl Request {
    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// The query, if any.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (lower-case), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The header names, in order (what a failing assertion may show: never
    /// the values, which hold credentials).
    pub fn names(&self) -> Vec<&str> {
        self.headers.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the forwarded body is JSON")
    }

    /// Whether `needle` appears anywhere in the request: target, header
    /// names and values, body.
    pub fn contains(&self, needle: &str) -> bool {
        self.target.contains(needle)
            || String::from_utf8_lossy(&self.body).contains(needle)
            || self.headers.iter().any(|(n, v)| n.contains(needle) || v.contains(needle))
    }
}

/// A gate a scripted answer waits at until the test opens it: how a test
/// proves that an event reached the client before the next one was sent.
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Lets the waiting answer go on.
    pub fn open(&self) {
        let (open, changed) = &*self.0;
        *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        changed.notify_all();
    }

    /// Waits until the gate is open, at most [`GATE_TIMEOUT`]; whether it
    /// was opened.
    pub fn wait(&self) -> bool {
        let (open, changed) = &*self.0;
        let guard = open.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) =
            changed.wait_timeout_while(guard, GATE_TIMEOUT, |open| !*open).unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// One step of a streamed answer.
#[derive(Clone)]
pub enum Step {
    /// Writes these bytes (as one chunk when the answer is chunked) and
    /// flushes them.
    Send(Vec<u8>),
    /// Sleeps.
    Sleep(Duration),
    /// Waits for the gate.
    Wait(Gate),
    /// Reads until the client (the proxy) closes the connection, then
    /// sends the moment it noticed.
    UntilClosed(std::sync::mpsc::Sender<Instant>),
}

impl Step {
    pub fn send(bytes: impl AsRef<[u8]>) -> Step {
        Step::Send(bytes.as_ref().to_vec())
    }
}

/// `(delay, chunk)` pairs as steps: each chunk is sent after its delay.
pub fn paced(chunks: &[(Duration, &str)]) -> Vec<Step> {
    chunks.iter().flat_map(|(delay, chunk)| [Step::Sleep(*delay), Step::send(chunk)]).collect()
}

/// How a streamed answer's body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// No length at all: the body ends when the connection closes.
    Close,
    /// `Content-Length: N` (the steps may send fewer bytes, for a short body).
    Length(usize),
}

/// How a streamed answer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// As its framing says: the terminating chunk, or a close for a
    /// close-delimited body.
    Finish,
    /// The connection is closed (FIN) without finishing the body.
    Eof,
    /// The connection is reset (RST) without finishing the body.
    Reset,
}

/// The body of an answer.
#[derive(Clone)]
pub enum Body {
    /// All of it at once, with a `Content-Length`.
    Whole(Vec<u8>),
    /// Streamed step by step.
    Stream { framing: Framing, steps: Vec<Step>, end: End },
    /// No answer at all (a long generation before the head): the fake
    /// waits until the client closes, then sends the moment it noticed.
    Silent(std::sync::mpsc::Sender<Instant>),
}

/// One scripted answer.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    /// Header fields as sent (framing headers are added for a streamed body).
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

fn owned(headers: &[(&str, &str)]) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

impl Answer {
    /// This status, these headers, this whole body.
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Answer {
        Answer { status, headers: owned(headers), body: Body::Whole(body.as_ref().to_vec()) }
    }

    /// This status and JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Answer {
        Answer::new(status, &[("content-type", "application/json")], value.to_string())
    }

    /// A streamed answer.
    pub fn stream(
        status: u16,
        headers: &[(&str, &str)],
        framing: Framing,
        steps: Vec<Step>,
        end: End,
    ) -> Answer {
        Answer { status, headers: owned(headers), body: Body::Stream { framing, steps, end } }
    }

    /// A 200 `text/event-stream` answer.
    pub fn sse(framing: Framing, steps: Vec<Step>, end: End) -> Answer {
        Answer::stream(
            200,
            &[("content-type", "text/event-stream"), ("cache-control", "no-cache")],
            framing,
            steps,
            end,
        )
    }

    /// An SSE answer that sends the first `n` of `chunks` and then resets
    /// the connection.
    pub fn reset_after(framing: Framing, chunks: &[&str], n: usize) -> Answer {
        Answer::sse(framing, chunks.iter().take(n).map(Step::send).collect(), End::Reset)
    }

    /// Writes the answer; whether the connection may take another request.
    fn write_to(&self, stream: &mut TcpStream, close: bool) -> bool {
        if let Body::Silent(tx) = &self.body {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = [0u8; 256];
            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            let _ = tx.send(Instant::now());
            return false;
        }
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let named = |name: &str| self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        match &self.body {
            Body::Whole(body) => {
                if !named("content-length") {
                    head.push_str(&format!("content-length: {}\r\n", body.len()));
                }
                if close {
                    head.push_str("connection: close\r\n");
                }
                head.push_str("\r\n");
                let mut bytes = head.into_bytes();
                bytes.extend_from_slice(body);
                stream.write_all(&bytes).and_then(|()| stream.flush()).is_ok() && !close
            }
            Body::Silent(_) => false,
            Body::Stream { framing, steps, end } => {
                match framing {
                    Framing::Chunked => head.push_str("transfer-encoding: chunked\r\n"),
                    Framing::Length(n) => head.push_str(&format!("content-length: {n}\r\n")),
                    Framing::Close => {}
                }
                let last = close || *framing == Framing::Close || *end != End::Finish;
                if last {
                    head.push_str("connection: close\r\n");
                }
                head.push_str("\r\n");
                if stream.write_all(head.as_bytes()).and_then(|()| stream.flush()).is_err() {
                    return false;
                }
                for step in steps {
                    match step {
                        Step::Send(bytes) if bytes.is_empty() => {}
                        Step::Send(bytes) => {
                            let framed =
                                if *framing == Framing::Chunked { chunk(bytes) } else { bytes.clone() };
                            if stream.write_all(&framed).and_then(|()| stream.flush()).is_err() {
                                return false;
                            }
                        }
                        Step::Sleep(d) => std::thread::sleep(*d),
                        Step::Wait(gate) => {
                            gate.wait();
                        }
                        Step::UntilClosed(tx) => {
                            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                            let mut buf = [0u8; 256];
                            while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                            let _ = tx.send(Instant::now());
                            return false;
                        }
                    }
                }
                match end {
                    End::Finish => {
                        if *framing == Framing::Chunked && stream.write_all(b"0\r\n\r\n").is_err() {
                            return false;
                        }
                        if *framing == Framing::Close {
                            let _ = stream.shutdown(Shutdown::Write);
                        }
                        !last
                    }
                    End::Eof => {
                        let _ = stream.shutdown(Shutdown::Both);
                        false
                    }
                    End::Reset => {
                        crate::harness::reset_on_close(stream);
                        false
                    }
                }
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        529 => "Overloaded",
        _ => "Status",
    }
}

/// `bytes` as one chunk of a chunked body.
fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
    framed.extend_from_slice(bytes);
    framed.extend_from_slice(b"\r\n");
    framed
}

struct State {
    /// Connections accepted.
    connections: usize,
    script: VecDeque<Answer>,
    requests: Vec<Request>,
    /// Requests carrying this `authorization` get a 401, script or not.
    reject: Option<String>,
}

/// The fake provider. Dropping it stops accepting connections.
pub struct FakeStream {
    /// `http://127.0.0.1:PORT`: the value of an upstream override.
    pub base: String,
    /// `127.0.0.1:PORT`.
    pub authority: String,
    state: Arc<Mutex<State>>,
    _server: LoopbackServer,
}

impl FakeStream {
    pub fn start() -> FakeStream {
        let state = Arc::new(Mutex::new(State {
            connections: 0,
            script: VecDeque::new(),
            requests: Vec::new(),
            reject: None,
        }));
        let shared = state.clone();
        let server = LoopbackServer::start(move |stream, _| {
            shared.lock().unwrap_or_else(|e| e.into_inner()).connections += 1;
            serve(stream, &shared);
        });
        let authority = server.authority.clone();
        FakeStream { base: format!("http://{authority}"), authority, state, _server: server }
    }

    /// Answers 401 to every request whose `authorization` is `value`.
    pub fn reject(&self, value: &str) {
        self.lock().reject = Some(value.to_owned());
    }

    /// Queues one answer (answers are taken in order, by any request).
    pub fn push(&self, answer: Answer) {
        self.lock().script.push_back(answer);
    }

    /// Queues answers.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.lock().script.extend(answers);
    }

    /// Every request so far, in the order they arrived.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// How many connections the provider accepted.
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.lock().requests.len()
    }

    /// The latest request.
    #[track_caller]
    pub fn last(&self) -> Request {
        self.lock().requests.last().cloned().expect("a request reached the fake provider")
    }

    /// Waits until at least `n` requests arrived; whether they did in time.
    pub fn wait_for(&self, n: usize, within: Duration) -> bool {
        crate::harness::wait_until(within, || self.count() >= n)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection: requests in turn until the peer closes or an answer
/// ends the connection.
fn serve(mut stream: TcpStream, state: &Mutex<State>) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf) {
        let close = request
            .header("connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        let scripted = {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let rejected = s.reject.is_some() && request.header("authorization") == s.reject.as_deref();
            s.requests.push(request);
            if rejected {
                Some(Answer::json(
                    401,
                    &serde_json::json!({"type": "error", "error": {"type": "authentication_error"}}),
                ))
            } else {
                s.script.pop_front()
            }
        };
        let answer = scripted.unwrap_or_else(|| Answer::json(200, &serde_json::json!({"ok": true})));
        if !answer.write_to(&mut stream, close) {
            return;
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`; false at the end of the connection.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// One CRLF-terminated line (without it).
fn read_line(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(p) = find(buf, b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..p]).into_owned();
            buf.drain(..p + 2);
            return Some(line);
        }
        if !fill(stream, buf) {
            return None;
        }
    }
}

/// A chunked body, decoded (extensions and trailers dropped).
fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(stream, buf)?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            while !read_line(stream, buf)?.is_empty() {}
            return Some(body);
        }
        while buf.len() < size + 2 {
            if !fill(stream, buf) {
                return None;
            }
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// The next request on the connection; `None` when it ends first.
fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(p) = find(buf, b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_HEAD_BYTES || !fill(stream, buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        read_chunked(stream, buf)?
    } else {
        let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        while buf.len() < len {
            if !fill(stream, buf) {
                return None;
            }
        }
        buf.drain(..len).collect()
    };
    Some(Request { method, target, headers, body, chunked, at: Instant::now() })
}
