/*!
The proxy's side towards the provider: a small HTTP/1.1 client of our own
over a fresh TCP connection per request, TLS with rustls and the platform
verifier. Our own because streaming needs what a general client hides: the
raw socket (so a departed sandbox can shut the upstream request down from
another thread), a per-read idle timeout with no total budget, and the
difference between a body that ended cleanly and one that was cut.
*/
#![forbid(unsafe_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_platform_verifier::BuilderVerifierExt;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .and_then(|b| b.with_platform_verifier())
                .map(|b| Arc::new(b.with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// Whether the proxy may connect to `ip` for a real (not overridden)
/// origin: never link-local or cloud metadata addresses.
fn allowed_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_link_local(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0) != 0xfe80 && !(s[0] == 0xfd00 && s[1] == 0x0ec2)
        }
    }
}

/// A request on its way: the response head has been read.
pub struct Exchange {
    reader: BufReader<Stream>,
    /// A second handle on the socket, to shut it down from elsewhere.
    pub socket: TcpStream,
    pub status: u16,
    pub reason: String,
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

/// How long an idle upstream connection is kept for the next request
/// (providers close theirs after about a minute).
pub const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle upstream connections kept at most.
const POOL_MAX: usize = 16;

/// An upstream connection between requests.
struct Idle {
    origin: Origin,
    since: std::time::Instant,
    reader: BufReader<Stream>,
    socket: TcpStream,
}

/// Idle connections whose last answer ended cleanly, by origin.
fn pool() -> &'static std::sync::Mutex<Vec<Idle>> {
    static POOL: OnceLock<std::sync::Mutex<Vec<Idle>>> = OnceLock::new();
    POOL.get_or_init(|| std::sync::Mutex::new(Vec::new()))
}

/// An idle connection to `origin`, the freshest first; stale ones dropped.
fn take_idle(origin: &Origin) -> Option<Idle> {
    let mut idle = pool().lock().unwrap_or_else(|e| e.into_inner());
    idle.retain(|c| c.since.elapsed() < POOL_IDLE);
    let at = idle.iter().rposition(|c| c.origin == *origin)?;
    Some(idle.remove(at))
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

/// A fresh connection (TLS set up lazily by the first write).
fn connect(origin: &Origin) -> Result<(BufReader<Stream>, TcpStream), UpstreamError> {
    let addrs: Vec<SocketAddr> = (origin.host.as_str(), origin.port)
        .to_socket_addrs()
        .map_err(|e| UpstreamError::Connect(e.to_string()))?
        .filter(|a| !origin.tls || allowed_address(a.ip()))
        .collect();
    let mut last = UpstreamError::Connect("no usable address".into());
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = UpstreamError::Connect(e.to_string()),
        }
    }
    let tcp = tcp.ok_or(last)?;
    let _ = tcp.set_nodelay(true);
    let socket = tcp.try_clone().map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(60)));
    let stream = if origin.tls {
        let config = tls_config().map_err(UpstreamError::Connect)?;
        let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
            .map_err(|_| UpstreamError::Connect("bad host name".into()))?;
        let conn =
            rustls::ClientConnection::new(config, name).map_err(|e| UpstreamError::Connect(e.to_string()))?;
        Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
    } else {
        Stream::Plain(tcp)
    };
    Ok((BufReader::with_capacity(16 * 1024, stream), socket))
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
        let reason = resp.reason.unwrap_or("").to_owned();
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
            reason,
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

impl Exchange {
    /// Whether the response has a known length (forwarded as
    /// `Content-Length`), and what it is.
    pub fn content_length(&self) -> Option<u64> {
        match self.body {
            BodyFraming::None => Some(0),
            BodyFraming::Length(n) => Some(n),
            _ => None,
        }
    }

    /// The next piece of the body as it arrives. An error is a body that
    /// did not end as its framing says (a reset, an early close, a
    /// timeout): the caller passes it on as an abort.
    pub fn read(&mut self) -> Result<Read2, UpstreamError> {
        let piece = self.read_piece();
        if matches!(piece, Ok(Read2::End)) {
            self.ended = true;
        }
        piece
    }

