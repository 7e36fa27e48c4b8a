//! A real OAuth provider on 127.0.0.1 that behaves like the real ones: it
//! counts calls, records what it was sent, and answers from a script (a
//! rotated token, a 5xx, `invalid_grant`, garbage, or nothing at all).
//! Its own refresh tokens carry the `CANARY` marker so tests can prove
//! none ever leaves the host.
//!
//! For logins it also serves, each with its own script ([`FakeProvider::script_at`]):
//! - `GET /authorize`: the user's browser. It answers like a provider whose
//!   user approved (or denied): a loopback `redirect_uri` gets a 302 to it
//!   with `code` and `state`; any other (the code-paste page) gets a page
//!   whose body is `code#state`.
//! - `POST /oauth/token`: refresh, `authorization_code` and RFC 8628
//!   device-code grants (a token by default).
//! - `POST /api/accounts/deviceauth/usercode` and `/token`: OpenAI's device
//!   flow (a device auth id and user code; then, by default, approval with
//!   an authorization code and a server-generated verifier).
//! - `POST /device/code`: an RFC 8628 device authorization endpoint.
//!
//! Every code it issues (device codes, authorization codes, verifiers)
//! carries `CANARY` too.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::LoopbackServer;

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200 with a new access token `at-refreshed-N`; with `rotate`, a new
    /// refresh token `rt-CANARY-rotated-N`; with `id_token`, that id token.
    Token { expires_in: i64, rotate: bool, id_token: Option<String> },
    /// This status and body.
    Status(u16, String),
    /// Reads the request, never answers (until the test ends).
    Hang,
    /// 200 with a body that is not JSON.
    Garbage,
    /// This status and JSON body.
    Json(u16, serde_json::Value),
    /// `/authorize`: the user approves (`true`) or denies.
    Authorize(bool),
}

impl Reply {
    pub fn token() -> Reply {
        Reply::Token { expires_in: 3600, rotate: true, id_token: None }
    }

    pub fn status(code: u16) -> Reply {
        Reply::Status(
            code,
            r#"{"error":"server_error","error_description":"rt-CANARY-in-an-error-body"}"#.into(),
        )
    }

    /// An OAuth error answer with this `error` code.
    pub fn oauth_error(status: u16, code: &str) -> Reply {
        Reply::Json(
            status,
            serde_json::json!({"error": code, "error_description": "dev-CANARY in a description"}),
        )
    }

    pub fn invalid_grant() -> Reply {
        Reply::Status(
            400,
            r#"{"error":"invalid_grant","error_description":"Refresh token rt-CANARY-planted is revoked"}"#
                .into(),
        )
    }
}

/// What one call carried.
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    pub content_type: String,
    pub body: String,
    pub at: Instant,
}

impl Call {
    /// A field of a form or JSON body.
    pub fn field(&self, name: &str) -> Option<String> {
        if self.content_type.starts_with("application/json") {
            let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
            return v.get(name)?.as_str().map(str::to_owned);
        }
        self.body.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 3;
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

struct State {
    script: VecDeque<Reply>,
    by_path: std::collections::HashMap<String, VecDeque<Reply>>,
    calls: Vec<Call>,
    delay: Duration,
}

pub struct FakeProvider {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    state: Arc<Mutex<State>>,
    _server: LoopbackServer,
}

impl FakeProvider {
    pub fn start() -> FakeProvider {
        let state = Arc::new(Mutex::new(State {
            script: VecDeque::new(),
            by_path: Default::default(),
            calls: Vec::new(),
            delay: Duration::ZERO,
        }));
        let s = state.clone();
        let server = LoopbackServer::start(move |stream, stopping| serve(stream, &s, stopping));
        FakeProvider { base: format!("http://{}", server.authority), state, _server: server }
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base)
    }

    /// Queues answers; once the script runs out, every call gets
    /// [`Reply::token`].
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Queues answers for calls to `path` (without the query); they win
    /// over [`script`](Self::script). Once they run out, calls to `path`
    /// get its default answer.
    pub fn script_at(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().by_path.entry(path.to_owned()).or_default().extend(replies);
    }

    /// Calls to `path` (without the query) so far.
    pub fn calls_to(&self, path: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.path.split('?').next() == Some(path)).collect()
    }

    /// Delays every answer by `d` (the upstream round trip).
    pub fn set_delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().calls.len()
    }

    /// Waits until at least `n` calls arrived; whether they did in time.
    pub fn wait_for(&self, n: usize, within: Duration) -> bool {
        crate::harness::wait_until(within, || self.count() >= n)
    }
}

