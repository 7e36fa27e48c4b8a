/*!
The proxy's side towards the provider: a small HTTP/1.1 client of our own
over a fresh TCP connection per request, TLS with rustls and the platform
verifier. Our own because streaming needs what a general client hides: the
raw socket (so a departed sandbox can shut the upstream request down from
another thread), a per-read idle timeout with no total budget, and the
difference between a body that ended cleanly and one that was cut.

Here: the origin, the request and the reading of the response head. The
connection itself (TCP, TLS, the address rule) is in `connect.rs`, the
pool of idle connections in `pool.rs`, and the reading of a response body
in `body.rs`.
*/
#![forbid(unsafe_code)]

mod body;
mod connect;
mod pool;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use connect::{Stream, connect};
use pool::take_idle;

/// Connecting.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Waiting for the response head: non-streaming calls answer only after
/// generating.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Silence between two reads of a response body (a long generation may
/// be silent for minutes; undici's own limit is 300 s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(330);
/// The largest response head.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A route's origin: the built-in HTTPS host, or a loopback `http://`
/// override for tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn https(host: &str) -> Origin {
        Origin { tls: true, host: host.to_owned(), port: 443 }
    }

    /// An override `http://HOST:PORT` whose host is loopback.
    pub fn loopback_override(url: &str) -> Result<Origin, String> {
        let rest = url.strip_prefix("http://").ok_or("it must start with http://")?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err("it must have no path".into());
        }
        let (host, port) = rest.rsplit_once(':').ok_or("it must name a port")?;
        let port: u16 = port.parse().map_err(|_| "bad port")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err("only a loopback address (127.0.0.0/8, ::1, localhost) is accepted".into());
        }
        Ok(Origin { tls: false, host: host.to_owned(), port })
    }
}

