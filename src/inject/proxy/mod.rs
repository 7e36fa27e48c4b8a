/*!
The proxy socket (SPEC §14): HTTP/1.1 from the sandbox, one thread per
connection, keep-alive. Each request is checked ([`super::request`]), its
sentinel swapped for the real credential on the host, sent to the route's
fixed origin ([`super::upstream`]), and the answer streamed back read by
read. A 401 to an OAuth token before anything reached the client gets one
refresh and one retry. Every request, refused or not, gets an audit line;
no header value, body, sentinel or credential is ever logged.

Here: the accept loop, the connection loop with its audit line, and the
checks that decide whether a request goes upstream. The checks' helpers
are in `checks.rs`, the provider-shaped refusals in `errors.rs`, the real
credential and the headers sent upstream in `credential.rs`, the send with
its 401 refresh-and-retry in `forward.rs`, the answer's relay in
`stream.rs`, and the client watcher in `watch.rs`.
*/
#![forbid(unsafe_code)]

mod checks;
mod credential;
mod errors;
mod forward;
mod stream;
mod watch;

use std::collections::BTreeSet;
use std::io::BufReader;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::request::{self, Framing};
use super::routes::{self, Api, Route};
use super::upstream::Origin;
use crate::server::Shared;
use crate::sys;
use checks::{BodyBudget, has_key_param, policy, printable_word, sentinel_of};
use errors::refuse;
use forward::forward;

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
