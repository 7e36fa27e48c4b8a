/*!
The proxy socket (SPEC §14): HTTP/1.1 from the sandbox, one thread per
connection, keep-alive. Each request is checked ([`super::request`]), its
sentinel swapped for the real credential on the host, sent to the route's
fixed origin ([`super::upstream`]), and the answer streamed back read by
read. A 401 to an OAuth token before anything reached the client gets one
refresh and one retry. Every request, refused or not, gets an audit line;
no header value, body, sentinel or credential is ever logged.
*/
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::io::{BufReader, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;
use zeroize::Zeroizing;

use super::request::{self, Framing, Head, Refusal};
use super::routes::{self, Api, Route};
use super::sentinel::Credential;
use super::upstream::{self, Exchange, Origin, Read2};
use crate::server::Shared;
use crate::store::{KeyStore, TokenStore};
use crate::sys;

/// Idle time between requests on a kept-alive connection (the client is
/// told 60 s and closes first).
pub const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(65);
/// A blocked write to a slow client gives up after this.
pub const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default request body limit (Anthropic's request limit).
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;
/// Connections the proxy socket serves at once.
pub const MAX_PROXY_CONNECTIONS: usize = 64;
/// Refused requests after which a connection is closed.
pub const MAX_REFUSALS_PER_CONNECTION: usize = 8;

/// Inject mode's settings.
#[derive(Clone, Debug, Default)]
pub struct InjectConfig {
    /// The proxy socket.
    pub proxy_socket: PathBuf,
    /// Request body limit.
    pub max_body: usize,
    /// Let bodies that name remote tool servers through (`--allow-mcp`).
    pub allow_mcp: bool,
    /// Providers whose real tokens are served (`--reveal`).
    pub reveal: BTreeSet<String>,
    /// Loopback origins replacing routes' HTTPS ones (tests).
    pub overrides: Vec<(&'static str, Origin)>,
}

impl InjectConfig {
    /// The `LLXPRT_CREDD_UPSTREAM_<HOST>_URL` overrides from `lookup`,
    /// each loopback only.
    pub fn overrides_from(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(&'static str, Origin)>, String> {
        let mut out = Vec::new();
        for route in routes::all() {
            let var = routes::override_var(route.host);
            if let Some(url) = lookup(&var).filter(|v| !v.is_empty()) {
                let origin = Origin::loopback_override(&url).map_err(|e| format!("{var}={url:?}: {e}"))?;
                out.push((route.host, origin));
            }
        }
        Ok(out)
    }

    fn origin(&self, route: &Route) -> Origin {
        self.overrides
            .iter()
            .find(|(h, _)| *h == route.host)
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| Origin::https(route.host))
    }
}

/// Accepts on the proxy socket until the daemon stops.
pub fn run(shared: Arc<Shared>, listener: UnixListener) {
    if listener.set_nonblocking(true).is_err() {
        crate::log_error!("the proxy socket cannot be polled; proxy stopped");
        return;
    }
    let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut next = 1u64;
    let mut last_cap_warning: Option<Instant> = None;
    while !shared.stopping.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => {
                crate::log_warn!("proxy accept failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let conn = next;
        next += 1;
        let _ = stream.set_nonblocking(false);
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_PROXY_CONNECTIONS {
            active.fetch_sub(1, Ordering::SeqCst);
            // at most one line a second for a flood of them
            let now = Instant::now();
            if last_cap_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                crate::log_warn!("proxy conn={conn} refused: {MAX_PROXY_CONNECTIONS} connections open (cap)");
                last_cap_warning = Some(now);
            }
            continue;
        }
        let (shared, slots) = (shared.clone(), active.clone());
        let spawned = std::thread::Builder::new().name(format!("proxy-{conn}")).spawn(move || {
            serve(&shared, conn, stream);
            slots.fetch_sub(1, Ordering::SeqCst);
        });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            crate::log_error!("proxy conn={conn} cannot start a thread: {e}");
        }
    }
}

/// What one request came to, for the audit line.
struct Audit {
    route: String,
    method: String,
    template: String,
    status: u16,
    bytes_in: usize,
    bytes_out: u64,
    ttfb: Option<Duration>,
    model: Option<String>,
    stream: Option<bool>,
    usage: super::usage::Usage,
    outcome: String,
}

fn serve(shared: &Shared, conn: u64, stream: UnixStream) {
    let peer = match sys::peer_cred(stream.as_raw_fd()) {
        Ok(p) => p,
        Err(e) => {
            crate::log_warn!("proxy conn={conn} refused: cannot read peer credentials: {e}");
            return;
        }
    };
    let who = format!("conn={conn} uid={} pid={}", peer.uid.0, peer.pid.map_or(-1, |p| p.0));
    let allowed =
        peer.uid == sys::current_uid() || peer.uid.0 == 0 || shared.config.allow_uids.contains(&peer.uid);
    if !allowed {
        crate::log_warn!("audit proxy {who} op=connect outcome=refused reason=peer_uid");
        return;
    }
    let Some(inject) = shared.config.inject.as_ref() else { return };
    let _ = stream.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT));
    let _ = stream.set_read_timeout(Some(KEEP_ALIVE_IDLE));
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::with_capacity(16 * 1024, read_half);
    let mut writer = stream;
    let mut refused = 0;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let started = Instant::now();
        let mut audit = Audit {
            route: "-".into(),
            method: "-".into(),
            template: "-".into(),
            status: 0,
            bytes_in: 0,
            bytes_out: 0,
            ttfb: None,
            model: None,
            stream: None,
            usage: super::usage::Usage::default(),
            outcome: "ok".into(),
        };
        let keep = handle(shared, inject, &mut reader, &mut writer, &mut audit);
        let Some(keep) = keep else { break };
        let duration = started.elapsed();
        crate::log_info!(
            "audit proxy {who} route={} method={} path={} status={} in={} out={} ttfb_ms={} duration_ms={} model={} stream={} {} outcome={}",
            audit.route,
            audit.method,
            audit.template,
            audit.status,
            audit.bytes_in,
            audit.bytes_out,
            audit.ttfb.map_or("-".into(), |t| t.as_millis().to_string()),
            duration.as_millis(),
            audit.model.as_deref().unwrap_or("-"),
            audit.stream.map_or("-", |s| if s { "true" } else { "false" }),
            audit.usage.describe(),
            audit.outcome
        );
        if audit.outcome.starts_with("denied:") {
            refused += 1;
        }
        if !keep {
            break;
        }
        if refused >= MAX_REFUSALS_PER_CONNECTION {
            // a client that keeps sending what is refused is not llxprt-code:
            // its lines would only push the useful ones out of the log
            crate::log_warn!("audit proxy {who} closed after {refused} refused requests");
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

/// Handles one request. `None`: nothing arrived (the connection ends
/// without an audit line); `Some(keep)`: whether the connection goes on.
fn handle(
    shared: &Shared,
    inject: &InjectConfig,
    reader: &mut BufReader<UnixStream>,
    writer: &mut UnixStream,
    audit: &mut Audit,
) -> Option<bool> {
    let raw = match request::read_head(reader) {
        Ok(Some(raw)) => raw,
        Ok(None) => return None,
        Err(refusal) => return Some(refuse(writer, None, refusal, audit, true)),
    };
    let head = match request::parse_head(&raw) {
        Ok(h) => h,
        Err(refusal) => return Some(refuse(writer, None, refusal, audit, true)),
    };
    audit.method = printable_word(&head.method);
    // A refusal before the body is read closes the connection when there
    // is a body: the stream cannot be trusted to continue.
    let unread = head.body != Framing::None;
    let Some(route) = routes::route(&head.host) else {
        return Some(refuse(writer, None, request::UNKNOWN_ROUTE, audit, unread));
    };
    audit.route = route.host.to_owned();
    if head.header("upgrade").is_some() {
        return Some(refuse(writer, Some(route), request::UPGRADE, audit, unread));
    }
    let Some(template) = route.template(&head.method, &head.path) else {
        return Some(refuse(writer, Some(route), request::NOT_ALLOWED, audit, unread));
    };
    audit.template = template.to_owned();
    if route.api == Api::Gemini && head.query.as_deref().is_some_and(has_key_param) {
        return Some(refuse(writer, Some(route), request::KEY_IN_URL, audit, unread));
    }
    let Some(credential) = sentinel_of(shared, route, &head) else {
        return Some(refuse(writer, Some(route), request::NO_SENTINEL, audit, unread));
    };
    if head.header("content-encoding").is_some_and(|v| !v.eq_ignore_ascii_case(b"identity")) {
        return Some(refuse(writer, Some(route), request::ENCODING, audit, unread));
    }
    let reserve = match head.body {
        Framing::None => 0,
        Framing::Length(n) => usize::try_from(n).unwrap_or(usize::MAX).min(inject.max_body),
        Framing::Chunked => inject.max_body,
    };
    let Some(_budget) = BodyBudget::take(reserve) else {
        return Some(refuse(writer, Some(route), request::BUSY, audit, true));
    };
    let _ = reader.get_ref().set_read_timeout(Some(Duration::from_secs(30)));
    let body = request::read_body(reader, writer, &head, inject.max_body);
    let _ = reader.get_ref().set_read_timeout(Some(KEEP_ALIVE_IDLE));
    let body = match body {
        Ok(b) => Zeroizing::new(b),
        Err(refusal) => return Some(refuse(writer, Some(route), refusal, audit, true)),
    };
    audit.bytes_in = body.len();
    if head.method == "POST" {
        match policy(&body, inject.allow_mcp) {
            Ok((model, stream)) => {
                audit.model = model;
                audit.stream = stream;
            }
            Err(refusal) => return Some(refuse(writer, Some(route), refusal, audit, head.close)),
        }
    }
    let keep = !head.close;
    Some(forward(shared, inject, route, &head, &body, credential, writer, audit) && keep)
}

/// Request body bytes all connections may hold at once (bodies are kept
/// whole for the policy and the 401 retry): eight of the largest.
const BODY_BUDGET: usize = 8 * DEFAULT_MAX_BODY;
static BODIES_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A share of [`BODY_BUDGET`], given back when dropped.
struct BodyBudget(usize);

impl BodyBudget {
    fn take(bytes: usize) -> Option<BodyBudget> {
        let before = BODIES_IN_FLIGHT.fetch_add(bytes, Ordering::SeqCst);
        // one request alone always gets its share (bounded by the body limit)
        if before > 0 && before.saturating_add(bytes) > BODY_BUDGET {
            BODIES_IN_FLIGHT.fetch_sub(bytes, Ordering::SeqCst);
            return None;
        }
        Some(BodyBudget(bytes))
    }
}

impl Drop for BodyBudget {
    fn drop(&mut self) {
        BODIES_IN_FLIGHT.fetch_sub(self.0, Ordering::SeqCst);
    }
}

/// `key=` among the query parameters (a credential in the URL).
fn has_key_param(query: &str) -> bool {
    query
        .split('&')
        .any(|p| percent_decoded(p.split('=').next().unwrap_or_default()).eq_ignore_ascii_case(b"key"))
}

/// `text` with its `%XX` escapes decoded (others left as they are).
fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The credential the request's sentinel stands for, when the sentinel is
/// one of ours and belongs to this route.
fn sentinel_of(shared: &Shared, route: &'static Route, head: &Head) -> Option<Credential> {
    let presented = match route.api {
        Api::Gemini => head.header("x-goog-api-key").map(<[u8]>::to_vec),
        Api::Anthropic => head.header("x-api-key").map(<[u8]>::to_vec).or_else(|| bearer(head)),
        Api::Codex | Api::OpenAi => bearer(head),
    }?;
    let presented = Zeroizing::new(String::from_utf8(presented).ok()?);
    let (credential, owner) = shared.sentinels.lookup(presented.trim())?;
    (owner == route).then_some(credential)
}

fn bearer(head: &Head) -> Option<Vec<u8>> {
    let v = head.header("authorization")?;
    let rest = v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer "))?;
    Some(rest.to_vec())
}

/// The body policy: one JSON object, and no remote tool servers unless
/// allowed. Returns the model name (sanitised) and `stream` for the audit.
fn policy(body: &[u8], allow_mcp: bool) -> Result<(Option<String>, Option<bool>), Refusal> {
    let facts = super::body::facts(body).map_err(|_| request::NOT_JSON)?;
    if facts.mcp && !allow_mcp {
        return Err(request::MCP);
    }
    let model = facts.model.map(|m| {
        let ok = !m.is_empty()
            && m.len() <= 128
            && m.chars().all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c));
        if ok { m } else { "?".to_owned() }
    });
    Ok((model, facts.stream))
}

