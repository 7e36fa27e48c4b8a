/*!
Reading one HTTP/1.1 request from the sandbox, strictly: the head with
`httparse` after checks of our own on the raw bytes, then the body from our
own framing (`Content-Length` or chunked). Every refusal is a [`Refusal`]:
the status, the rule's name for the audit line, and a fixed message.
Nothing of the request's framing is forwarded; the caller re-frames.
*/
#![forbid(unsafe_code)]

use std::io::{self, BufRead, Read, Write};

/// The largest request head.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields.
pub const MAX_HEADERS: usize = 100;
/// The time a request head may take from its first byte.
pub const HEAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// A refused request: the status, the rule (audit), the message (body).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub rule: &'static str,
    pub message: &'static str,
    /// Whether the connection must close after the answer (the framing
    /// cannot be trusted).
    pub close: bool,
}

const fn refuse(status: u16, rule: &'static str, message: &'static str, close: bool) -> Refusal {
    Refusal { status, rule, message, close }
}

pub const HEAD_TOO_LARGE: Refusal =
    refuse(431, "head-too-large", "the request head is over 64 KiB or 100 fields", true);
pub const MALFORMED: Refusal = refuse(400, "malformed", "the request is not well-formed HTTP/1.1", true);
pub const OBS_FOLD: Refusal = refuse(400, "obs-fold", "folded header lines are not accepted", true);
pub const FRAMING: Refusal =
    refuse(400, "framing", "ambiguous request framing (Content-Length and Transfer-Encoding)", true);
pub const CONNECT: Refusal = refuse(405, "connect", "CONNECT is not served", true);
pub const TARGET_FORM: Refusal =
    refuse(400, "target-form", "only origin-form request targets are served", false);
pub const PATH: Refusal = refuse(400, "path", "the path is not canonical", false);
pub const UNKNOWN_ROUTE: Refusal = refuse(404, "unknown-route", "no route for this host", false);
pub const UPGRADE: Refusal = refuse(501, "upgrade", "protocol upgrades (WebSocket) are not served", false);
pub const NOT_ALLOWED: Refusal = refuse(403, "not-allowed", "this method and path are not allowed", false);
pub const NO_SENTINEL: Refusal =
    refuse(401, "sentinel", "no valid credential for this route: use the one the daemon serves", false);
pub const BODY_TOO_LARGE: Refusal = refuse(413, "body-too-large", "the request body is over the limit", true);
pub const ENCODING: Refusal = refuse(415, "encoding", "compressed request bodies are not accepted", false);
pub const NOT_JSON: Refusal = refuse(400, "not-json", "the request body is not JSON", false);
pub const MCP: Refusal =
    refuse(403, "mcp", "request bodies naming remote tool servers (MCP) are not allowed", false);
pub const KEY_IN_URL: Refusal = refuse(403, "key-in-url", "a credential in the URL is not accepted", false);
pub const BUSY: Refusal = refuse(503, "busy", "too many large request bodies at once; try again", true);
pub const SLOW: Refusal = refuse(408, "slow", "the request was not sent in time", true);

/// A request head that passed the checks.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    /// The route host (the first path segment).
    pub host: String,
    /// The path after the route host, from its `/`.
    pub path: String,
    /// The query (after `?`), if any.
    pub query: Option<String>,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Framing,
    /// The client asked to close after this request.
    pub close: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
}

impl Head {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
}

/// Reads a request head. `Ok(None)`: the client closed before sending a
/// byte (the end of a keep-alive connection).
pub fn read_head(reader: &mut impl BufRead) -> Result<Option<Vec<u8>>, Refusal> {
    let mut head = Vec::with_capacity(1024);
    // Once a head has begun it must be complete within this (a trickle of
    // bytes would otherwise hold the connection's slot for ever).
    let mut began: Option<std::time::Instant> = None;
    loop {
        if began.is_some_and(|t| t.elapsed() > HEAD_DEADLINE) {
            return Err(SLOW);
        }
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return if head.is_empty() { Ok(None) } else { Err(SLOW) };
            }
            Err(_) => return Ok(None),
        };
        if available.is_empty() {
            return if head.is_empty() { Ok(None) } else { Err(MALFORMED) };
        }
        // Take bytes up to the end of the head, no further (the body stays).
        let mut taken = 0;
        let mut done = false;
        for &b in available {
            head.push(b);
            taken += 1;
            if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
                done = true;
                break;
            }
            if head.len() > MAX_HEAD {
                break;
            }
        }
        reader.consume(taken);
        began.get_or_insert_with(std::time::Instant::now);
        if head.len() > MAX_HEAD {
            return Err(HEAD_TOO_LARGE);
        }
        if done {
            return Ok(Some(head));
        }
    }
}