    fn read_piece(&mut self) -> Result<Read2, UpstreamError> {
        match self.body {
            BodyFraming::None | BodyFraming::Length(0) => Ok(Read2::End),
            BodyFraming::Length(left) => {
                let buf = self.reader.fill_buf().map_err(io_error)?;
                if buf.is_empty() {
                    return Err(UpstreamError::Protocol("the body ended short of its length"));
                }
                let n = buf.len().min(left as usize);
                let data = buf[..n].to_vec();
                self.reader.consume(n);
                self.body = BodyFraming::Length(left - n as u64);
                Ok(Read2::Data(data))
            }
            BodyFraming::Close => {
                let buf = self.reader.fill_buf().map_err(io_error)?;
                if buf.is_empty() {
                    self.body = BodyFraming::None;
                    return Ok(Read2::End);
                }
                let data = buf.to_vec();
                let n = data.len();
                self.reader.consume(n);
                Ok(Read2::Data(data))
            }
            BodyFraming::Chunked => self.read_chunk(),
        }
    }

    /// The next piece of a chunked body: as much of the current chunk as
    /// has arrived, at most 64 KiB (a chunk's announced size is never
    /// allocated up front).
    fn read_chunk(&mut self) -> Result<Read2, UpstreamError> {
        const CUT: UpstreamError = UpstreamError::Protocol("the chunked body was cut");
        if self.chunk_left > 0 {
            let buf = self.reader.fill_buf().map_err(io_error)?;
            if buf.is_empty() {
                return Err(CUT);
            }
            let n = buf.len().min(64 * 1024).min(usize::try_from(self.chunk_left).unwrap_or(usize::MAX));
            let data = buf[..n].to_vec();
            self.reader.consume(n);
            self.chunk_left -= n as u64;
            if self.chunk_left == 0 {
                let mut crlf = [0u8; 2];
                self.reader.read_exact(&mut crlf).map_err(|_| CUT)?;
                if &crlf != b"\r\n" {
                    return Err(UpstreamError::Protocol("bad chunk framing"));
                }
            }
            return Ok(Read2::Data(data));
        }
        let mut line = Vec::new();
        let n = (&mut self.reader).take(4096).read_until(b'\n', &mut line).map_err(io_error)?;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(UpstreamError::Protocol("the chunked body was cut"));
        }
        let size_text = line.split(|&b| b == b';' || b == b'\r' || b == b'\n').next().unwrap_or_default();
        let size = std::str::from_utf8(size_text.trim_ascii())
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or(UpstreamError::Protocol("bad chunk size"))?;
        if size == 0 {
            // trailers up to the empty line
            loop {
                line.clear();
                let n = (&mut self.reader).take(4096).read_until(b'\n', &mut line).map_err(io_error)?;
                if n == 0 {
                    return Err(UpstreamError::Protocol("the chunked body was cut"));
                }
                if line == b"\r\n" || line == b"\n" {
                    self.body = BodyFraming::None;
                    return Ok(Read2::End);
                }
            }
        }
        self.chunk_left = size;
        self.read_chunk()
    }

    /// Stops the request: the provider sees the connection close.
    pub fn abort(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }

    /// Done with the answer: the connection goes back to the pool when the
    /// body ended cleanly, the provider keeps it open and nothing more
    /// arrived; otherwise it closes.
    pub fn release(self) {
        if !(self.ended && self.reusable && self.reader.buffer().is_empty()) {
            return;
        }
        let mut idle = pool().lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|c| c.since.elapsed() < POOL_IDLE);
        if idle.len() >= POOL_MAX {
            idle.remove(0);
        }
        idle.push(Idle {
            origin: self.origin,
            since: std::time::Instant::now(),
            reader: self.reader,
            socket: self.socket,
        });
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

    #[test]
    fn metadata_and_link_local_addresses_are_refused() {
        assert!(!allowed_address("169.254.169.254".parse().unwrap()));
        assert!(!allowed_address("fe80::1".parse().unwrap()));
        assert!(!allowed_address("fd00:ec2::254".parse().unwrap()));
        assert!(allowed_address("104.18.0.1".parse().unwrap()));
    }
}