fn printable_word(s: &str) -> String {
    if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_uppercase()) {
        s.to_owned()
    } else {
        "?".into()
    }
}

/// Answers a refusal in the route's error shape. Returns whether the
/// connection goes on.
fn refuse(
    writer: &mut UnixStream,
    route: Option<&Route>,
    refusal: Refusal,
    audit: &mut Audit,
    close: bool,
) -> bool {
    let close = close || refusal.close;
    audit.status = refusal.status;
    audit.outcome = format!("denied:{}", refusal.rule);
    let message = format!("llxprt-credd: {}", refusal.message);
    let _ = writer.write_all(&error_response(route, refusal.status, &message, close));
    !close
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        304 => "Not Modified",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Overloaded",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// A complete error answer shaped like the provider's own errors.
fn error_response(route: Option<&Route>, status: u16, message: &str, close: bool) -> Vec<u8> {
    let body = match route.map(|r| r.api) {
        Some(Api::Anthropic) => {
            let kind = match status {
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                500.. => "api_error",
                _ => "invalid_request_error",
            };
            serde_json::json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        Some(Api::Gemini) => {
            let kind = match status {
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                501 => "UNIMPLEMENTED",
                502 | 504 => "UNAVAILABLE",
                _ => "INVALID_ARGUMENT",
            };
            serde_json::json!({"error": {"code": status, "message": message, "status": kind}})
        }
        _ => {
            let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
            serde_json::json!({"error": {"message": message, "type": kind, "code": null}})
        }
    }
    .to_string();
    let connection = if close { "close" } else { "keep-alive" };
    format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n{body}",
        reason(status),
        body.len()
    )
    .into_bytes()
}

/// The real credential of `credential`, looked up now (a token refreshed
/// on read as `get_token` does): `(header name, value, extra headers)`.
struct Real {
    headers: Vec<(String, Vec<u8>)>,
    /// The real credential, to scrub out of the response.
    secret: Zeroizing<Vec<u8>>,
    /// The OAuth access token used (for the 401 retry), if an OAuth one.
    access_token: Option<Zeroizing<String>>,
}

/// Why the real credential could not be had.
enum NoCredential {
    /// Out of scope now, or not stored: the sentinel no longer stands for
    /// anything.
    Gone,
    /// The login is revoked or has no refresh token: log in on the host.
    Reauth,
    /// The store or the refresh failed.
    Failed,
}

fn real_credential(shared: &Shared, route: &Route, credential: &Credential) -> Result<Real, NoCredential> {
    let scope = shared.scope();
    match credential {
        Credential::Key { name } => {
            if !scope.allows_key(name) {
                return Err(NoCredential::Gone);
            }
            let key = shared
                .store
                .keys
                .get_key(name)
                .map_err(|_| NoCredential::Failed)?
                .ok_or(NoCredential::Gone)?;
            let value = key.expose().as_bytes().to_vec();
            let secret = Zeroizing::new(value.clone());
            let header = match route.api {
                Api::Anthropic => ("x-api-key".to_owned(), value),
                Api::Gemini => ("x-goog-api-key".to_owned(), value),
                _ => ("authorization".to_owned(), [b"Bearer ".as_slice(), &value].concat()),
            };
            Ok(Real { headers: vec![header], secret, access_token: None })
        }
        Credential::Token { provider, bucket } => {
            if !scope.allows_token(provider, Some(bucket)) {
                return Err(NoCredential::Gone);
            }
            let stored = shared
                .store
                .tokens
                .get_token(provider, Some(bucket))
                .map_err(|_| NoCredential::Failed)?
                .ok_or(NoCredential::Gone)?;
            let token = shared.oauth.serve(provider, Some(bucket), stored).map_err(refresh_failure)?;
            Ok(token_headers(route, &token))
        }
    }
}

fn refresh_failure(e: crate::oauth::RefreshError) -> NoCredential {
    use crate::oauth::RefreshError as R;
    match e {
        R::Revoked { .. } | R::NoRefreshToken => NoCredential::Reauth,
        R::NotFound => NoCredential::Gone,
        _ => NoCredential::Failed,
    }
}

fn token_headers(route: &Route, token: &crate::token::OAuthToken) -> Real {
    let access = Zeroizing::new(token.access_token().to_owned());
    let mut headers = vec![("authorization".to_owned(), format!("Bearer {}", access.as_str()).into_bytes())];
    if route.api == Api::Codex {
        if let Some(account) = token.fields().get("account_id").and_then(Value::as_str) {
            headers.push(("chatgpt-account-id".to_owned(), account.as_bytes().to_vec()));
        }
    }
    Real { headers, secret: Zeroizing::new(access.as_bytes().to_vec()), access_token: Some(access) }
}

/// Hop-by-hop headers and the ones the proxy sets itself.
const DROPPED: [&str; 21] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "expect",
    "accept-encoding",
    "forwarded",
    "via",
    // headers some servers obey to change the method or path after the
    // allow-list has looked at them
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
    "x-real-ip",
];
/// Every credential header: all are removed, one real one is added.
const CREDENTIAL_HEADERS: [&str; 6] =
    ["authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "chatgpt-account-id"];

/// The headers sent upstream: the client's, minus hop-by-hop and every
/// credential header, plus the real credential.
fn upstream_headers(head: &Head, route: &Route, real: &Real) -> Vec<(String, Vec<u8>)> {
    let named_by_connection: Vec<String> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| {
            v.split(|&b| b == b',').map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        })
        .collect();
    let mut out: Vec<(String, Vec<u8>)> = head
        .headers
        .iter()
        .filter(|(n, _)| {
            !DROPPED.contains(&n.as_str())
                && !CREDENTIAL_HEADERS.contains(&n.as_str())
                && !named_by_connection.contains(n)
                && !n.starts_with("x-forwarded-")
        })
        .cloned()
        .collect();
    if route.api == Api::Anthropic && real.access_token.is_some() {
        // The API refuses a subscription bearer token without this flag.
        const FLAG: &[u8] = b"oauth-2025-04-20";
        match out.iter_mut().find(|(n, _)| n == "anthropic-beta") {
            Some((_, v)) if v.split(|&b| b == b',').any(|t| t.trim_ascii() == FLAG) => {}
            Some((_, v)) => {
                v.extend_from_slice(b",");
                v.extend_from_slice(FLAG);
            }
            None => out.push(("anthropic-beta".to_owned(), FLAG.to_vec())),
        }
    }
    out.extend(real.headers.iter().cloned());
    out
}