fn read_request(stream: &mut TcpStream) -> Option<(String, String, String)> {
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
    Some((path, header("content-type").unwrap_or_default(), body))
}

/// The answer a path gets when nothing is scripted for it.
fn default_reply(path: &str, n: usize) -> Reply {
    match path {
        "/authorize" => Reply::Authorize(true),
        "/api/accounts/deviceauth/usercode" => Reply::Json(
            200,
            serde_json::json!({"device_auth_id": format!("dev-CANARY-{n}"), "user_code": "WXYZ-1234", "interval": "5"}),
        ),
        "/api/accounts/deviceauth/token" => Reply::Json(
            200,
            serde_json::json!({"authorization_code": format!("ac-CANARY-device-{n}"),
                "code_verifier": format!("ver-CANARY-server-{n}"), "code_challenge": "unused"}),
        ),
        "/device/code" => Reply::Json(
            200,
            serde_json::json!({"device_code": format!("dev-CANARY-rfc-{n}"), "user_code": "RFC-4242",
                "verification_uri": "https://idp.example/device", "expires_in": 900, "interval": 5}),
        ),
        _ => Reply::token(),
    }
}

/// A plain HTTP GET (the user's browser, without following redirects):
/// the status, the `Location` header and the body. `None` when nothing
/// answers at that address.
pub fn browser_get(url: &str) -> Option<(u16, Option<String>, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let addr = host.replace("localhost", "127.0.0.1");
    let mut stream = TcpStream::connect(&addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let location = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("location").then(|| v.trim().to_owned())
    });
    Some((status, location, body.to_owned()))
}

/// A query parameter of a request target.
pub fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

/// The `/authorize` answer: where the browser goes next, or the page with
/// the code to paste.
fn authorize(target: &str, approve: bool, n: usize) -> String {
    let redirect = query_param(target, "redirect_uri").unwrap_or_default();
    let state = query_param(target, "state").unwrap_or_default();
    let code = format!("ac-CANARY-{n}");
    let loopback = redirect.starts_with("http://localhost:") || redirect.starts_with("http://127.0.0.1:");
    let (status, location, body) = match (loopback, approve) {
        (true, true) => (302, format!("{redirect}?code={code}&state={state}"), String::new()),
        (true, false) => (302, format!("{redirect}?error=access_denied&state={state}"), String::new()),
        (false, true) => (200, String::new(), format!("{code}#{state}")),
        (false, false) => (200, String::new(), "error=access_denied".into()),
    };
    let location = if location.is_empty() { String::new() } else { format!("Location: {location}\r\n") };
    format!(
        "HTTP/1.1 {status} X\r\n{location}Content-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn serve(mut stream: TcpStream, state: &Mutex<State>, stopping: &AtomicBool) {
    let Some((path, content_type, body)) = read_request(&mut stream) else { return };
    let bare = path.split('?').next().unwrap_or_default().to_owned();
    let target = path.clone();
    let (reply, n, delay) = {
        let mut s = state.lock().unwrap();
        s.calls.push(Call { path, content_type, body, at: Instant::now() });
        let n = s.calls.len();
        let scripted = s.by_path.get_mut(&bare).and_then(VecDeque::pop_front);
        let reply = match scripted {
            Some(r) => r,
            None if bare == "/oauth/token" => s.script.pop_front().unwrap_or_else(Reply::token),
            None => default_reply(&bare, n),
        };
        (reply, n, s.delay)
    };
    std::thread::sleep(delay);
    let (status, body) = match reply {
        Reply::Json(code, v) => (code, v.to_string()),
        Reply::Authorize(approve) => {
            let _ = stream.write_all(authorize(&target, approve, n).as_bytes());
            return;
        }
        Reply::Token { expires_in, rotate, id_token } => {
            let mut v = serde_json::json!({"access_token": format!("at-refreshed-{n}"), "token_type": "Bearer",
                "expires_in": expires_in, "scope": "user:inference"});
            if rotate {
                v["refresh_token"] = format!("rt-CANARY-rotated-{n}").into();
            }
            if let Some(id) = id_token {
                v["id_token"] = id.into();
            }
            (200, v.to_string())
        }
        Reply::Status(code, body) => (code, body),
        Reply::Garbage => (200, "<html>rt-CANARY-garbage</html>".to_owned()),
        Reply::Hang => {
            while !stopping.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
    };
    let reason = if status == 200 { "OK" } else { "Error" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