/// Why an upstream exchange failed (no detail crosses to the sandbox).
#[derive(Debug)]
pub enum UpstreamError {
    Connect(String),
    Timeout,
    Protocol(&'static str),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Connect(e) => write!(f, "connection failed: {e}"),
            UpstreamError::Timeout => f.write_str("timed out"),
            UpstreamError::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// A request on its way: the response head has been read.
pub struct Exchange {
    reader: BufReader<Stream>,
    /// A second handle on the socket, to shut it down from elsewhere.
    pub socket: TcpStream,
    pub status: u16,
    /// Response header fields, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    body: BodyFraming,
    /// Bytes left in the current chunk of a chunked body.
    chunk_left: u64,
    origin: Origin,
    /// The provider keeps the connection open after this answer.
    reusable: bool,
    /// The body ended as its framing says.
    ended: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    Close,
}

/// One read of a response body.
pub enum Read2 {
    Data(Vec<u8>),
    /// The body ended as its framing says.
    End,
}

/// Sends `method path` with `headers` and `body` to `origin` and reads
/// the response head. `headers` must not hold framing headers or `host`.
/// An idle connection to the origin is used when there is one; if the
/// provider had closed it (no byte of an answer came back), the request
/// goes once more on a fresh connection. `connected` gets each
/// connection's socket as soon as it is there.
pub fn send(
    origin: &Origin,
    method: &str,
    target: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
    connected: &mut dyn FnMut(&TcpStream),
) -> Result<Exchange, UpstreamError> {
    let request = request_bytes(origin, method, target, headers, body);
    if let Some(idle) = take_idle(origin) {
        connected(&idle.socket);
        match exchange_on(origin.clone(), idle.reader, idle.socket, &request, method) {
            Ok(ex) => return Ok(ex),
            Err(Attempt::Stale) => {
                crate::log_debug!("proxy: an idle connection to {} had closed", origin.host)
            }
            Err(Attempt::Failed(e)) => return Err(e),
        }
    }
    let (reader, socket) = connect(origin)?;
    connected(&socket);
    exchange_on(origin.clone(), reader, socket, &request, method).map_err(|e| match e {
        Attempt::Stale => UpstreamError::Protocol("the connection closed before a response"),
        Attempt::Failed(e) => e,
    })
}

/// The request's bytes: our own head (host, the given fields, our own
/// length) and the body.
fn request_bytes(
    origin: &Origin,
    method: &str,
    target: &str,
    headers: &[(String, Vec<u8>)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = Vec::with_capacity(1024 + body.len());
    head.extend_from_slice(format!("{method} {target} HTTP/1.1\r\n").as_bytes());
    let host = if origin.port == if origin.tls { 443 } else { 80 } {
        origin.host.clone()
    } else {
        format!("{}:{}", origin.host, origin.port)
    };
    head.extend_from_slice(format!("host: {host}\r\n").as_bytes());
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" {
        head.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(body);
    head
}

/// How one attempt on a connection failed.
enum Attempt {
    /// Nothing of an answer came back: the connection had been closed.
    Stale,
    Failed(UpstreamError),
}

/// Writes `request` on a connection and reads the answer's head.
fn exchange_on(
    origin: Origin,
    mut reader: BufReader<Stream>,
    socket: TcpStream,
    request: &[u8],
    method: &str,
) -> Result<Exchange, Attempt> {
    let _ = socket.set_read_timeout(Some(HEAD_TIMEOUT));
    let stream = reader.get_mut();
    if stream.write_all(request).and_then(|()| stream.flush()).is_err() {
        return Err(Attempt::Stale);
    }
    let mut first = true;
    loop {
        let raw = match read_response_head(&mut reader) {
            Ok(raw) => raw,
            Err(_) if first && reader.buffer().is_empty() => return Err(Attempt::Stale),
            Err(e) => return Err(Attempt::Failed(e)),
        };
        first = false;
        let mut fields = [httparse::EMPTY_HEADER; 128];
        let mut resp = httparse::Response::new(&mut fields);
        match resp.parse(&raw) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return Err(Attempt::Failed(UpstreamError::Protocol("malformed response head"))),
        }
        let status = resp.code.ok_or(Attempt::Failed(UpstreamError::Protocol("no status")))?;
        if (100..200).contains(&status) && status != 101 {
            continue; // 100 Continue and other interim answers
        }
        let headers: Vec<(String, Vec<u8>)> =
            resp.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
        let chunked =
            headers.iter().any(|(n, v)| n == "transfer-encoding" && super::request::has_token(v, b"chunked"));
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| std::str::from_utf8(v).ok().and_then(|s| s.trim().parse::<u64>().ok()))
            .map(|n| n.ok_or(Attempt::Failed(UpstreamError::Protocol("bad content-length"))))
            .transpose()?;
        let body = if method == "HEAD" || status == 204 || status == 304 {
            BodyFraming::None
        } else if chunked {
            BodyFraming::Chunked
        } else if let Some(n) = length {
            BodyFraming::Length(n)
        } else {
            BodyFraming::Close
        };
        let closes = headers.iter().any(|(n, v)| n == "connection" && super::request::has_token(v, b"close"));
        let reusable = !closes && body != BodyFraming::Close;
        let _ = socket.set_read_timeout(Some(IDLE_TIMEOUT));
        return Ok(Exchange {
            reader,
            socket,
            status,
            headers,
            body,
            chunk_left: 0,
            origin,
            reusable,
            ended: false,
        });
    }
}

fn io_error(e: io::Error) -> UpstreamError {
    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
        UpstreamError::Timeout
    } else {
        UpstreamError::Connect(e.to_string())
    }
}

fn read_response_head(reader: &mut BufReader<Stream>) -> Result<Vec<u8>, UpstreamError> {
    let mut head = Vec::new();
    loop {
        let room = (MAX_RESPONSE_HEAD + 1).saturating_sub(head.len()) as u64;
        let n = reader.take(room).read_until(b'\n', &mut head).map_err(io_error)?;
        if n == 0 {
            return Err(UpstreamError::Protocol("the connection closed before a response"));
        }
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(head);
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(UpstreamError::Protocol("response head too large"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_must_be_loopback_http_origins() {
        assert_eq!(
            Origin::loopback_override("http://127.0.0.1:8080").unwrap(),
            Origin { tls: false, host: "127.0.0.1".into(), port: 8080 }
        );
        assert!(Origin::loopback_override("http://[::1]:80/").is_ok());
        assert!(Origin::loopback_override("http://localhost:9").is_ok());
        assert!(Origin::loopback_override("http://10.0.0.1:80").is_err());
        assert!(Origin::loopback_override("https://127.0.0.1:80").is_err());
        assert!(Origin::loopback_override("http://127.0.0.1:80/v1").is_err());
        assert!(Origin::loopback_override("http://evil.example:80").is_err());
    }
}