/// Sends the request upstream (once more after a 401 on an OAuth token)
/// and streams the answer back. Returns whether the connection goes on.
#[allow(clippy::too_many_arguments)]
fn forward(
    shared: &Shared,
    inject: &InjectConfig,
    route: &'static Route,
    head: &Head,
    body: &[u8],
    credential: Credential,
    writer: &mut UnixStream,
    audit: &mut Audit,
) -> bool {
    let upstream_error = |writer: &mut UnixStream, audit: &mut Audit, status: u16, text: &str| {
        audit.status = status;
        audit.outcome = "upstream-error".into();
        let _ = writer.write_all(&error_response(Some(route), status, text, head.close));
        !head.close
    };
    let mut real = match real_credential(shared, route, &credential) {
        Ok(r) => r,
        Err(NoCredential::Gone) => {
            return refuse(writer, Some(route), request::NO_SENTINEL, audit, head.close);
        }
        Err(NoCredential::Reauth) => return reauth(writer, route, &credential, audit, head.close),
        Err(NoCredential::Failed) => {
            return upstream_error(
                writer,
                audit,
                502,
                "llxprt-credd: the credential could not be read on the host",
            );
        }
    };
    let origin = inject.origin(route);
    let target = match &head.query {
        Some(q) => format!("{}?{q}", head.path),
        None => head.path.clone(),
    };
    let started = Instant::now();
    let mut retried = false;
    // From the moment the provider is connected, a sandbox that goes away
    // shuts the request down (a non-streaming answer can take minutes).
    let mut watch: Option<ClientWatch> = None;
    let exchange = loop {
        let headers = upstream_headers(head, route, &real);
        let client: &UnixStream = writer;
        let sent = upstream::send(&origin, &head.method, &target, &headers, body, &mut |socket| {
            watch = Some(ClientWatch::start(client, socket));
        });
        let exchange = match sent {
            Ok(e) => e,
            Err(_) if watch.take().is_some_and(ClientWatch::stop) => {
                audit.outcome = "aborted-by-client".into();
                return false;
            }
            Err(e) => {
                crate::log_warn!("proxy {}: upstream failed: {e}", route.host);
                let status = if matches!(e, upstream::UpstreamError::Timeout) { 504 } else { 502 };
                return upstream_error(
                    writer,
                    audit,
                    status,
                    "llxprt-credd: the provider could not be reached",
                );
            }
        };
        if exchange.status != 401 || retried {
            break exchange;
        }
        let (Credential::Token { provider, bucket }, Some(used)) = (&credential, real.access_token.as_ref())
        else {
            break exchange;
        };
        // One refresh (shared with every request that saw this token
        // rejected), one retry; the same token again means pass the 401 on.
        match shared.oauth.refresh_rejected(provider, Some(bucket), used) {
            Ok(token) if token.access_token() != used.as_str() => {
                if let Some(w) = watch.take() {
                    w.stop();
                }
                exchange.abort();
                real = token_headers(route, &token);
                retried = true;
                audit.outcome = "refreshed-and-retried".into();
            }
            Ok(_) => break exchange,
            Err(e) => match refresh_failure(e) {
                NoCredential::Reauth => {
                    exchange.abort();
                    return reauth(writer, route, &credential, audit, head.close);
                }
                _ => break exchange,
            },
        }
    };
    audit.ttfb = Some(started.elapsed());
    let watch = watch.unwrap_or_else(|| ClientWatch::start(writer, &exchange.socket));
    stream_back(exchange, writer, audit, head.close, super::scrub::Scrubber::new(&real.secret), watch)
}

