/*!
The login flows' steps against a provider, each a plain function over
[`Http`]: PKCE material and the authorization URL, the authorization-code
exchange, the device authorization (RFC 8628 and OpenAI's variant) and its
polling, and the loopback listener of the browser redirect.

The session table ([`super::sessions`]) strings these steps together and
decides what crosses the socket. Nothing here logs or returns a secret in
an error: a [`FlowError`] carries a wire code and a message built from
fixed text, HTTP statuses and OAuth error codes that passed
[`safe_error_code`](super::http::safe_error_code).
*/
#![forbid(unsafe_code)]

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::http::{Http, UpstreamError, classify, safe_error_code};
use super::provider::{Device, DeviceStyle, Encoding, Provider};
use crate::protocol::message::FlowFailure;
use crate::secret::SecretString;
use crate::token::{OAuthToken, now_unix_seconds};

/// RFC 8628's device-code grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Poll interval when the provider names none (RFC 8628 §3.2).
pub const DEFAULT_DEVICE_INTERVAL: Duration = Duration::from_secs(5);
/// Added to the poll interval on each `slow_down` (RFC 8628 §3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// Device-code lifetime when the provider names none (OpenAI's is 15 min).
pub const DEFAULT_DEVICE_EXPIRES_IN: Duration = Duration::from_secs(900);
/// How long the browser's request to the loopback listener may take.
pub const CALLBACK_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest browser request read by the loopback listener.
const MAX_CALLBACK_REQUEST: usize = 16 * 1024;

/// Why a login step failed: a kind (the wire shows only its code and a
/// fixed text) and the details, for the host's log and terminal only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowError {
    /// What went wrong.
    pub kind: FlowFailure,
    /// Statuses, safe OAuth error codes, the step that failed. Never sent.
    pub detail: String,
}

impl FlowError {
    /// A flow error.
    pub fn new(kind: FlowFailure, detail: impl Into<String>) -> FlowError {
        FlowError { kind, detail: detail.into() }
    }
}

impl fmt::Display for FlowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.detail, self.kind.as_str())
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `n` random bytes, base64url without padding.
fn random_b64url(n: usize) -> io::Result<SecretString> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; n]);
    crate::random::fill(&mut buf)?;
    Ok(SecretString::new(b64url(&buf)))
}

/// A PKCE verifier and its S256 challenge (RFC 7636).
pub struct Pkce {
    /// The verifier: stays on the host.
    pub verifier: SecretString,
    /// base64url(SHA-256(verifier)): goes into the authorization URL.
    pub challenge: String,
}

impl Pkce {
    /// A verifier of `bytes` random bytes (32 for Anthropic, 64 for Codex).
    pub fn new(bytes: usize) -> io::Result<Pkce> {
        let verifier = random_b64url(bytes.clamp(32, 96))?;
        let challenge = b64url(&Sha256::digest(verifier.expose().as_bytes()));
        Ok(Pkce { verifier, challenge })
    }
}

/// A fresh OAuth `state`: 32 random bytes, base64url. Independent of the
/// verifier (llxprt-code reuses the verifier as the state, which puts the
/// verifier into the URL the sandbox sees; here it never leaves the host).
pub fn new_state() -> io::Result<SecretString> {
    random_b64url(32)
}