/// Checks and parses a head read by [`read_head`].
pub fn parse_head(raw: &[u8]) -> Result<Head, Refusal> {
    // Our own checks first, on the raw bytes: bare LF, folded lines,
    // control characters.
    for (i, &b) in raw.iter().enumerate() {
        if b == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
            return Err(MALFORMED);
        }
        if b == b'\r' && raw.get(i + 1) != Some(&b'\n') {
            return Err(MALFORMED);
        }
        if b == b'\n' && matches!(raw.get(i + 1), Some(b' ' | b'\t')) {
            return Err(OBS_FOLD);
        }
        if (b < 0x20 && !matches!(b, b'\r' | b'\n' | b'\t')) || b == 0x7f {
            return Err(MALFORMED);
        }
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(raw) {
        Ok(httparse::Status::Complete(n)) if n == raw.len() => {}
        Err(httparse::Error::TooManyHeaders) => return Err(HEAD_TOO_LARGE),
        _ => return Err(MALFORMED),
    }
    if req.version != Some(1) {
        return Err(MALFORMED);
    }
    let method = req.method.ok_or(MALFORMED)?.to_owned();
    if method == "CONNECT" {
        return Err(CONNECT);
    }
    let target = req.path.ok_or(MALFORMED)?;
    if !target.starts_with('/') {
        return Err(TARGET_FORM);
    }
    let headers: Vec<(String, Vec<u8>)> =
        req.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect();
    fn all<'h>(headers: &'h [(String, Vec<u8>)], name: &'static str) -> impl Iterator<Item = &'h [u8]> {
        headers.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_slice())
    }
    // Framing: one plain Content-Length, or exactly `chunked`, never both.
    let lengths: Vec<&[u8]> = all(&headers, "content-length").collect();
    let encodings: Vec<&[u8]> = all(&headers, "transfer-encoding").collect();
    let body = match (lengths.as_slice(), encodings.as_slice()) {
        ([], []) => Framing::None,
        ([len], []) => {
            if len.is_empty() || !len.iter().all(u8::is_ascii_digit) || len.len() > 15 {
                return Err(FRAMING);
            }
            let n: u64 = std::str::from_utf8(len).ok().and_then(|s| s.parse().ok()).ok_or(FRAMING)?;
            if n == 0 { Framing::None } else { Framing::Length(n) }
        }
        ([], [te]) if te.eq_ignore_ascii_case(b"chunked") => Framing::Chunked,
        _ => return Err(FRAMING),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    check_path(path)?;
    let rest = &path[1..];
    let (host, tail) = rest.split_once('/').map_or((rest, ""), |(h, t)| (h, t));
    let close = all(&headers, "connection").any(|v| has_token(v, b"close"));
    let expect_continue = all(&headers, "expect").any(|v| v.eq_ignore_ascii_case(b"100-continue"));
    Ok(Head {
        method,
        host: host.to_owned(),
        path: format!("/{tail}"),
        query,
        headers,
        body,
        close,
        expect_continue,
    })
}

/// Whether a comma-separated header value holds `token`.
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// The path must be canonical: no `#`, backslash, encoded `.`, `/`, `\`
/// or NUL, and no empty, `.` or `..` segment.
fn check_path(path: &str) -> Result<(), Refusal> {
    if path.contains(['#', '\\']) {
        return Err(PATH);
    }
    let lower = path.to_ascii_lowercase();
    if ["%2e", "%2f", "%5c", "%00"].iter().any(|e| lower.contains(e)) {
        return Err(PATH);
    }
    if path.len() > 1 && path[1..].split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(PATH);
    }
    if path == "/" {
        return Err(UNKNOWN_ROUTE);
    }
    Ok(())
}