/// The provider-shaped 401 for a login that is gone: log in on the host.
fn reauth(
    writer: &mut UnixStream,
    route: &Route,
    credential: &Credential,
    audit: &mut Audit,
    close: bool,
) -> bool {
    let provider = match credential {
        Credential::Token { provider, .. } => provider.as_str(),
        Credential::Key { .. } => "-",
    };
    audit.status = 401;
    audit.outcome = "reauth-required".into();
    let message = format!(
        "llxprt-credd: the {} login needs renewing: log in again on the host (llxprt-cred login {})",
        printable_provider(provider),
        printable_provider(provider)
    );
    let _ = writer.write_all(&error_response(Some(route), 401, &message, close));
    !close
}

fn printable_provider(p: &str) -> &str {
    if crate::store::names::is_valid_provider_name(p) { p } else { "?" }
}

/// Response headers that do not go back to the client.
const RESPONSE_DROPPED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "set-cookie",
    "proxy-authenticate",
];

/// Streams the provider's answer to the client, each read at once. An
/// answer that does not end cleanly upstream reaches the client as an
/// abort (the connection closes without the final chunk). Returns whether
/// the connection goes on.
fn stream_back(
    mut ex: Exchange,
    writer: &mut UnixStream,
    audit: &mut Audit,
    close: bool,
    mut scrub: Option<super::scrub::Scrubber>,
    watch: ClientWatch,
) -> bool {
    audit.status = ex.status;
    let length = ex.content_length();
    // Our own reason phrase: the provider's could carry anything.
    let mut head = format!("HTTP/1.1 {} {}\r\n", ex.status, reason(ex.status)).into_bytes();
    for (name, value) in &ex.headers {
        if !RESPONSE_DROPPED.contains(&name.as_str()) {
            let mut value = value.clone();
            if let Some(s) = &scrub {
                s.mask(&mut value);
            }
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(&value);
            head.extend_from_slice(b"\r\n");
        }
    }
    match length {
        Some(n) => head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(if close {
        b"connection: close\r\n\r\n"
    } else {
        b"keep-alive: timeout=60\r\n\r\n"
    });
    if writer.write_all(&head).is_err() {
        watch.stop();
        ex.abort();
        audit.outcome = "aborted-by-client".into();
        return false;
    }
    // A sandbox that goes away while the provider is silent would not be
    // noticed until the next write: the watcher shuts the upstream request
    // down as soon as the client hangs up, so the provider stops
    // generating (and billing).
    let keep = relay(&mut ex, writer, audit, length, close, scrub.as_mut());
    let gone = watch.stop();
    ex.release();
    if audit.outcome == "upstream-abort" {
        if gone {
            // the watcher cut the upstream request because the client left
            audit.outcome = "aborted-by-client".into();
        }
        // Never the final chunk: the client must see the cut.
        let _ = writer.shutdown(Shutdown::Both);
    }
    keep
}

/// Watches the client for a hang-up while a request is upstream. The
/// upstream socket is shut down only while the watch runs: once stopped
/// (or dropped) it never touches it again, since the connection may go
/// back to the pool.
struct ClientWatch {
    done: Arc<std::sync::Mutex<bool>>,
    gone: Arc<std::sync::atomic::AtomicBool>,
}

impl ClientWatch {
    fn start(client: &UnixStream, upstream: &std::net::TcpStream) -> ClientWatch {
        use std::sync::atomic::AtomicBool;
        let done = Arc::new(std::sync::Mutex::new(false));
        let gone = Arc::new(AtomicBool::new(false));
        if let Some((client, upstream)) = client.try_clone().ok().zip(upstream.try_clone().ok()) {
            let (done, gone) = (done.clone(), gone.clone());
            let spawned = std::thread::Builder::new().name("proxy-watch".into()).spawn(move || {
                use std::os::fd::AsFd;
                let stopped = || *done.lock().unwrap_or_else(|e| e.into_inner());
                while !stopped() {
                    if matches!(
                        sys::peer_hung_up(client.as_fd(), Duration::from_millis(50)),
                        Ok(true) | Err(_)
                    ) {
                        let stopped = done.lock().unwrap_or_else(|e| e.into_inner());
                        if !*stopped {
                            gone.store(true, Ordering::SeqCst);
                            let _ = upstream.shutdown(Shutdown::Both);
                        }
                        return;
                    }
                }
            });
            if let Err(e) = spawned {
                crate::log_warn!("proxy: cannot watch the client: {e}");
            }
        }
        ClientWatch { done, gone }
    }

    /// Stops the watch (its thread ends within its 50 ms poll, on its own:
    /// joining it would add that to every response); whether the client
    /// had gone.
    fn stop(self) -> bool {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.gone.load(Ordering::SeqCst)
    }
}

impl Drop for ClientWatch {
    fn drop(&mut self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }
}

/// Copies the body, read by read. Returns whether the connection goes on.
fn relay(
    ex: &mut Exchange,
    writer: &mut UnixStream,
    audit: &mut Audit,
    length: Option<u64>,
    close: bool,
    mut scrub: Option<&mut super::scrub::Scrubber>,
) -> bool {
    loop {
        match ex.read() {
            Ok(Read2::Data(data)) => {
                audit.usage.feed(&data);
                let data = match scrub.as_deref_mut() {
                    Some(s) => s.feed(&data),
                    None => data,
                };
                if data.is_empty() {
                    continue; // all held back: never an empty chunk (it would end the body)
                }
                let sent = if length.is_some() {
                    writer.write_all(&data)
                } else {
                    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                    chunk.extend_from_slice(&data);
                    chunk.extend_from_slice(b"\r\n");
                    writer.write_all(&chunk)
                };
                if sent.is_err() {
                    ex.abort();
                    audit.outcome = "aborted-by-client".into();
                    return false;
                }
                audit.bytes_out += data.len() as u64;
            }
            Ok(Read2::End) => {
                audit.usage.feed(b"\n");
                let held = scrub.as_deref_mut().map(|s| s.finish()).unwrap_or_default();
                let tail = match (held.is_empty(), length) {
                    (true, _) => Ok(()),
                    (false, Some(_)) => writer.write_all(&held),
                    (false, None) => writer
                        .write_all(&[format!("{:x}\r\n", held.len()).as_bytes(), &held, b"\r\n"].concat()),
                };
                audit.bytes_out += held.len() as u64;
                if tail.is_err() || (length.is_none() && writer.write_all(b"0\r\n\r\n").is_err()) {
                    audit.outcome = "aborted-by-client".into();
                    return false;
                }
                return !close;
            }
            Err(e) => {
                crate::log_warn!("proxy: the provider's answer was cut: {e}");
                ex.abort();
                audit.outcome = "upstream-abort".into();
                return false;
            }
        }
    }
}