/// Percent-encodes a query component (RFC 3986 unreserved characters kept,
/// space as `%20`).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded query component (`+` is a space).
pub fn query_unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The authorization URL the user opens: the provider's authorize
/// endpoint with its extra parameters, the client, the redirect, the
/// scope, the S256 challenge and the state.
pub fn authorize_url(provider: &Provider, redirect_uri: &str, challenge: &str, state: &str) -> String {
    let login = &provider.login;
    let base = login.authorize_url.as_deref().unwrap_or_default();
    let mut params: Vec<(&str, &str)> = Vec::new();
    let (before, after): (Vec<_>, Vec<_>) = login.authorize_params.iter().partition(|(k, _)| k == "code");
    params.extend(before.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    params.extend([
        ("response_type", "code"),
        ("client_id", provider.client_id.as_str()),
        ("redirect_uri", redirect_uri),
        ("scope", login.scope.as_str()),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]);
    params.extend(after.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    params.push(("state", state));
    let query: Vec<String> = params
        .iter()
        .filter(|(k, v)| !(k == &"scope" && v.is_empty()))
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", query.join("&"))
}

/// Compares two secrets without an early exit.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

/// Splits what the user pasted in the code-paste flow: `code#state`.
/// Whitespace around it is ignored. A paste without `#state` is refused:
/// the state is what proves the code belongs to this login.
pub fn split_pasted_code(pasted: &str) -> Result<(&str, &str), FlowError> {
    let pasted = pasted.trim();
    match pasted.split_once('#') {
        Some((code, state)) if !code.is_empty() && !state.is_empty() => Ok((code, state)),
        _ => Err(FlowError::new(FlowFailure::BadPaste, "the pasted text is not code#state")),
    }
}

fn upstream(kind: FlowFailure, what: &str, e: &UpstreamError) -> FlowError {
    FlowError::new(kind, format!("{what}: {e}"))
}

/// Exchanges an authorization code for a token at the provider's token
/// endpoint (RFC 6749 §4.1.3 with the PKCE verifier; `state` too when
/// given, as Anthropic's endpoint expects).
pub fn exchange_code(
    http: &Http,
    provider: &Provider,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
    state: Option<&str>,
    timeout: Duration,
) -> Result<OAuthToken, FlowError> {
    let mut fields: Vec<(&str, &str)> = vec![("grant_type", "authorization_code"), ("code", code)];
    if let Some(state) = state {
        fields.push(("state", state));
    }
    fields.extend([
        ("client_id", provider.client_id.as_str()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ]);
    if let Some(secret) = &provider.client_secret {
        fields.push(("client_secret", secret.expose()));
    }
    let failed = |e: &UpstreamError| {
        upstream(FlowFailure::ExchangeFailed, "The provider refused the authorization code", e)
    };
    let answer = http
        .post(&provider.token_url, &fields, provider.login.exchange_encoding, timeout)
        .map_err(|e| failed(&e))?;
    let map = classify(answer.status, &answer.body).map_err(|e| failed(&e))?;
    provider.token_from_answer(&map, now_unix_seconds()).map_err(|bad| {
        FlowError::new(
            FlowFailure::ExchangeFailed,
            format!("The provider's token answer is unusable: {}", bad.0),
        )
    })
}

/// A started device authorization. The device code stays on the host.
pub struct DeviceStart {
    /// RFC 8628 `device_code`, or OpenAI's `device_auth_id`.
    pub device_code: SecretString,
    /// The code the user types.
    pub user_code: String,
    /// The page the user opens.
    pub verification_uri: String,
    /// That page with the user code filled in, when there is one.
    pub verification_uri_complete: Option<String>,
    /// Unscaled poll interval.
    pub interval: Duration,
    /// Lifetime of the device code.
    pub expires_in: Duration,
}

fn seconds(v: Option<&Value>) -> Option<u64> {
    let n = match v? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (n.is_finite() && (1.0..=86_400.0).contains(&n)).then_some(n as u64)
}

fn string_field(map: &Map<String, Value>, name: &str) -> Option<String> {
    map.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// A user code or URL from a provider, checked before it is shown:
/// printable ASCII, no spaces, bounded.
fn shown(s: Option<String>, max: usize) -> Option<String> {
    s.filter(|s| s.len() <= max && s.bytes().all(|b| b.is_ascii_graphic()))
}

/// Asks the provider for a device code.
pub fn device_start(
    http: &Http,
    provider: &Provider,
    device: &Device,
    timeout: Duration,
) -> Result<DeviceStart, FlowError> {
    let failed = |e: &UpstreamError| {
        upstream(FlowFailure::StartFailed, "The provider refused to start a device login", e)
    };
    let secret = provider.client_secret.as_ref().map(|s| s.expose());
    let (fields, encoding): (Vec<(&str, &str)>, Encoding) = match device.style {
        DeviceStyle::Codex => (vec![("client_id", provider.client_id.as_str())], Encoding::Json),
        DeviceStyle::Rfc8628 => {
            let mut f = vec![("client_id", provider.client_id.as_str())];
            if !provider.login.scope.is_empty() {
                f.push(("scope", provider.login.scope.as_str()));
            }
            if let Some(s) = secret {
                f.push(("client_secret", s));
            }
            (f, Encoding::Form)
        }
    };
    let answer = http.post(&device.code_url, &fields, encoding, timeout).map_err(|e| failed(&e))?;
    if device.style == DeviceStyle::Codex && answer.status == 404 {
        return Err(FlowError::new(FlowFailure::DeviceNotEnabled, "the device-code endpoint answered 404"));
    }
    let map = classify(answer.status, &answer.body).map_err(|e| failed(&e))?;
    let code_field = if device.style == DeviceStyle::Codex { "device_auth_id" } else { "device_code" };
    let bad = |what: &str| {
        FlowError::new(FlowFailure::StartFailed, format!("The provider's device answer has no usable {what}"))
    };
    let device_code = string_field(&map, code_field).ok_or_else(|| bad(code_field))?;
    let user_code = shown(string_field(&map, "user_code"), 64).ok_or_else(|| bad("user_code"))?;
    let verification_uri = shown(
        string_field(&map, "verification_uri")
            .or_else(|| string_field(&map, "verification_url"))
            .or_else(|| device.verification_url.clone()),
        2048,
    )
    .ok_or_else(|| bad("verification_uri"))?;
    let verification_uri_complete =
        shown(string_field(&map, "verification_uri_complete"), 2048).or_else(|| {
            (device.style == DeviceStyle::Codex)
                .then(|| format!("{verification_uri}?user_code={}", query_escape(&user_code)))
        });
    Ok(DeviceStart {
        device_code: SecretString::new(device_code),
        user_code,
        verification_uri,
        verification_uri_complete,
        interval: seconds(map.get("interval")).map_or(DEFAULT_DEVICE_INTERVAL, Duration::from_secs),
        expires_in: seconds(map.get("expires_in")).map_or(DEFAULT_DEVICE_EXPIRES_IN, Duration::from_secs),
    })
}

/// One poll of a device authorization.
pub enum DevicePoll {
    /// The user has not finished yet.
    Pending,
    /// Poll less often (`slow_down`, or HTTP 429).
    SlowDown,
    /// The user said no.
    Denied,
    /// The device code expired.
    Expired,
    /// A failure worth another poll (5xx, timeout, connection).
    Transient(UpstreamError),
    /// Any other failure: the login is over.
    Failed(FlowError),
    /// RFC 8628: the token.
    Token(OAuthToken),
    /// OpenAI: approved; exchange this code with this server-issued verifier.
    Approved {
        /// The authorization code.
        code: SecretString,
        /// The PKCE verifier the server generated.
        verifier: SecretString,
    },
}

/// Sorts a poll's failed answer by its OAuth error code.
fn poll_error(status: u16, body: &str, style: DeviceStyle) -> DevicePoll {
    match safe_error_code(body).as_deref() {
        Some("authorization_pending") => DevicePoll::Pending,
        Some("slow_down") => DevicePoll::SlowDown,
        Some("access_denied") => DevicePoll::Denied,
        Some("expired_token") => DevicePoll::Expired,
        _ if status == 429 => DevicePoll::SlowDown,
        _ if style == DeviceStyle::Codex && matches!(status, 403 | 404) => DevicePoll::Pending,
        _ => match classify(status, body) {
            Err(e @ UpstreamError::Transient(_)) => DevicePoll::Transient(e),
            Err(e) => DevicePoll::Failed(upstream(
                FlowFailure::PollFailed,
                "The provider refused the device login",
                &e,
            )),
            Ok(_) => DevicePoll::Failed(FlowError::new(
                FlowFailure::PollFailed,
                "The provider's answer is unusable",
            )),
        },
    }
}

/// Polls a device authorization once.
pub fn device_poll(
    http: &Http,
    provider: &Provider,
    device: &Device,
    start: &DeviceStart,
    timeout: Duration,
) -> DevicePoll {
    let secret = provider.client_secret.as_ref().map(|s| s.expose());
    let code = start.device_code.expose();
    let sent = match device.style {
        DeviceStyle::Codex => {
            let url = device.poll_url.as_deref().unwrap_or_default();
            http.post(
                url,
                &[("device_auth_id", code), ("user_code", start.user_code.as_str())],
                Encoding::Json,
                timeout,
            )
        }
        DeviceStyle::Rfc8628 => {
            let mut fields = vec![
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", code),
                ("client_id", provider.client_id.as_str()),
            ];
            if let Some(s) = secret {
                fields.push(("client_secret", s));
            }
            http.post(&provider.token_url, &fields, Encoding::Form, timeout)
        }
    };
    let answer = match sent {
        Ok(a) => a,
        Err(e @ UpstreamError::Transient(_)) => return DevicePoll::Transient(e),
        Err(e) => {
            return DevicePoll::Failed(upstream(FlowFailure::PollFailed, "Polling the provider failed", &e));
        }
    };
    if !(200..300).contains(&answer.status) {
        return poll_error(answer.status, &answer.body, device.style);
    }
    let map = match classify(answer.status, &answer.body) {
        Ok(m) => m,
        Err(e) => {
            return DevicePoll::Failed(upstream(FlowFailure::PollFailed, "Polling the provider failed", &e));
        }
    };
    match device.style {
        DeviceStyle::Rfc8628 => match provider.token_from_answer(&map, now_unix_seconds()) {
            Ok(t) => DevicePoll::Token(t),
            Err(bad) => DevicePoll::Failed(FlowError::new(
                FlowFailure::PollFailed,
                format!("The provider's token answer is unusable: {}", bad.0),
            )),
        },
        DeviceStyle::Codex => {
            match (string_field(&map, "authorization_code"), string_field(&map, "code_verifier")) {
                (Some(code), Some(verifier)) => DevicePoll::Approved {
                    code: SecretString::new(code),
                    verifier: SecretString::new(verifier),
                },
                _ => DevicePoll::Failed(FlowError::new(
                    FlowFailure::PollFailed,
                    "The provider's approval has no authorization code or verifier",
                )),
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::provider::Providers;

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        let p = Pkce::new(32).unwrap();
        assert_eq!(p.verifier.expose().len(), 43);
        assert_eq!(p.challenge, b64url(&Sha256::digest(p.verifier.expose().as_bytes())));
        assert_eq!(Pkce::new(64).unwrap().verifier.expose().len(), 86);
        // RFC 7636 appendix B
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(b64url(&Sha256::digest(v.as_bytes())), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_ne!(new_state().unwrap().expose(), new_state().unwrap().expose());
    }

    #[test]
    fn authorize_urls_carry_llxprt_codes_parameters() {
        let providers = Providers::builtin();
        let a = providers.get("anthropic").unwrap();
        let url = authorize_url(a, "https://console.anthropic.com/oauth/code/callback", "CH", "ST");
        assert_eq!(
            url,
            "https://claude.ai/oauth/authorize?code=true&response_type=code&client_id=9d1c250a-e61b-44d9-88ed-5944d1962f5e\
&redirect_uri=https%3A%2F%2Fconsole.anthropic.com%2Foauth%2Fcode%2Fcallback&scope=org%3Acreate_api_key%20user%3Aprofile%20user%3Ainference\
&code_challenge=CH&code_challenge_method=S256&state=ST"
        );
        let c = providers.get("codex").unwrap();
        let url = authorize_url(c, "http://localhost:1455/auth/callback", "CH", "ST");
        assert!(url.starts_with("https://auth.openai.com/oauth/authorize?response_type=code&client_id=app_EMoamEEZ73f0CkXaXp7hrann"));
        assert!(url.contains("&scope=openid%20profile%20email%20offline_access&"));
        assert!(url.contains(
            "&id_token_add_organizations=true&codex_cli_simplified_flow=true&originator=codex_cli_rs&state=ST"
        ));
    }

    #[test]
    fn query_escaping_round_trips() {
        for s in ["a b", "x/y?z=1&w#v", "ümlaut", "plain-_.~"] {
            assert_eq!(query_unescape(&query_escape(s)), s);
        }
        assert_eq!(query_unescape("a+b%2"), "a b%2");
        assert_eq!(query_unescape("%zz"), "%zz");
    }

    #[test]
    fn a_paste_needs_code_and_state() {
        assert_eq!(split_pasted_code("  abc#def \n").unwrap(), ("abc", "def"));
        for bad in ["abc", "abc#", "#def", ""] {
            assert_eq!(split_pasted_code(bad).unwrap_err().kind, FlowFailure::BadPaste, "{bad}");
        }
        assert!(same_secret("x", "x") && !same_secret("x", "y"));
    }

    #[test]
    fn poll_errors_are_sorted_by_their_oauth_code() {
        let e = |code: &str| format!(r#"{{"error":"{code}"}}"#);
        assert!(matches!(
            poll_error(400, &e("authorization_pending"), DeviceStyle::Rfc8628),
            DevicePoll::Pending
        ));
        assert!(matches!(poll_error(400, &e("slow_down"), DeviceStyle::Rfc8628), DevicePoll::SlowDown));
        assert!(matches!(poll_error(400, &e("access_denied"), DeviceStyle::Codex), DevicePoll::Denied));
        assert!(matches!(poll_error(400, &e("expired_token"), DeviceStyle::Codex), DevicePoll::Expired));
        assert!(matches!(poll_error(403, "", DeviceStyle::Codex), DevicePoll::Pending));
        assert!(matches!(poll_error(403, "", DeviceStyle::Rfc8628), DevicePoll::Failed(_)));
        assert!(matches!(poll_error(503, "", DeviceStyle::Codex), DevicePoll::Transient(_)));
        assert!(matches!(poll_error(429, "", DeviceStyle::Codex), DevicePoll::SlowDown));
    }
}
