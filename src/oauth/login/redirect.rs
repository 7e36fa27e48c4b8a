/*!
The loopback listener of a browser-redirect login: binding it on both
loopback addresses, reading each browser connection without blocking, and
sorting the callback by its path and state.
*/
#![forbid(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::pkce::{query_unescape, same_secret};
use crate::oauth::http::safe_error_code;
use crate::secret::SecretString;

/// How long the browser's request to the loopback listener may take.
pub const CALLBACK_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest browser request read by the loopback listener.
const MAX_CALLBACK_REQUEST: usize = 16 * 1024;

/// The loopback listener of a browser-redirect login: one port, bound on
/// both 127.0.0.1 and ::1 (the redirect URI says `localhost`, which a
/// browser may resolve to either), non-blocking.
pub struct RedirectListener {
    sockets: Vec<TcpListener>,
    port: u16,
}

/// How many times a free port (`0`) is tried when its ::1 side is taken.
const ANY_PORT_TRIES: usize = 8;

impl RedirectListener {
    /// The port both addresses listen on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connections waiting on either address (at most `max`).
    pub fn accept_ready(&self, max: usize) -> io::Result<Vec<TcpStream>> {
        let mut out = Vec::new();
        for socket in &self.sockets {
            while out.len() < max {
                match socket.accept() {
                    Ok((s, _)) => out.push(s),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }
}

fn held(addr: &str, port: u16) -> io::Error {
    io::Error::new(io::ErrorKind::AddrInUse, format!("{addr} port {port} is held by another program"))
}

/// Binds `port` (`0`: a free one) on 127.0.0.1 and on ::1. Either address
/// held by someone else fails: whoever holds it could receive the browser's
/// redirect, code and state included. A host without IPv6 loopback gets
/// 127.0.0.1 alone (nobody can listen on ::1 there either).
fn bind_both(port: u16) -> io::Result<RedirectListener> {
    let tries = if port == 0 { ANY_PORT_TRIES } else { 1 };
    let mut last = held("127.0.0.1", port);
    for _ in 0..tries {
        let v4 = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
            .map_err(|e| if e.kind() == io::ErrorKind::AddrInUse { held("127.0.0.1", port) } else { e })?;
        let bound = v4.local_addr()?.port();
        let v6 = TcpListener::bind(SocketAddrV6::new(Ipv6Addr::LOCALHOST, bound, 0, 0));
        let sockets = match v6 {
            Ok(v6) => vec![v4, v6],
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                last = held("[::1]", bound);
                continue;
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL | libc::EAFNOSUPPORT)) => vec![v4],
            Err(e) => return Err(e),
        };
        for s in &sockets {
            s.set_nonblocking(true)?;
        }
        return Ok(RedirectListener { sockets, port: bound });
    }
    Err(last)
}

/// Binds the browser-redirect listener: the first of `ports` free on both
/// loopback addresses (`0`: any free port). The first port is the one the
/// provider's redirect URI is registered with; falling back to another is
/// logged as a warning (the provider may refuse it), never silent.
pub fn bind_redirect_listener(ports: &[u16]) -> io::Result<RedirectListener> {
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no redirect port configured");
    for (i, &port) in ports.iter().enumerate() {
        match bind_both(port) {
            Ok(l) => {
                if i > 0 {
                    crate::log_warn!(
                        "the registered redirect port {} is in use ({last}); listening on {} instead, \
                         which the provider may refuse",
                        ports[0],
                        l.port()
                    );
                }
                return Ok(l);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// One browser connection to the redirect listener, read without
/// blocking: the listener serves many at once, and one that has not sent
/// its whole request head by its deadline is dropped.
pub struct CallbackConn {
    stream: TcpStream,
    // The request line carries the authorization code: wiped on drop.
    buf: zeroize::Zeroizing<Vec<u8>>,
    deadline: Instant,
}

/// Where reading a [`CallbackConn`] stands.
pub enum CallbackRead {
    /// More bytes are needed.
    Waiting,
    /// The request head is complete.
    Complete,
    /// Closed, too large, past its deadline or broken: drop it.
    Dropped,
}

impl CallbackConn {
    /// Starts reading `stream`, which must send its request head by
    /// `deadline`.
    pub fn new(stream: TcpStream, deadline: Instant) -> io::Result<CallbackConn> {
        stream.set_nonblocking(true)?;
        Ok(CallbackConn { stream, buf: zeroize::Zeroizing::new(Vec::new()), deadline })
    }

    /// Reads what has arrived.
    pub fn read(&mut self, now: Instant) -> CallbackRead {
        let mut chunk = zeroize::Zeroizing::new([0u8; 2048]);
        loop {
            match self.stream.read(&mut chunk[..]) {
                Ok(0) => return CallbackRead::Dropped,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    if self.buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        return CallbackRead::Complete;
                    }
                    if self.buf.len() > MAX_CALLBACK_REQUEST {
                        return CallbackRead::Dropped;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return CallbackRead::Dropped,
            }
        }
        if now >= self.deadline { CallbackRead::Dropped } else { CallbackRead::Waiting }
    }

    /// Sorts the complete request (as `classify_callback` does); the stream,
    /// blocking again with a short write deadline, to answer on.
    pub fn finish(self, path: &str, state: &str) -> (TcpStream, Callback) {
        let mut stream = self.stream;
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(CALLBACK_READ_TIMEOUT));
        let head = String::from_utf8_lossy(&self.buf);
        let mut line = head.lines().next().unwrap_or_default().split_whitespace();
        let target = match (line.next(), line.next()) {
            (Some("GET"), Some(target)) => zeroize::Zeroizing::new(target.to_owned()),
            _ => return (stream, Callback::Ignored),
        };
        let callback = classify_callback(&mut stream, &target, path, state);
        (stream, callback)
    }
}

/// What one request to the loopback listener brought.
pub enum Callback {
    /// The authorization code, with the right state.
    Code(SecretString),
    /// The provider says the user refused (`error=access_denied` or other
    /// error), with the right state.
    Denied(String),
    /// Not our callback: another path, a wrong or missing state. The
    /// listener keeps waiting.
    Ignored,
}

/// Answers the browser with a small page.
pub fn respond(stream: &mut TcpStream, status: u16, text: &str) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Not Found",
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>llxprt login</title></head><body><p>{text}</p></body></html>"
    );
    let reply = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
}

/// Sorts the browser's request for `target`. Requests that are not our
/// callback are answered here (404 or 400); the caller answers ours once
/// it knows the outcome.
fn classify_callback(stream: &mut TcpStream, target: &str, path: &str, state: &str) -> Callback {
    let (req_path, query) = target.split_once('?').unwrap_or((target, ""));
    if req_path != path {
        respond(stream, 404, "Not found.");
        return Callback::Ignored;
    }
    let mut code = None;
    let mut got_state = None;
    let mut error = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "code" => code = Some(SecretString::new(query_unescape(v))),
            "state" => got_state = Some(SecretString::new(query_unescape(v))),
            "error" => error = Some(query_unescape(v)),
            _ => {}
        }
    }
    if !got_state.as_ref().is_some_and(|s| same_secret(s.expose(), state)) {
        respond(stream, 400, "This sign-in link does not belong to a login in progress.");
        return Callback::Ignored;
    }
    if let Some(e) = error {
        let safe = safe_error_code(&serde_json::json!({ "error": e }).to_string());
        return Callback::Denied(safe.unwrap_or_else(|| "error".into()));
    }
    match code {
        Some(c) if !c.expose().is_empty() => Callback::Code(c),
        _ => {
            respond(stream, 400, "The provider sent no authorization code.");
            Callback::Ignored
        }
    }
}