/// Reads the body framed as `framing`, at most `max` bytes, answering
/// `100 Continue` first when the client waits for it.
pub fn read_body(
    reader: &mut impl BufRead,
    writer: &mut impl Write,
    head: &Head,
    max: usize,
) -> Result<Vec<u8>, Refusal> {
    if head.body != Framing::None && head.expect_continue {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").map_err(|_| MALFORMED)?;
    }
    let timed = |e: io::Error| {
        if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) { SLOW } else { MALFORMED }
    };
    match head.body {
        Framing::None => Ok(Vec::new()),
        Framing::Length(n) => {
            if n > max as u64 {
                return Err(BODY_TOO_LARGE);
            }
            let mut body = vec![0u8; n as usize];
            reader.read_exact(&mut body).map_err(timed)?;
            Ok(body)
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            loop {
                let mut line = Vec::new();
                read_line(reader, &mut line).map_err(timed)?;
                let size_part = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
                if size_part.is_empty()
                    || size_part.len() > 15
                    || !size_part.iter().all(u8::is_ascii_hexdigit)
                {
                    return Err(FRAMING);
                }
                let size = usize::from_str_radix(std::str::from_utf8(size_part).map_err(|_| FRAMING)?, 16)
                    .map_err(|_| FRAMING)?;
                if size == 0 {
                    // trailers, dropped, up to the empty line
                    loop {
                        line.clear();
                        read_line(reader, &mut line).map_err(timed)?;
                        if line.is_empty() {
                            return Ok(body);
                        }
                    }
                }
                if body.len() + size > max {
                    return Err(BODY_TOO_LARGE);
                }
                let start = body.len();
                body.resize(start + size, 0);
                reader.read_exact(&mut body[start..]).map_err(timed)?;
                let mut crlf = [0u8; 2];
                reader.read_exact(&mut crlf).map_err(timed)?;
                if &crlf != b"\r\n" {
                    return Err(FRAMING);
                }
            }
        }
    }
}

/// One CRLF-terminated line (without it), at most 4 KiB.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<()> {
    let n = reader.take(4096).read_until(b'\n', line)?;
    if n == 0 || !line.ends_with(b"\r\n") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad chunk line"));
    }
    line.truncate(line.len() - 2);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Head, Refusal> {
        parse_head(text.as_bytes())
    }

    #[test]
    fn smuggling_shapes_and_odd_targets_are_refused() {
        let ok = parse(
            "POST /api.openai.com/v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (ok.host.as_str(), ok.path.as_str(), ok.query.as_deref()),
            ("api.openai.com", "/v1/chat/completions", Some("x=1"))
        );
        assert_eq!(ok.body, Framing::Length(5));
        for (text, want) in [
            ("POST /a/b HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", FRAMING),
            ("POST /a/b HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", FRAMING),
            ("POST /a/b HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n", FRAMING),
            ("POST /a/b HTTP/1.1\r\nContent-Length: +5\r\n\r\n", FRAMING),
            ("POST /a/b HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", FRAMING),
            ("GET /a/b HTTP/1.1\r\nX: a\r\n b\r\n\r\n", OBS_FOLD),
            ("GET /a/b HTTP/1.1\nX: a\n\n", MALFORMED),
            ("GET /a/b HTTP/1.0\r\n\r\n", MALFORMED),
            ("GET /a/b HTTP/1.1\r\nX : a\r\n\r\n", MALFORMED),
            ("CONNECT a:443 HTTP/1.1\r\n\r\n", CONNECT),
            ("GET http://a/b HTTP/1.1\r\n\r\n", TARGET_FORM),
            ("GET * HTTP/1.1\r\n\r\n", TARGET_FORM),
            ("GET /a/%2e%2e/b HTTP/1.1\r\n\r\n", PATH),
            ("GET /a/%2F HTTP/1.1\r\n\r\n", PATH),
            ("GET /a//b HTTP/1.1\r\n\r\n", PATH),
            ("GET /a/../b HTTP/1.1\r\n\r\n", PATH),
            ("GET /a/b\\c HTTP/1.1\r\n\r\n", PATH),
        ] {
            assert_eq!(parse(text).unwrap_err(), want, "{text:?}");
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_within_the_limit() {
        let head = parse("POST /a/b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        let mut input: &[u8] = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nTrailer: x\r\n\r\n";
        assert_eq!(read_body(&mut input, &mut Vec::new(), &head, 100).unwrap(), b"abcde");
        let mut input: &[u8] = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(read_body(&mut input, &mut Vec::new(), &head, 4).unwrap_err(), BODY_TOO_LARGE);
        let mut input: &[u8] = b"zz\r\nabc\r\n";
        assert_eq!(read_body(&mut input, &mut Vec::new(), &head, 100).unwrap_err(), FRAMING);
    }
}
