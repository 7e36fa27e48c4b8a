//! Inject mode (SPEC §14) through the real daemon. The credential socket
//! serves sentinels in the shapes llxprt-code expects; the proxy socket
//! forwards allowed requests to the provider (a [`FakeStream`] on loopback)
//! with the real credential put in on the host; every refusal is shown to
//! make no upstream request; streams are forwarded event by event and an
//! upstream abort stays an abort; a 401 on an OAuth token refreshes once;
//! the audit line names the request and nothing secret.
//!
//! Every real key and token is planted `Never` and every sentinel `Served`,
//! so the harness fails a test whose answers or logs leak either; every
//! proxy answer goes through [`check_answer`] too.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_provider::FakeProvider;
use crate::fake_stream::{Answer, End, FakeStream, Framing, Gate, Request, Step};
use crate::harness::*;
use crate::host_store::*;

/// The upstream overrides, one per route.
const ROUTE_VARS: [&str; 5] = [
    "LLXPRT_CREDD_UPSTREAM_API_ANTHROPIC_COM_URL",
    "LLXPRT_CREDD_UPSTREAM_CHATGPT_COM_URL",
    "LLXPRT_CREDD_UPSTREAM_API_OPENAI_COM_URL",
    "LLXPRT_CREDD_UPSTREAM_GENERATIVELANGUAGE_GOOGLEAPIS_COM_URL",
    // the providers-file route of `providers_file_routes_carry_their_providers_keys_only`
    "LLXPRT_CREDD_UPSTREAM_API_EXAMPLE_LLM_TEST_URL",
];

/// The token endpoints of the OAuth providers inject mode can refresh.
const TOKEN_URL_VARS: [&str; 3] =
    ["LLXPRT_CREDD_CLAUDECODE_TOKEN_URL", "LLXPRT_CREDD_ANTHROPIC_TOKEN_URL", "LLXPRT_CREDD_CODEX_TOKEN_URL"];

/// Every header that can carry a credential: the daemon removes all of
/// them and sets exactly one.
const CREDENTIAL_HEADERS: [&str; 5] = ["authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie"];

/// Hop-by-hop headers (and `accept-encoding`) a client sends that must not
/// reach the provider.
const HOP_BY_HOP: [(&str, &str); 6] = [
    ("connection", "keep-alive, x-drop-me"),
    ("x-drop-me", "named-by-connection"),
    ("keep-alive", "timeout=5"),
    ("te", "trailers"),
    ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
    ("accept-encoding", "gzip, br"),
];

/// Headers that must reach the provider unchanged.
const PASSED: [(&str, &str); 3] =
    [("x-stainless-lang", "js"), ("x-test-passed", "kept-as-sent"), ("anthropic-version", "2023-06-01")];

/// Headers the daemon must not add.
const NEVER_ADDED: [&str; 4] = ["forwarded", "via", "x-forwarded-for", "transfer-encoding"];

/// The fixed parts of the sentinels (the random part is 86 characters).
const CLAUDE_OAUTH: &str = "sk-ant-oat01-llxprtcredd-";
const ANTHROPIC_KEY: &str = "sk-ant-api03-llxprtcredd-";
const CODEX_OAUTH: &str = "llxprtcredd-codex-";
const OPENAI_KEY: &str = "sk-llxprtcredd";
const GEMINI_KEY: &str = "AIzaLLXPRTCREDD-";
const RANDOM_PART_CHARS: usize = 86;

/// The Codex account id stored with Codex tokens.
const ACCOUNT_ID: &str = "acct-inject-7f3a9c";

/// What a sandbox's client waits for a proxy answer.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// What a test waits for one SSE event while the provider holds the next
/// one back (the fake waits 30 s at its gate: an event held back by the
/// daemon fails the test here first).
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a log line may take to appear.
const LOG_WAIT: Duration = Duration::from_secs(5);

static PROXY_SOCKETS: AtomicUsize = AtomicUsize::new(0);

/// A real credential for this test: unique, planted `Never` (it must not
/// cross the credential socket nor reach any log).
fn real(prefix: &str, what: &str) -> String {
    plant(unique(&format!("{prefix}real-{what}-")), Exposure::Never)
}

/// Stores OAuth token `spec` whose access token is `real`, valid for an
/// hour; its refresh token carries the `CANARY` marker, and a Codex token
/// has an account id and an id token as Codex logins do. Returns the
/// expiry.
fn seed_token(dir: &TestDir, spec: &str, real: &str) -> f64 {
    let expiry = (now() + 3600.0).floor();
    let mut token = json!({"access_token": real, "refresh_token": format!("rt-CANARY-{real}"), "expiry": expiry,
        "token_type": "Bearer", "scope": "user:inference"});
    if spec.starts_with("codex") {
        token["account_id"] = ACCOUNT_ID.into();
        token["id_token"] = format!("idt-CANARY-{real}").into();
    }
    dir.import_token(spec, &token.to_string());
    expiry
}

/// Saves profile `name`: provider `provider` with the key `key`.
fn key_profile(dir: &TestDir, name: &str, provider: &str, key: &str) {
    let profile = json!({"version": 1, "provider": provider, "model": "some-model", "modelParams": {},
        "ephemeralSettings": {"auth-key-name": key}});
    dir.save_profile(name, &profile.to_string());
}

/// The alphabet of a sentinel's random part.
#[derive(Clone, Copy, Debug)]
enum Alphabet {
    Base64Url,
    /// Letters and digits only (OpenAI-style keys).
    Base62,
}

impl Alphabet {
    fn holds(self, c: char) -> bool {
        match self {
            Alphabet::Base64Url => c.is_ascii_alphanumeric() || c == '-' || c == '_',
            Alphabet::Base62 => c.is_ascii_alphanumeric(),
        }
    }
}

/// `value` is `prefix` and 86 random characters of `alphabet`.
#[track_caller]
fn assert_sentinel(value: &str, prefix: &str, alphabet: Alphabet) {
    let random = value
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{value:?} is not a sentinel starting {prefix:?}"));
    assert_eq!(random.len(), RANDOM_PART_CHARS, "{value:?}: the random part is 86 characters");
    assert!(random.chars().all(|c| alphabet.holds(c)), "{value:?}: the random part is not {alphabet:?}");
    // 64 random bytes show many distinct characters; a fixed filler does not.
    let distinct: BTreeSet<char> = random.chars().collect();
    assert!(distinct.len() >= 20, "{value:?}: the random part does not look random");
}

/// An inject-mode daemon and its proxy socket.
struct Inject {
    daemon: Daemon,
    proxy: PathBuf,
}

/// A daemon serving one Anthropic API key (profile `claude-key`) through
/// the proxy: the fake provider, the fake token endpoint, the real key,
/// the daemon and the key's sentinel.
fn anthropic_key(dir: &TestDir) -> (FakeStream, FakeProvider, String, Inject, String) {
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let key = real("sk-ant-api03-", "anthropic");
    dir.set_key("ANTHROPIC_KEY", &key);
    key_profile(dir, "claude-key", "anthropic", "ANTHROPIC_KEY");
    let p = start(dir, &upstream, &oauth, &["--profile", "claude-key"]);
    let sentinel = p.key("ANTHROPIC_KEY");
    (upstream, oauth, key, p, sentinel)
}

/// Starts `llxprt-credd --inject --proxy-socket PATH ARGS` with every route
/// pointed at `upstream` and every token endpoint at `oauth`.
fn start(dir: &TestDir, upstream: &FakeStream, oauth: &FakeProvider, args: &[&str]) -> Inject {
    start_at(dir, &upstream.base, oauth, args)
}

/// [`start`] with every route pointed at the origin `upstream`.
fn start_at(dir: &TestDir, upstream: &str, oauth: &FakeProvider, args: &[&str]) -> Inject {
    // Beside the credential socket, in the private directory the daemon
    // makes for it (as the wrapper does).
    let n = PROXY_SOCKETS.fetch_add(1, Ordering::SeqCst);
    let proxy = dir.root.join("sock").join(format!("proxy-{n}.sock"));
    let token_url = oauth.token_url();
    let mut env: Vec<(&str, &str)> = ROUTE_VARS.iter().map(|v| (*v, upstream)).collect();
    env.extend(TOKEN_URL_VARS.iter().map(|v| (*v, token_url.as_str())));
    let mut all = vec!["--inject", "--proxy-socket", proxy.to_str().unwrap()];
    all.extend_from_slice(args);
    let daemon = dir.daemon_with_env(&all, &env);
    Inject { daemon, proxy }
}

impl Inject {
    /// A fresh client connection on the proxy socket.
    fn http(&self) -> Http {
        Http::connect(&self.proxy)
    }

    /// A handshaken client of the credential socket.
    fn client(&self) -> Raw {
        let mut c = self.daemon.connect();
        c.handshake();
        c
    }

    /// The data of a successful `get_token`.
    #[track_caller]
    fn token(&self, provider: &str, bucket: Option<&str>) -> Value {
        let mut payload = json!({ "provider": provider });
        if let Some(b) = bucket {
            payload["bucket"] = b.into();
        }
        let r = self.client().request("get_token", payload);
        assert_eq!(r["ok"], true, "{r}");
        r["data"].clone()
    }

    /// The sentinel `get_token` serves (planted: it may be served, never
    /// logged).
    #[track_caller]
    fn sentinel(&self, provider: &str, bucket: Option<&str>) -> String {
        let t = self.token(provider, bucket);
        plant(t["access_token"].as_str().expect("an access token"), Exposure::Served)
    }

    /// The sentinel `get_api_key` serves (planted).
    #[track_caller]
    fn key(&self, name: &str) -> String {
        let r = self.client().request("get_api_key", json!({ "name": name }));
        assert_eq!(r["ok"], true, "{r}");
        plant(r["data"]["key"].as_str().expect("a key"), Exposure::Served)
    }

    /// `llxprt-cred --socket SOCKET ARGS`.
    fn cred(&self, dir: &TestDir, args: &[&str]) -> Output {
        let mut all = vec!["--socket", self.daemon.socket.to_str().unwrap()];
        all.extend_from_slice(args);
        dir.run(None, &all, "")
    }

    /// Waits until the log has `n` lines for which `wanted` holds; them.
    #[track_caller]
    fn log_lines(&self, what: &str, n: usize, wanted: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + LOG_WAIT;
        loop {
            let log = self.daemon.log_text();
            let lines: Vec<String> = log.lines().filter(|&l| wanted(l)).map(str::to_owned).collect();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{n} log lines {what} expected, {} found:\n{log}",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for `n` audit lines of the proxy holding every one of
    /// `needles`; them.
    #[track_caller]
    fn audit(&self, needles: &[&str], n: usize) -> Vec<String> {
        self.log_lines(&format!("'audit proxy' with {needles:?}"), n, |l| {
            l.contains("audit proxy") && needles.iter().all(|x| l.contains(x))
        })
    }
}

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 client on the proxy socket.

/// How a response body is framed to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framed {
    Chunked,
    Length(usize),
    /// Neither: the body ends with the connection.
    Close,
    /// No body (no response read yet, or a 204/304).
    Empty,
}

/// One piece of a response body as the client reads it.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Data(Vec<u8>),
    /// The body ended as its framing says (the terminating chunk, all of
    /// the `Content-Length`, or the close of a close-delimited body).
    End,
    /// The connection ended before that: an abort.
    Cut,
}

/// Where the client is in the body it reads.
#[derive(Clone, Copy, Debug)]
enum Reading {
    Done,
    Chunked,
    Left(usize),
    ToClose,
}

/// A whole response.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    framed: Framed,
    /// The body ended as its framing says.
    complete: bool,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// A request as the SDKs send one through the relay: `host` the relay's
/// unless `headers` name one, `content-type: application/json` on a POST
/// unless they name one, and a `content-length` for a body.
fn request_bytes(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let named = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    if !named("host") {
        head.push_str("host: 127.0.0.1:18080\r\n");
    }
    if method == "POST" && !named("content-type") {
        head.push_str("content-type: application/json\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A client connection: raw bytes out, responses parsed by hand (chunked
/// decoding included), telling a clean end from a cut connection.
struct Http {
    stream: UnixStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
    /// The framing of the latest response.
    framed: Framed,
    reading: Reading,
}

impl Http {
    /// Connects (the proxy socket may appear just after the credential
    /// socket).
    fn connect(path: &Path) -> Http {
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "cannot connect to the proxy socket {}: {e}",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        Http { stream, buf: Vec::new(), framed: Framed::Empty, reading: Reading::Done }
    }

    fn set_timeout(&self, timeout: Duration) {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
    }

    /// Sends raw bytes. A refusal may close the connection while they are
    /// still being written: not an error here, the answer tells.
    fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    fn send_request(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) {
        self.send(&request_bytes(method, target, headers, body));
    }

    #[track_caller]
    fn post(&mut self, target: &str, headers: &[(&str, &str)], body: &Value) -> Response {
        self.send_request("POST", target, headers, body.to_string().as_bytes());
        self.response()
    }

    #[track_caller]
    fn get(&mut self, target: &str, headers: &[(&str, &str)]) -> Response {
        self.send_request("GET", target, headers, b"");
        self.response()
    }

    /// Reads more bytes; false when the connection ended (EOF or reset).
    /// A read that times out fails the test: the daemon neither answered
    /// nor closed (or held back an event).
    #[track_caller]
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    panic!(
                        "timed out reading from the proxy: it neither sent the next bytes nor closed ({} bytes pending: {:?})",
                        self.buf.len(),
                        String::from_utf8_lossy(&self.buf)
                    )
                }
                Err(_) => return false,
            }
        }
    }

    /// Whether the daemon has closed the connection.
    fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill()
    }

    /// The next response head (interim 1xx answers skipped); `None` when
    /// the connection ends first.
    #[track_caller]
    fn head(&mut self) -> Option<(u16, Vec<(String, String)>)> {
        loop {
            let end = loop {
                if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                    break p + 4;
                }
                if !self.fill() {
                    return None;
                }
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end);
            check_answer(&head);
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            assert!(status_line.starts_with("HTTP/1.1 "), "a status line, not {status_line:?}");
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("a status code in {status_line:?}"));
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    Some((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                })
                .collect();
            if (100..200).contains(&status) {
                continue;
            }
            let chunked = header(&headers, "transfer-encoding")
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
            let length = header(&headers, "content-length").map(|v| {
                v.parse::<usize>().unwrap_or_else(|_| panic!("a numeric content-length, not {v:?}"))
            });
            assert!(!(chunked && length.is_some()), "both chunked and a content-length: {head}");
            self.framed = match length {
                _ if chunked => Framed::Chunked,
                Some(n) => Framed::Length(n),
                None if status == 204 || status == 304 => Framed::Empty,
                None => Framed::Close,
            };
            self.reading = match self.framed {
                Framed::Chunked => Reading::Chunked,
                Framed::Length(n) => Reading::Left(n),
                Framed::Close => Reading::ToClose,
                Framed::Empty => Reading::Done,
            };
            return Some((status, headers));
        }
    }

    /// One CRLF-terminated line (without it); `None` when the connection
    /// ends first.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(p) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                self.buf.drain(..p + 2);
                return Some(line);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The next piece of the current response body.
    fn piece(&mut self) -> Piece {
        let piece = match self.reading {
            Reading::Done => Piece::End,
            Reading::Left(0) => Piece::End,
            Reading::Left(left) => {
                if self.buf.is_empty() && !self.fill() {
                    Piece::Cut
                } else {
                    let n = left.min(self.buf.len());
                    self.reading = Reading::Left(left - n);
                    Piece::Data(self.buf.drain(..n).collect())
                }
            }
            Reading::ToClose => {
                if self.buf.is_empty() && !self.fill() {
                    Piece::End
                } else {
                    Piece::Data(std::mem::take(&mut self.buf))
                }
            }
            Reading::Chunked => self.chunk(),
        };
        match &piece {
            Piece::Data(data) => check_answer(&String::from_utf8_lossy(data)),
            Piece::End | Piece::Cut => self.reading = Reading::Done,
        }
        piece
    }

    /// One chunk of a chunked body.
    fn chunk(&mut self) -> Piece {
        let Some(line) = self.line() else { return Piece::Cut };
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .unwrap_or_else(|_| panic!("a chunk-size line, not {line:?}"));
        if size == 0 {
            // trailers, up to the empty line that ends the body
            loop {
                match self.line() {
                    None => return Piece::Cut,
                    Some(l) if l.is_empty() => return Piece::End,
                    Some(_) => {}
                }
            }
        }
        while self.buf.len() < size + 2 {
            if !self.fill() {
                return Piece::Cut;
            }
        }
        let data: Vec<u8> = self.buf.drain(..size).collect();
        assert_eq!(&self.buf[..2], b"\r\n", "a chunk ends with CRLF");
        self.buf.drain(..2);
        Piece::Data(data)
    }

    /// Reads body pieces into `got` until it holds `needle`.
    #[track_caller]
    fn read_until(&mut self, got: &mut Vec<u8>, needle: &str) {
        while !String::from_utf8_lossy(got).contains(needle) {
            match self.piece() {
                Piece::Data(data) => got.extend_from_slice(&data),
                end => panic!(
                    "the body ended ({end:?}) before {needle:?} arrived; got {:?}",
                    String::from_utf8_lossy(got)
                ),
            }
        }
    }

    /// Reads the rest of the body into `got`; how it ended.
    fn rest(&mut self, got: &mut Vec<u8>) -> Piece {
        loop {
            match self.piece() {
                Piece::Data(data) => got.extend_from_slice(&data),
                end => return end,
            }
        }
    }

    /// The next whole response; `None` when the connection ends before a
    /// head.
    fn try_response(&mut self) -> Option<Response> {
        let (status, headers) = self.head()?;
        let framed = self.framed;
        let mut body = Vec::new();
        let complete = self.rest(&mut body) == Piece::End;
        check_answer(&String::from_utf8_lossy(&body));
        Some(Response { status, headers, body, framed, complete })
    }

    #[track_caller]
    fn response(&mut self) -> Response {
        self.try_response().expect("a response before the connection ended")
    }
}

// ---------------------------------------------------------------------------
// What reached the provider.

/// A forwarded request: the real credential in `name` exactly once, no
/// other credential header, none of the client's hop-by-hop headers, the
/// upstream's host, the passed headers unchanged, no sentinel anywhere, a
/// body re-framed with its length.
#[track_caller]
fn assert_forwarded(
    req: &Request,
    name: &str,
    value: &str,
    upstream: &FakeStream,
    route: &str,
    sentinels: &[&str],
) {
    let names = req.names();
    assert!(req.all(name) == [value], "{name} carries the real credential, once (headers {names:?})");
    for other in CREDENTIAL_HEADERS.iter().filter(|h| **h != name) {
        assert!(req.header(other).is_none(), "{other} reached the provider (headers {names:?})");
    }
    for (hop, sent) in HOP_BY_HOP {
        if hop == "connection" {
            // the daemon may send its own (`close`); the client's never passes
            assert!(req.all(hop).iter().all(|v| *v != sent && !v.contains("x-drop-me")), "{hop} passed");
        } else {
            assert!(req.header(hop).is_none(), "{hop} reached the provider (headers {names:?})");
        }
    }
    for added in NEVER_ADDED {
        assert!(req.header(added).is_none(), "{added} reached the provider (headers {names:?})");
    }
    for (passed, sent) in PASSED {
        assert_eq!(req.header(passed), Some(sent), "{passed} passes unchanged");
    }
    let host = req.header("host").expect("a host header");
    assert!(host == upstream.authority || host == route, "host {host:?} is the upstream's");
    for s in sentinels {
        assert!(!req.contains(s), "a sentinel reached the provider");
    }
    if !req.body.is_empty() {
        assert!(!req.chunked, "the body is re-framed with a length");
        assert_eq!(req.header("content-length"), Some(req.body.len().to_string().as_str()));
    }
}

/// The flags of a request's `anthropic-beta` headers.
fn beta_flags(req: &Request) -> BTreeSet<String> {
    req.all("anthropic-beta")
        .iter()
        .flat_map(|v| v.split(','))
        .map(|f| f.trim().to_owned())
        .filter(|f| !f.is_empty())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// The shape of a provider's error body.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Only "JSON that says llxprt-credd:" (no route is known yet).
    Any,
    /// `{"type":"error","error":{"type":…,"message":…}}`
    Anthropic,
    /// `{"error":{"message":…,"type":…}}`
    OpenAi,
    /// `{"error":{"code":STATUS,"message":…,"status":…}}`
    Gemini,
}

/// A refusal: `status`, a JSON body in `shape` whose message names the
/// daemon, no sentinel in it.
#[track_caller]
fn assert_refused(what: &str, r: &Response, status: u16, shape: Shape, sentinels: &[&str]) {
    let text = r.text();
    assert_eq!(r.status, status, "{what}: {text}");
    assert!(text.contains("llxprt-credd:"), "{what}: the answer names the daemon: {text}");
    let v: Value =
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    for s in sentinels {
        assert!(!text.contains(s), "{what}: the answer holds a sentinel");
    }
    let message = match shape {
        Shape::Any => return,
        Shape::Anthropic => {
            assert_eq!(v["type"], "error", "{what}: {v}");
            &v["error"]["message"]
        }
        Shape::OpenAi => &v["error"]["message"],
        Shape::Gemini => {
            assert_eq!(v["error"]["code"], status, "{what}: {v}");
            &v["error"]["message"]
        }
    };
    assert!(message.as_str().is_some_and(|m| m.contains("llxprt-credd:")), "{what}: {shape:?} shape: {v}");
}

// ---------------------------------------------------------------------------
// Sentinels on the credential socket.

#[test]
fn token_sentinels_have_the_shapes_llxprt_code_expects_and_stay_stable() {
    let dir = TestDir::new("inj-sent-tok");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let claude = real("sk-ant-oat01-", "claude");
    let claude_work = real("sk-ant-oat01-", "claude-work");
    let legacy = real("sk-ant-oat01-", "legacy");
    let codex = real("eyJ-codex-", "codex");
    let claude_expiry = seed_token(&dir, "claudecode", &claude);
    seed_token(&dir, "claudecode:work", &claude_work);
    seed_token(&dir, "anthropic:old", &legacy);
    let codex_expiry = seed_token(&dir, "codex", &codex);
    let args = ["--allow", "claudecode", "--allow", "anthropic", "--allow", "codex"];
    let p = start(&dir, &upstream, &oauth, &args);

    // the Claude subscription: the sentinel, the real expiry, nothing else secret
    let t = p.token("claudecode", None);
    let s_claude = plant(t["access_token"].as_str().unwrap(), Exposure::Served);
    assert_sentinel(&s_claude, CLAUDE_OAUTH, Alphabet::Base64Url);
    assert_eq!(t["expiry"].as_f64(), Some(claude_expiry), "{t}");
    assert_eq!(t["token_type"], "Bearer");
    for never in ["refresh_token", "id_token"] {
        assert!(t.get(never).is_none(), "{never} is never served: {t}");
    }
    // stable: on another connection, and through llxprt-cred get
    assert_eq!(p.token("claudecode", None)["access_token"], s_claude.as_str());
    let shown = ok(p.cred(&dir, &["get", "claudecode"]));
    check_answer(&shown);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["access_token"], s_claude.as_str());
    assert_eq!(shown["expiry"].as_f64(), Some(claude_expiry));

    // one per bucket and per provider name; the legacy anthropic OAuth store too
    let s_work = p.sentinel("claudecode", Some("work"));
    let s_legacy = p.sentinel("anthropic", Some("old"));
    assert_sentinel(&s_work, CLAUDE_OAUTH, Alphabet::Base64Url);
    assert_sentinel(&s_legacy, CLAUDE_OAUTH, Alphabet::Base64Url);
    let all = set(&[s_claude.as_str(), s_work.as_str(), s_legacy.as_str()]);
    assert_eq!(all.len(), 3, "one sentinel per provider and bucket");

    // Codex: the sentinel with the real account id, no id token
    let t = p.token("codex", None);
    let s_codex = plant(t["access_token"].as_str().unwrap(), Exposure::Served);
    assert_sentinel(&s_codex, CODEX_OAUTH, Alphabet::Base64Url);
    assert_eq!(t["account_id"], ACCOUNT_ID, "{t}");
    assert_eq!(t["expiry"].as_f64(), Some(codex_expiry));
    for never in ["refresh_token", "id_token"] {
        assert!(t.get(never).is_none(), "{never} is never served: {t}");
    }
    let shown = ok(p.cred(&dir, &["get", "codex"]));
    check_answer(&shown);
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        (shown["access_token"].as_str(), shown["account_id"].as_str()),
        (Some(s_codex.as_str()), Some(ACCOUNT_ID))
    );

    // nothing stored: no sentinel, as without --inject
    let r = p.client().request("get_token", json!({"provider": "claudecode", "bucket": "nobody"}));
    assert_eq!(r["code"], "NOT_FOUND", "{r}");

    // a second daemon on the same store has sentinels of its own, and
    // neither takes the other's
    let q = start(&dir, &upstream, &oauth, &args);
    let s_other = q.sentinel("claudecode", None);
    assert_sentinel(&s_other, CLAUDE_OAUTH, Alphabet::Base64Url);
    assert_ne!(s_other, s_claude, "two daemons never share a sentinel");
    let msg =
        json!({"model": "claude-opus-4-1", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]});
    let foreign = format!("Bearer {s_other}");
    let r = p.http().post("/api.anthropic.com/v1/messages", &[("authorization", foreign.as_str())], &msg);
    assert_refused(
        "another daemon's sentinel",
        &r,
        401,
        Shape::Anthropic,
        &[s_other.as_str(), s_claude.as_str()],
    );
    assert_eq!(upstream.count(), 0, "a refused request reaches no provider");
    let own = format!("Bearer {s_claude}");
    let r = p.http().post("/api.anthropic.com/v1/messages", &[("authorization", own.as_str())], &msg);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(upstream.last().all("authorization") == [format!("Bearer {claude}").as_str()]);
}

#[test]
fn key_sentinels_take_the_shape_of_the_provider_their_profile_names() {
    for (provider, prefix, alphabet) in [
        ("anthropic", ANTHROPIC_KEY, Alphabet::Base64Url),
        ("openai", OPENAI_KEY, Alphabet::Base62),
        ("openai-responses", OPENAI_KEY, Alphabet::Base62),
        ("gemini", GEMINI_KEY, Alphabet::Base64Url),
    ] {
        let dir = TestDir::new("inj-sent-key");
        let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
        dir.set_key("MODEL_KEY", &real("sk-", provider));
        key_profile(&dir, "model", provider, "MODEL_KEY");
        let p = start(&dir, &upstream, &oauth, &["--profile", "model"]);
        let s = p.key("MODEL_KEY");
        assert_sentinel(&s, prefix, alphabet);
        assert_eq!(p.key("MODEL_KEY"), s, "{provider}: stable");
        let shown = ok(p.cred(&dir, &["get-key", "MODEL_KEY"]));
        check_answer(&shown);
        assert_eq!(shown, format!("{s}\n"), "{provider}: llxprt-cred get-key shows the sentinel");
        let r = p.client().request("has_api_key", json!({"name": "MODEL_KEY"}));
        assert_eq!(r["data"], json!({"exists": true}), "{provider}: has_api_key as without --inject: {r}");
    }
}

#[test]
fn a_key_no_profile_ties_to_a_provider_gets_an_error_not_a_sentinel() {
    let dir = TestDir::new("inj-loose-key");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    dir.set_key("LOOSE_KEY", &real("sk-", "loose"));
    // no profile anywhere names LOOSE_KEY: only --allow-key
    let p = start(&dir, &upstream, &oauth, &["--allow-key", "LOOSE_KEY"]);
    let r = p.client().request("get_api_key", json!({"name": "LOOSE_KEY"}));
    assert_eq!(r["ok"], false, "{r}");
    assert!(!r.to_string().contains("llxprtcredd"), "no sentinel: {r}");
    let out = p.cred(&dir, &["get-key", "LOOSE_KEY"]);
    assert!(!out.status.success(), "llxprt-cred get-key fails: {}", stdout(&out));
    check_answer(&stdout(&out));
    check_answer(&stderr(&out));
    assert!(!stdout(&out).contains("llxprtcredd"), "{}", stdout(&out));
    let r = p.client().request("has_api_key", json!({"name": "LOOSE_KEY"}));
    assert_eq!(r["data"], json!({"exists": true}), "{r}");
}

#[test]
fn a_key_whose_profile_points_elsewhere_is_not_routed() {
    let dir = TestDir::new("inj-elsewhere");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    dir.set_key("ROUTER_KEY", &real("sk-or-", "router"));
    dir.set_key("RELAY_KEY", &real("sk-", "relay"));
    // an OpenAI-style profile for another host: the key is that host's
    dir.save_profile(
        "router",
        r#"{"version":1,"provider":"openai","ephemeralSettings":{"auth-key-name":"ROUTER_KEY","base-url":"https://openrouter.ai/api/v1"}}"#,
    );
    // a profile already pointed at the relay: the route's own
    dir.save_profile(
        "relayed",
        r#"{"version":1,"provider":"openai","ephemeralSettings":{"auth-key-name":"RELAY_KEY","base-url":"http://127.0.0.1:18080/api.openai.com/v1"}}"#,
    );
    dir.save_profile("both", r#"{"version":1,"type":"loadbalancer","profiles":["router","relayed"]}"#);
    let p = start(&dir, &upstream, &oauth, &["--profile", "both"]);
    let r = p.client().request("get_api_key", json!({"name": "ROUTER_KEY"}));
    assert_eq!((r["ok"].clone(), r["code"].clone()), (json!(false), json!("FORBIDDEN")), "{r}");
    assert!(p.key("RELAY_KEY").starts_with("sk-llxprtcredd"));
    assert!(p.daemon.log_text().contains("key ROUTER_KEY: its profile's base-url is not api.openai.com"));
}

// ---------------------------------------------------------------------------
// The real credential reaches each upstream; the sentinel never does.

#[test]
fn a_claude_subscription_request_reaches_anthropic_with_the_real_token_and_the_oauth_beta() {
    let dir = TestDir::new("inj-claude");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let claude = real("sk-ant-oat01-", "claude");
    seed_token(&dir, "claudecode", &claude);
    let p = start(&dir, &upstream, &oauth, &["--allow", "claudecode"]);
    let s = p.sentinel("claudecode", None);
    let answer = r#"{"id":"msg_01","type":"message","content":[{"type":"text","text":"hello"}]}"#;
    upstream.push(Answer::new(
        200,
        &[
            ("content-type", "application/json"),
            ("request-id", "req_0123"),
            ("anthropic-ratelimit-requests-remaining", "99"),
            ("set-cookie", "__cf_bm=upstream-session; path=/"),
        ],
        answer,
    ));
    let auth = format!("Bearer {s}");
    let own = [
        ("authorization", auth.as_str()),
        ("x-goog-api-key", "junk-goog"),
        ("api-key", "junk-azure"),
        ("cookie", "session=junk"),
        ("anthropic-beta", "prompt-caching-2024-07-31"),
        ("host", "api.anthropic.com:18080"),
    ];
    let headers = [&own[..], &HOP_BY_HOP, &PASSED].concat();
    let body = json!({"model": "claude-opus-4-1", "max_tokens": 16, "stream": false,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut h = p.http();
    let r = h.post("/api.anthropic.com/v1/messages?beta=true", &headers, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), answer, "the body passes unchanged");
    let mode = std::fs::metadata(p.proxy.as_path()).expect("the proxy socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the proxy socket is private");
    assert_eq!(r.header("request-id"), Some("req_0123"));
    assert_eq!(r.header("anthropic-ratelimit-requests-remaining"), Some("99"));
    assert!(r.header("set-cookie").is_none(), "set-cookie is dropped");
    let req = upstream.last();
    assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", "/v1/messages?beta=true"));
    assert_eq!(req.json(), body);
    let bearer = format!("Bearer {claude}");
    assert_forwarded(&req, "authorization", &bearer, &upstream, "api.anthropic.com", &[s.as_str()]);
    assert_eq!(beta_flags(&req), set(&["oauth-2025-04-20", "prompt-caching-2024-07-31"]), "merged");

    // without a beta header of its own the OAuth one is still added
    let r = h.get("/api.anthropic.com/v1/models/claude-opus-4-1", &[("authorization", auth.as_str())]);
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.last();
    assert_eq!((req.method.as_str(), req.target.as_str()), ("GET", "/v1/models/claude-opus-4-1"));
    assert!(req.all("authorization") == [bearer.as_str()]);
    assert!(beta_flags(&req).contains("oauth-2025-04-20"));
    assert!(req.body.is_empty());
    assert_eq!(upstream.count(), 2);
    assert_eq!(oauth.count(), 0, "no refresh");
}

#[test]
fn an_anthropic_key_request_carries_the_real_key_in_x_api_key_only() {
    let dir = TestDir::new("inj-anthropic-key");
    let (upstream, oauth, key, p, s) = anthropic_key(&dir);
    let own = [
        ("x-api-key", s.as_str()),
        ("cookie", "session=junk"),
        ("api-key", "junk"),
        ("x-goog-api-key", "junk"),
    ];
    let headers = [&own[..], &HOP_BY_HOP, &PASSED].concat();
    let body = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "count me"}]});
    let mut h = p.http();
    let r = h.post("/api.anthropic.com/v1/messages/count_tokens", &headers, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"ok": true}));
    let req = upstream.last();
    assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", "/v1/messages/count_tokens"));
    assert_eq!(req.json(), body);
    assert_forwarded(&req, "x-api-key", &key, &upstream, "api.anthropic.com", &[s.as_str()]);
    // a GET with its query as sent
    let r = h.get("/api.anthropic.com/v1/models?beta=true&limit=5", &[("x-api-key", s.as_str())]);
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.last();
    assert_eq!((req.method.as_str(), req.target.as_str()), ("GET", "/v1/models?beta=true&limit=5"));
    assert!(req.all("x-api-key") == [key.as_str()] && req.header("authorization").is_none());
    assert_eq!((upstream.count(), oauth.count()), (2, 0));
}

#[test]
fn a_codex_request_carries_the_real_token_and_account_id() {
    let dir = TestDir::new("inj-codex");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let codex = real("eyJ-codex-", "codex");
    seed_token(&dir, "codex", &codex);
    let p = start(&dir, &upstream, &oauth, &["--allow", "codex"]);
    let t = p.token("codex", None);
    let s = plant(t["access_token"].as_str().unwrap(), Exposure::Served);
    let account = t["account_id"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {s}");
    let own = [
        ("authorization", auth.as_str()),
        ("chatgpt-account-id", account.as_str()),
        ("originator", "codex_cli_rs"),
        ("session_id", "sess-42"),
        ("x-api-key", "junk"),
        ("cookie", "session=junk"),
    ];
    let headers = [&own[..], &HOP_BY_HOP, &PASSED].concat();
    let body = json!({"model": "gpt-5.6-sol", "stream": true, "instructions": "be brief",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]});
    let mut h = p.http();
    let r = h.post("/chatgpt.com/backend-api/codex/responses", &headers, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.last();
    assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", "/backend-api/codex/responses"));
    assert_eq!(req.json(), body);
    let bearer = format!("Bearer {codex}");
    assert_forwarded(&req, "authorization", &bearer, &upstream, "chatgpt.com", &[s.as_str()]);
    assert!(req.all("chatgpt-account-id") == [ACCOUNT_ID]);
    assert_eq!((req.header("originator"), req.header("session_id")), (Some("codex_cli_rs"), Some("sess-42")));
    // the daemon sets the account id when the client sends none
    let r = h.get("/chatgpt.com/backend-api/wham/usage", &[("authorization", auth.as_str())]);
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.last();
    assert_eq!((req.method.as_str(), req.target.as_str()), ("GET", "/backend-api/wham/usage"));
    assert!(req.all("authorization") == [bearer.as_str()]);
    assert!(req.all("chatgpt-account-id") == [ACCOUNT_ID]);
    assert_eq!((upstream.count(), oauth.count()), (2, 0));
}

#[test]
fn an_openai_key_request_carries_the_real_key_as_a_bearer_token() {
    let dir = TestDir::new("inj-openai");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let key = real("sk-proj-", "openai");
    dir.set_key("OPENAI_KEY", &key);
    key_profile(&dir, "gpt", "openai", "OPENAI_KEY");
    let p = start(&dir, &upstream, &oauth, &["--profile", "gpt"]);
    let s = p.key("OPENAI_KEY");
    let auth = format!("Bearer {s}");
    let own = [
        ("authorization", auth.as_str()),
        ("x-api-key", "junk"),
        ("api-key", "junk"),
        ("x-goog-api-key", "junk"),
        ("cookie", "session=junk"),
    ];
    let headers = [&own[..], &HOP_BY_HOP, &PASSED].concat();
    let body = json!({"model": "gpt-5.5", "stream": false, "messages": [{"role": "user", "content": "hi"}]});
    let mut h = p.http();
    let r = h.post("/api.openai.com/v1/chat/completions", &headers, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.last();
    assert_eq!((req.method.as_str(), req.target.as_str()), ("POST", "/v1/chat/completions"));
    assert_eq!(req.json(), body);
    let bearer = format!("Bearer {key}");
    assert_forwarded(&req, "authorization", &bearer, &upstream, "api.openai.com", &[s.as_str()]);
    // the Responses API and the model list
    let body = json!({"model": "gpt-5.5", "input": "hi"});
    assert_eq!(
        h.post("/api.openai.com/v1/responses", &[("authorization", auth.as_str())], &body).status,
        200
    );
    assert_eq!(upstream.last().target, "/v1/responses");
    assert_eq!(h.get("/api.openai.com/v1/models", &[("authorization", auth.as_str())]).status, 200);
    let req = upstream.last();
    assert_eq!((req.method.as_str(), req.target.as_str()), ("GET", "/v1/models"));
    assert!(req.all("authorization") == [bearer.as_str()]);
    assert_eq!((upstream.count(), oauth.count()), (3, 0));
}

#[test]
fn a_gemini_key_request_carries_the_real_key_and_a_key_in_the_url_is_refused() {
    let dir = TestDir::new("inj-gemini");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let key = real("AIzaSy", "gemini");
    dir.set_key("GEMINI_KEY", &key);
    key_profile(&dir, "gem", "gemini", "GEMINI_KEY");
    let p = start(&dir, &upstream, &oauth, &["--profile", "gem"]);
    let s = p.key("GEMINI_KEY");
    let own = [
        ("x-goog-api-key", s.as_str()),
        ("authorization", "Bearer junk"),
        ("x-api-key", "junk"),
        ("cookie", "session=junk"),
        ("x-goog-api-client", "google-genai-sdk/1.30.0"),
    ];
    let headers = [&own[..], &HOP_BY_HOP, &PASSED].concat();
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "tools": [{"googleSearch": {}}, {"urlContext": {}}]});
    let mut h = p.http();
    let target =
        "/generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse";
    let r = h.post(target, &headers, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.last();
    assert_eq!(
        (req.method.as_str(), req.target.as_str()),
        ("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse")
    );
    assert_eq!(req.json(), body, "llxprt-code's own server-side tools stay allowed");
    assert_forwarded(
        &req,
        "x-goog-api-key",
        &key,
        &upstream,
        "generativelanguage.googleapis.com",
        &[s.as_str()],
    );
    assert_eq!(req.header("x-goog-api-client"), Some("google-genai-sdk/1.30.0"));
    let count = json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let r = h.post(
        "/generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:countTokens",
        &[("x-goog-api-key", s.as_str())],
        &count,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.last().target, "/v1beta/models/gemini-2.5-flash:countTokens");
    assert_eq!(upstream.count(), 2);
    // a credential in the URL is refused, even beside a good sentinel
    for target in [
        "/generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent?key=AIzaSyFromTheUrl",
        "/generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse&key=x",
    ] {
        let r = p.http().post(target, &[("x-goog-api-key", s.as_str())], &body);
        assert_refused(target, &r, 403, Shape::Gemini, &[s.as_str()]);
    }
    assert_eq!((upstream.count(), oauth.count()), (2, 0), "refused requests reach no provider");
}

// ---------------------------------------------------------------------------
// Refusals.

struct Case {
    what: &'static str,
    bytes: Vec<u8>,
    status: u16,
    shape: Shape,
}

fn case(what: &'static str, bytes: Vec<u8>, status: u16, shape: Shape) -> Case {
    Case { what, bytes, status, shape }
}

/// [`request_bytes`] with a text body.
fn raw(method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    request_bytes(method, target, headers, body.as_bytes())
}

#[test]
fn malformed_and_disallowed_requests_are_refused_without_an_upstream_request() {
    let dir = TestDir::new("inj-refuse");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    seed_token(&dir, "claudecode", &real("sk-ant-oat01-", "claude"));
    seed_token(&dir, "codex", &real("eyJ-codex-", "codex"));
    dir.set_key("OPENAI_KEY", &real("sk-proj-", "openai"));
    key_profile(&dir, "gpt", "openai", "OPENAI_KEY");
    let args = ["--profile", "gpt", "--allow", "claudecode", "--allow", "codex", "--proxy-max-body", "4096"];
    let p = start(&dir, &upstream, &oauth, &args);
    let (s_claude, s_codex, s_openai) =
        (p.sentinel("claudecode", None), p.sentinel("codex", None), p.key("OPENAI_KEY"));
    let forged = format!("{CLAUDE_OAUTH}{}", &"x7Kq_3Zr-9Lb".repeat(8)[..RANDOM_PART_CHARS]);
    let claude = format!("Bearer {s_claude}");
    let codex = format!("Bearer {s_codex}");
    let openai = format!("Bearer {s_openai}");
    let forged_bearer = format!("Bearer {forged}");
    let longer = format!("Bearer {s_claude}A");
    let shorter = format!("Bearer {}", &s_claude[..s_claude.len() - 1]);
    let msg =
        json!({"model": "claude-opus-4-1", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let chat = json!({"model": "gpt-5.5", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let gemini = json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string();
    let messages = "/api.anthropic.com/v1/messages";
    let with_claude = [("authorization", claude.as_str())];
    let head = |lines: &str| {
        format!("POST {messages} HTTP/1.1\r\nhost: x\r\nauthorization: {claude}\r\n{lines}\r\n")
    };
    let big_header = format!("x-pad: {}\r\n", "a".repeat(70 * 1024));
    let mut many_headers = String::new();
    for i in 0..120 {
        many_headers.push_str(&format!("x-field-{i}: v\r\n"));
    }
    let cases = [
        // routes
        case("an unknown route", raw("GET", "/evil.example.com/v1/models", &with_claude, ""), 404, Shape::Any),
        case(
            "a look-alike route",
            raw("POST", "/api.anthropic.com.evil.example/v1/messages", &with_claude, &msg),
            404,
            Shape::Any,
        ),
        // allow-lists
        case(
            "key minting",
            raw("POST", "/api.anthropic.com/api/oauth/claude_cli/create_api_key", &with_claude, "{}"),
            403,
            Shape::Anthropic,
        ),
        case("the files API", raw("GET", "/api.anthropic.com/v1/files", &with_claude, ""), 403, Shape::Anthropic),
        case(
            "a path in another case",
            raw("POST", "/api.anthropic.com/V1/messages", &with_claude, &msg),
            403,
            Shape::Anthropic,
        ),
        case(
            "DELETE a model",
            raw("DELETE", "/api.openai.com/v1/models/x", &[("authorization", openai.as_str())], ""),
            403,
            Shape::OpenAi,
        ),
        case(
            "GET on a POST path",
            raw("GET", "/api.openai.com/v1/chat/completions", &[("authorization", openai.as_str())], ""),
            403,
            Shape::OpenAi,
        ),
        case(
            "an opt-in Codex path",
            raw(
                "POST",
                "/chatgpt.com/backend-api/wham/rate-limit-reset-credits/consume",
                &[("authorization", codex.as_str())],
                "{}",
            ),
            403,
            Shape::Any,
        ),
        // sentinels
        case("no credential", raw("POST", messages, &[], &msg), 401, Shape::Anthropic),
        case(
            "an unknown sentinel",
            raw("POST", messages, &[("authorization", forged_bearer.as_str())], &msg),
            401,
            Shape::Anthropic,
        ),
        case(
            "a sentinel with a byte more",
            raw("POST", messages, &[("authorization", longer.as_str())], &msg),
            401,
            Shape::Anthropic,
        ),
        case(
            "a sentinel a byte short",
            raw("POST", messages, &[("authorization", shorter.as_str())], &msg),
            401,
            Shape::Anthropic,
        ),
        case(
            "the OpenAI key's sentinel on Anthropic, as a bearer",
            raw("POST", messages, &[("authorization", openai.as_str())], &msg),
            401,
            Shape::Anthropic,
        ),
        case(
            "the OpenAI key's sentinel on Anthropic, as x-api-key",
            raw("POST", messages, &[("x-api-key", s_openai.as_str())], &msg),
            401,
            Shape::Anthropic,
        ),
        case(
            "the Codex sentinel on Anthropic",
            raw("POST", messages, &[("authorization", codex.as_str())], &msg),
            401,
            Shape::Anthropic,
        ),
        case(
            "the Claude sentinel on OpenAI",
            raw("POST", "/api.openai.com/v1/chat/completions", &with_claude, &chat),
            401,
            Shape::OpenAi,
        ),
        case(
            "the Claude sentinel on ChatGPT",
            raw("POST", "/chatgpt.com/backend-api/codex/responses", &with_claude, &chat),
            401,
            Shape::Any,
        ),
        case(
            "the OpenAI key's sentinel on Gemini",
            raw(
                "POST",
                "/generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent",
                &[("x-goog-api-key", s_openai.as_str())],
                &gemini,
            ),
            401,
            Shape::Gemini,
        ),
        // the request's shape
        case(
            "CONNECT",
            b"CONNECT api.anthropic.com:443 HTTP/1.1\r\nhost: api.anthropic.com:443\r\n\r\n".to_vec(),
            405,
            Shape::Any,
        ),
        case(
            "an absolute-form target",
            format!("GET http://api.anthropic.com/v1/models HTTP/1.1\r\nhost: api.anthropic.com\r\nauthorization: {claude}\r\n\r\n")
                .into_bytes(),
            400,
            Shape::Any,
        ),
        case(
            "Content-Length and Transfer-Encoding",
            format!(
                "{}{:x}\r\n{msg}\r\n0\r\n\r\n",
                head(&format!(
                    "content-type: application/json\r\ncontent-length: {}\r\ntransfer-encoding: chunked\r\n",
                    msg.len()
                )),
                msg.len()
            )
            .into_bytes(),
            400,
            Shape::Any,
        ),
        case(
            "two Content-Lengths",
            format!(
                "{}{msg}",
                head(&format!(
                    "content-type: application/json\r\ncontent-length: {0}\r\ncontent-length: {0}\r\n",
                    msg.len()
                ))
            )
            .into_bytes(),
            400,
            Shape::Any,
        ),
        case(
            "an obs-fold line",
            format!(
                "{}{msg}",
                head(&format!(
                    "x-note: first\r\n continued\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
                    msg.len()
                ))
            )
            .into_bytes(),
            400,
            Shape::Any,
        ),
        case(
            "a WebSocket upgrade",
            format!(
                "GET /chatgpt.com/backend-api/codex/responses HTTP/1.1\r\nhost: 127.0.0.1:18080\r\n\
                 connection: Upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\
                 sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nopenai-beta: responses_websockets=2026-02-06\r\n\
                 chatgpt-account-id: {ACCOUNT_ID}\r\nauthorization: {codex}\r\n\r\n"
            )
            .into_bytes(),
            501,
            Shape::Any,
        ),
        // paths
        case(
            "an encoded dot",
            raw("GET", "/api.anthropic.com/v1/models/%2e%2e", &with_claude, ""),
            400,
            Shape::Any,
        ),
        case(
            "an encoded dot in upper case",
            raw("POST", "/api.anthropic.com/v1/%2E%2E/api/oauth/claude_cli/create_api_key", &with_claude, "{}"),
            400,
            Shape::Any,
        ),
        case("an encoded slash", raw("POST", "/api.anthropic.com/v1%2fmessages", &with_claude, &msg), 400, Shape::Any),
        case(
            "a dot-dot segment",
            raw("POST", "/api.anthropic.com/v1/../api/oauth/claude_cli/create_api_key", &with_claude, "{}"),
            400,
            Shape::Any,
        ),
        case("a dot segment", raw("POST", "/api.anthropic.com/v1/./messages", &with_claude, &msg), 400, Shape::Any),
        case("an empty segment", raw("POST", "/api.anthropic.com//v1/messages", &with_claude, &msg), 400, Shape::Any),
        case(
            "an empty segment inside",
            raw("POST", "/api.anthropic.com/v1//messages", &with_claude, &msg),
            400,
            Shape::Any,
        ),
        // bodies and sizes
        case(
            "a body that is not JSON",
            raw("POST", messages, &[("authorization", claude.as_str()), ("content-type", "text/plain")], "hello, not JSON"),
            400,
            Shape::Anthropic,
        ),
        case(
            "a head over 64 KiB",
            format!("GET /api.anthropic.com/v1/models HTTP/1.1\r\nhost: x\r\nauthorization: {claude}\r\n{big_header}\r\n")
                .into_bytes(),
            431,
            Shape::Any,
        ),
        case(
            "more than 100 header fields",
            format!("GET /api.anthropic.com/v1/models HTTP/1.1\r\nhost: x\r\nauthorization: {claude}\r\n{many_headers}\r\n")
                .into_bytes(),
            431,
            Shape::Any,
        ),
        // the body is never sent: the answer must come from the head alone
        case(
            "a Content-Length over --proxy-max-body",
            head("content-type: application/json\r\ncontent-length: 5000\r\n").into_bytes(),
            413,
            Shape::Anthropic,
        ),
        case(
            "a chunk over --proxy-max-body",
            format!("{}1388\r\n", head("content-type: application/json\r\ntransfer-encoding: chunked\r\n")).into_bytes(),
            413,
            Shape::Anthropic,
        ),
    ];
    let sentinels = [s_claude.as_str(), s_codex.as_str(), s_openai.as_str(), forged.as_str()];
    for c in &cases {
        let mut h = p.http();
        h.send(&c.bytes);
        let r =
            h.try_response().unwrap_or_else(|| panic!("{}: the connection closed without an answer", c.what));
        assert_refused(c.what, &r, c.status, c.shape, &sentinels);
        assert_eq!(upstream.count(), 0, "{}: a refused request reached the provider", c.what);
    }
    // refusals are audited
    p.audit(&["status=403", "outcome=denied:"], 1);
    p.audit(&["status=401", "outcome=denied:"], 1);
    // and the provider was reachable all along
    let msg: Value = serde_json::from_str(&msg).unwrap();
    let r = p.http().post(messages, &with_claude, &msg);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.count(), 1);
}

#[test]
fn bodies_naming_remote_tool_servers_are_refused_unless_allowed() {
    let dir = TestDir::new("inj-mcp");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    seed_token(&dir, "claudecode", &real("sk-ant-oat01-", "claude"));
    seed_token(&dir, "codex", &real("eyJ-codex-", "codex"));
    dir.set_key("OPENAI_KEY", &real("sk-proj-", "openai"));
    key_profile(&dir, "gpt", "openai", "OPENAI_KEY");
    let args = ["--profile", "gpt", "--allow", "claudecode", "--allow", "codex"];
    let mcp_servers = r#"{"model":"claude-opus-4-1","max_tokens":8,"messages":[],"mcp_servers":[{"type":"url","url":"https://tools.evil.example/mcp","name":"x"}]}"#;
    // the same key, spelled with an escape: the policy reads parsed JSON
    let escaped = r#"{"model":"claude-opus-4-1","max_tokens":8,"messages":[],"mcp\u005fservers":[{"type":"url","url":"https://tools.evil.example/mcp","name":"x"}]}"#;
    let mcp_tool = r#"{"model":"gpt-5.5","input":"hi","tools":[{"type":"function","name":"f","parameters":{}},{"type":"mcp","server_label":"x","server_url":"https://tools.evil.example/mcp"}]}"#;
    let mentions = r#"{"model":"claude-opus-4-1","max_tokens":8,"messages":[{"role":"user","content":"what do \"mcp_servers\" and {\"type\":\"mcp\"} do?"}]}"#;
    let function_named_mcp =
        r#"{"model":"gpt-5.5","input":"hi","tools":[{"type":"function","name":"mcp","parameters":{}}]}"#;
    let messages = "/api.anthropic.com/v1/messages";

    let p = start(&dir, &upstream, &oauth, &args);
    let (s_claude, s_codex, s_openai) =
        (p.sentinel("claudecode", None), p.sentinel("codex", None), p.key("OPENAI_KEY"));
    let (claude, codex, openai) =
        (format!("Bearer {s_claude}"), format!("Bearer {s_codex}"), format!("Bearer {s_openai}"));
    let sentinels = [s_claude.as_str(), s_codex.as_str(), s_openai.as_str()];
    for (what, target, auth, body, shape) in [
        ("mcp_servers", messages, claude.as_str(), mcp_servers, Shape::Anthropic),
        ("an escaped mcp_servers", messages, claude.as_str(), escaped, Shape::Anthropic),
        ("an mcp tool on OpenAI", "/api.openai.com/v1/responses", openai.as_str(), mcp_tool, Shape::OpenAi),
        (
            "an mcp tool on Codex",
            "/chatgpt.com/backend-api/codex/responses",
            codex.as_str(),
            mcp_tool,
            Shape::Any,
        ),
    ] {
        let mut h = p.http();
        h.send_request("POST", target, &[("authorization", auth)], body.as_bytes());
        let r = h.response();
        assert_refused(what, &r, 403, shape, &sentinels);
    }
    assert_eq!(upstream.count(), 0, "refused bodies reach no provider");
    p.audit(&["status=403", "outcome=denied:"], 4);
    // words in a message, or a function that happens to be named mcp, are no violation
    for (target, auth, body) in [
        (messages, claude.as_str(), mentions),
        ("/api.openai.com/v1/responses", openai.as_str(), function_named_mcp),
    ] {
        let mut h = p.http();
        h.send_request("POST", target, &[("authorization", auth)], body.as_bytes());
        let r = h.response();
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        assert_eq!(upstream.last().body, body.as_bytes());
    }
    assert_eq!(upstream.count(), 2);

    // --allow-mcp lets them through, as sent
    let q = start(&dir, &upstream, &oauth, &[&args[..], &["--allow-mcp"]].concat());
    let (claude, openai) =
        (format!("Bearer {}", q.sentinel("claudecode", None)), format!("Bearer {}", q.key("OPENAI_KEY")));
    for (target, auth, body) in [
        (messages, claude.as_str(), mcp_servers),
        ("/api.openai.com/v1/responses", openai.as_str(), mcp_tool),
    ] {
        let mut h = q.http();
        h.send_request("POST", target, &[("authorization", auth)], body.as_bytes());
        let r = h.response();
        assert_eq!(r.status, 200, "--allow-mcp: {}", r.text());
        assert_eq!(upstream.last().body, body.as_bytes());
    }
    assert_eq!(upstream.count(), 4);
}

// ---------------------------------------------------------------------------
// Streaming and connections.

#[test]
fn sse_events_reach_the_client_one_at_a_time_and_the_connection_stays_usable() {
    let dir = TestDir::new("inj-sse");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let claude = real("sk-ant-oat01-", "claude");
    seed_token(&dir, "claudecode", &claude);
    let p = start(&dir, &upstream, &oauth, &["--allow", "claudecode"]);
    let auth = format!("Bearer {}", p.sentinel("claudecode", None));
    let events = [
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ];
    let body = json!({"model": "claude-opus-4-1", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let mut h = p.http();
    // chunked from the provider, then with no length at all: both reach
    // the client chunked, each event before the provider sends the next
    for framing in [Framing::Chunked, Framing::Close] {
        let gates = [Gate::new(), Gate::new()];
        let steps = vec![
            Step::send(events[0]),
            Step::Wait(gates[0].clone()),
            Step::send(events[1]),
            Step::Wait(gates[1].clone()),
            Step::send(events[2]),
        ];
        upstream.push(Answer::sse(framing, steps, End::Finish));
        let headers = [("authorization", auth.as_str()), ("accept", "text/event-stream")];
        h.send_request("POST", "/api.anthropic.com/v1/messages", &headers, body.to_string().as_bytes());
        let (status, head) = h.head().expect("a response head");
        assert_eq!(status, 200, "{framing:?}");
        assert_eq!(header(&head, "content-type"), Some("text/event-stream"), "{framing:?}");
        assert_eq!(
            h.framed,
            Framed::Chunked,
            "{framing:?}: a body of unknown length goes to the client chunked"
        );
        let mut got = Vec::new();
        h.set_timeout(EVENT_TIMEOUT);
        for (i, event) in events.iter().enumerate() {
            h.read_until(&mut got, event);
            if let Some(next) = events.get(i + 1) {
                assert!(!String::from_utf8_lossy(&got).contains(next), "{framing:?}: not sent yet");
            }
            if let Some(gate) = gates.get(i) {
                gate.open();
            }
        }
        h.set_timeout(READ_TIMEOUT);
        assert_eq!(h.rest(&mut got), Piece::End, "{framing:?}: the stream ends with its terminating chunk");
        assert_eq!(String::from_utf8_lossy(&got), events.concat(), "{framing:?}");
    }
    // the same connection takes a plain request after the streams
    let r = h.get("/api.anthropic.com/v1/models", &[("authorization", auth.as_str())]);
    assert_eq!((r.status, r.framed, r.complete), (200, Framed::Length(11), true), "{}", r.text());
    let requests = upstream.requests();
    assert_eq!(requests.len(), 3);
    let bearer = format!("Bearer {claude}");
    assert!(requests.iter().all(|r| r.all("authorization") == [bearer.as_str()]));
    p.audit(&["path=/v1/messages", "status=200"], 2);
}

#[test]
fn an_upstream_that_breaks_mid_body_reaches_the_client_as_an_abort() {
    let dir = TestDir::new("inj-abort");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    seed_token(&dir, "claudecode", &real("sk-ant-oat01-", "claude"));
    let p = start(&dir, &upstream, &oauth, &["--allow", "claudecode"]);
    let auth = format!("Bearer {}", p.sentinel("claudecode", None));
    let first = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n";
    let body = json!({"model": "claude-opus-4-1", "max_tokens": 64, "stream": true, "messages": []});
    let breaks = [
        ("a reset mid-stream", Framing::Chunked, End::Reset),
        ("an early close of a chunked body", Framing::Chunked, End::Eof),
        ("a reset of a body without a length", Framing::Close, End::Reset),
        ("fewer bytes than Content-Length", Framing::Length(4096), End::Eof),
    ];
    for (what, framing, end) in breaks {
        let gate = Gate::new();
        upstream.push(Answer::sse(framing, vec![Step::send(first), Step::Wait(gate.clone())], end));
        let mut h = p.http();
        h.send_request(
            "POST",
            "/api.anthropic.com/v1/messages",
            &[("authorization", auth.as_str())],
            body.to_string().as_bytes(),
        );
        let (status, _) = h.head().unwrap_or_else(|| panic!("{what}: no response head"));
        assert_eq!(status, 200, "{what}");
        assert_ne!(h.framed, Framed::Close, "{what}: a close-delimited answer cannot show an abort");
        let mut got = Vec::new();
        h.read_until(&mut got, first);
        gate.open();
        let ended = h.rest(&mut got);
        assert_eq!(
            ended,
            Piece::Cut,
            "{what}: the client saw a clean end after {:?}",
            String::from_utf8_lossy(&got)
        );
        if let Framed::Length(n) = h.framed {
            assert!(got.len() < n, "{what}: the missing bytes were made up");
        }
    }
    p.audit(&["outcome=upstream-abort"], breaks.len());
    // the daemon goes on serving
    let r = p.http().post("/api.anthropic.com/v1/messages", &[("authorization", auth.as_str())], &body);
    assert_eq!((r.status, r.complete), (200, true), "{}", r.text());
    assert_eq!(upstream.count(), breaks.len() + 1);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let dir = TestDir::new("inj-keepalive");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    seed_token(&dir, "claudecode", &real("sk-ant-oat01-", "claude"));
    let mut p = start(&dir, &upstream, &oauth, &["--allow", "claudecode"]);
    let auth = format!("Bearer {}", p.sentinel("claudecode", None));
    let with_auth = [("authorization", auth.as_str())];
    upstream.script((0..4).map(|n| Answer::json(200, &json!({ "n": n }))));
    let msg = json!({"model": "claude-opus-4-1", "max_tokens": 1, "messages": []});
    let mut h = p.http();
    assert_eq!(h.post("/api.anthropic.com/v1/messages", &with_auth, &msg).json(), json!({"n": 0}));
    assert_eq!(h.get("/api.anthropic.com/v1/models", &with_auth).json(), json!({"n": 1}));
    assert_eq!(
        h.post("/api.anthropic.com/v1/messages/count_tokens", &with_auth, &msg).json(),
        json!({"n": 2})
    );
    // a client that asks to close gets its answer, then the close
    let closing = [("authorization", auth.as_str()), ("connection", "close")];
    assert_eq!(h.get("/api.anthropic.com/v1/models/claude-opus-4-1", &closing).json(), json!({"n": 3}));
    h.set_timeout(Duration::from_secs(5));
    assert!(h.closed(), "the daemon closes after Connection: close");
    let paths: Vec<(String, String)> =
        upstream.requests().into_iter().map(|r| (r.method.clone(), r.path().to_owned())).collect();
    let expected = [
        ("POST", "/v1/messages"),
        ("GET", "/v1/models"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/models/claude-opus-4-1"),
    ];
    assert_eq!(paths, expected.map(|(method, path)| (method.to_owned(), path.to_owned())));
    // the proxy socket goes away with the daemon
    drop(h);
    let status = p.daemon.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!p.proxy.exists(), "the proxy socket is removed at exit");
}

// ---------------------------------------------------------------------------
// 401 from the provider.

#[test]
fn a_401_on_an_oauth_token_refreshes_once_and_the_retry_answers() {
    for (provider, target) in [
        ("claudecode", "/api.anthropic.com/v1/messages"),
        ("codex", "/chatgpt.com/backend-api/codex/responses"),
    ] {
        let dir = TestDir::new("inj-401-oauth");
        let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
        let stored = real("at-", provider);
        seed_token(&dir, provider, &stored);
        let p = start(&dir, &upstream, &oauth, &["--allow", provider]);
        let sentinel = p.sentinel(provider, None);
        upstream.push(Answer::json(
            401,
            &json!({"type": "error", "error": {"type": "authentication_error", "message": "OAuth token has expired"}}),
        ));
        upstream.push(Answer::json(200, &json!({"id": "after-refresh"})));
        let auth = format!("Bearer {sentinel}");
        let mut headers = vec![("authorization", auth.as_str())];
        if provider == "codex" {
            headers.push(("chatgpt-account-id", ACCOUNT_ID));
        }
        let body = json!({"model": "some-model", "stream": false, "input": "hi", "max_tokens": 8,
            "messages": [{"role": "user", "content": "hi"}]});
        let mut h = p.http();
        let r = h.post(target, &headers, &body);
        assert_eq!(r.status, 200, "{provider}: the client gets the retry's answer: {}", r.text());
        assert_eq!(r.json(), json!({"id": "after-refresh"}));
        let requests = upstream.requests();
        assert_eq!(requests.len(), 2, "{provider}: one retry");
        let old = format!("Bearer {stored}");
        assert!(
            requests[0].all("authorization") == [old.as_str()],
            "{provider}: first with the stored token"
        );
        assert!(
            requests[1].all("authorization") == ["Bearer at-refreshed-1"],
            "{provider}: retried with the new one"
        );
        assert_eq!(requests[1].body, requests[0].body, "{provider}: the retry resends the body");
        if provider == "codex" {
            assert!(requests.iter().all(|r| r.all("chatgpt-account-id") == [ACCOUNT_ID]));
        }
        assert_eq!(oauth.count(), 1, "{provider}: exactly one refresh");
        let call = &oauth.calls()[0];
        assert_eq!(call.field("grant_type").as_deref(), Some("refresh_token"));
        assert_eq!(call.field("refresh_token"), Some(format!("rt-CANARY-{stored}")));
        // the new token serves what follows, under the same sentinel
        let r = h.post(target, &headers, &body);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(upstream.last().all("authorization") == ["Bearer at-refreshed-1"]);
        assert_eq!((upstream.count(), oauth.count()), (3, 1));
        assert_eq!(
            p.token(provider, None)["access_token"],
            sentinel.as_str(),
            "{provider}: stable across the refresh"
        );
        assert!(!p.daemon.log_text().contains("at-refreshed-1"), "{provider}: the new token is in the log");
    }
}

#[test]
fn a_401_on_an_api_key_passes_through_after_one_request() {
    let dir = TestDir::new("inj-401-key");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    dir.set_key("ANTHROPIC_KEY", &real("sk-ant-api03-", "anthropic"));
    key_profile(&dir, "claude-key", "anthropic", "ANTHROPIC_KEY");
    let p = start(&dir, &upstream, &oauth, &["--profile", "claude-key"]);
    let s = p.key("ANTHROPIC_KEY");
    let rejected =
        json!({"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}});
    upstream.push(Answer::json(401, &rejected));
    let msg = json!({"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    let mut h = p.http();
    let r = h.post("/api.anthropic.com/v1/messages", &[("x-api-key", s.as_str())], &msg);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json(), rejected, "the provider's answer passes unchanged");
    assert_eq!((upstream.count(), oauth.count()), (1, 0), "one request, no refresh");
    // the next request is tried afresh
    let r = h.post("/api.anthropic.com/v1/messages", &[("x-api-key", s.as_str())], &msg);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((upstream.count(), oauth.count()), (2, 0));
}

// ---------------------------------------------------------------------------
// Audit, --reveal, start-up checks.

#[test]
fn every_proxied_request_gets_an_audit_line_without_secrets() {
    let dir = TestDir::new("inj-audit");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    seed_token(&dir, "claudecode", &real("sk-ant-oat01-", "claude"));
    let p = start(&dir, &upstream, &oauth, &["--allow", "claudecode"]);
    let auth = format!("Bearer {}", p.sentinel("claudecode", None));
    let headers = [("authorization", auth.as_str()), ("anthropic-beta", "hdr-value-never-logged-7731")];
    let msg = json!({"model": "claude-opus-4-1", "max_tokens": 8, "stream": false,
        "messages": [{"role": "user", "content": "body-words-never-logged-5521"}]});
    let mut h = p.http();
    assert_eq!(h.post("/api.anthropic.com/v1/messages", &headers, &msg).status, 200);
    let line = &p.audit(&["path=/v1/messages", "status=200"], 1)[0];
    for field in ["route=api.anthropic.com", "method=POST", "model=claude-opus-4-1", "outcome=ok"] {
        assert!(line.contains(field), "{field} in {line}");
    }
    // a refused request has its line too
    let r = h.post("/api.anthropic.com/api/oauth/claude_cli/create_api_key", &headers, &json!({}));
    assert_eq!(r.status, 403, "{}", r.text());
    let line = &p.audit(&["status=403"], 1)[0];
    assert!(line.contains("route=api.anthropic.com") && line.contains("outcome=denied:"), "{line}");
    // a model name from the sandbox cannot forge log lines
    let forged =
        json!({"model": "x\nINJECTED audit proxy route=evil outcome=ok", "max_tokens": 8, "messages": []});
    assert_eq!(p.http().post("/api.anthropic.com/v1/messages", &headers, &forged).status, 200);
    p.audit(&["status=200"], 2);
    let log = p.daemon.log_text();
    assert!(!log.lines().any(|l| l.starts_with("INJECTED")), "a model name split a log line:\n{log}");
    for secret in ["hdr-value-never-logged-7731", "body-words-never-logged-5521"] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
    // sentinels and real tokens are planted: the harness checks the log for them
    p.daemon.check_log();
}

#[test]
fn reveal_serves_real_tokens_for_that_provider_only() {
    let dir = TestDir::new("inj-reveal");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    // served by --reveal, so planted as may-be-served (still never logged)
    let claude = plant(unique("sk-ant-oat01-revealed-"), Exposure::Served);
    seed_token(&dir, "claudecode", &claude);
    seed_token(&dir, "codex", &real("eyJ-codex-", "codex"));
    dir.set_key("ANTHROPIC_KEY", &real("sk-ant-api03-", "anthropic"));
    key_profile(&dir, "claude-key", "anthropic", "ANTHROPIC_KEY");
    let args =
        ["--profile", "claude-key", "--allow", "claudecode", "--allow", "codex", "--reveal", "claudecode"];
    let p = start(&dir, &upstream, &oauth, &args);
    let t = p.token("claudecode", None);
    assert_eq!(t["access_token"], claude.as_str(), "{t}");
    assert!(t.get("refresh_token").is_none(), "{t}");
    let shown: Value = serde_json::from_str(&ok(p.cred(&dir, &["get", "claudecode"]))).unwrap();
    assert_eq!(shown["access_token"], claude.as_str());
    // other providers and keys keep their sentinels
    assert_sentinel(&p.sentinel("codex", None), CODEX_OAUTH, Alphabet::Base64Url);
    assert_sentinel(&p.key("ANTHROPIC_KEY"), ANTHROPIC_KEY, Alphabet::Base64Url);
    // said at start
    p.log_lines("naming --reveal claudecode", 1, |l| {
        l.to_ascii_lowercase().contains("reveal") && l.contains("claudecode")
    });
}

/// Waits for a child to exit, at most `within`; kills it and fails the test
/// when it is still running.
fn exit_within(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon started (or hung) instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_non_loopback_upstream_override_stops_the_daemon_at_start() {
    let dir = TestDir::new("inj-override");
    dir.set_key("OPENAI_KEY", &real("sk-proj-", "openai"));
    key_profile(&dir, "gpt", "openai", "OPENAI_KEY");
    for (var, url) in [
        (ROUTE_VARS[0], "http://203.0.113.7:8080"),
        (ROUTE_VARS[1], "http://example.com:80"),
        (ROUTE_VARS[2], "http://169.254.169.254:80"),
        (ROUTE_VARS[3], "http://10.0.0.1:9"),
    ] {
        let proxy = dir
            .root
            .join("sock")
            .join(format!("proxy-{}.sock", PROXY_SOCKETS.fetch_add(1, Ordering::SeqCst)));
        let mut child = dir
            .command(env!("CARGO_BIN_EXE_llxprt-credd"))
            .env(var, url)
            .args(["-D", "--store", "file", "--no-capability", "--inject", "--profile", "gpt", "--socket"])
            .arg(dir.socket_path())
            .arg("--proxy-socket")
            .arg(&proxy)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn llxprt-credd");
        let status = exit_within(&mut child, Duration::from_secs(10));
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(status.code(), Some(2), "{var}={url}: {err}");
        assert!(
            err.contains(var) || err.contains("loopback"),
            "{var}={url}: the refusal names the override: {err}"
        );
        assert!(
            UnixStream::connect(proxy.as_path()).is_err(),
            "{var}={url}: nothing listens on the proxy socket"
        );
    }
    // a loopback name is an accepted override, and is used
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let port = upstream.authority.rsplit(':').next().unwrap().to_owned();
    let p = start_at(&dir, &format!("http://localhost:{port}"), &oauth, &["--profile", "gpt"]);
    let auth = format!("Bearer {}", p.key("OPENAI_KEY"));
    let body = json!({"model": "gpt-5.5", "messages": []});
    let r = p.http().post("/api.openai.com/v1/chat/completions", &[("authorization", auth.as_str())], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.count(), 1);
}

#[test]
fn a_client_that_leaves_closes_the_upstream_request_at_once() {
    let dir = TestDir::new("inj-leave");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    seed_token(&dir, "claudecode", &real("sk-ant-oat01-", "claude"));
    let p = start(&dir, &upstream, &oauth, &["--allow", "claudecode"]);
    let auth = format!("Bearer {}", p.sentinel("claudecode", None));
    let first = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n";
    let (tx, rx) = std::sync::mpsc::channel();
    // The provider sends one event, then stays silent (a long generation)
    // until the proxy closes the request.
    upstream.push(Answer::sse(Framing::Chunked, vec![Step::send(first), Step::UntilClosed(tx)], End::Eof));
    let body = json!({"model": "claude-opus-4-1", "max_tokens": 64, "stream": true, "messages": []});
    let mut h = p.http();
    h.send_request(
        "POST",
        "/api.anthropic.com/v1/messages",
        &[("authorization", auth.as_str())],
        body.to_string().as_bytes(),
    );
    let (status, _) = h.head().expect("a response head");
    assert_eq!(status, 200);
    let mut got = Vec::new();
    h.read_until(&mut got, first);
    let left = std::time::Instant::now();
    drop(h);
    let closed = rx.recv_timeout(Duration::from_secs(20)).expect("the upstream request was never closed");
    let after = closed.saturating_duration_since(left);
    eprintln!("the upstream request closed {after:?} after the client left");
    assert!(after < Duration::from_secs(2), "the upstream request stayed open {after:?}");
    p.audit(&["outcome=aborted-by-client"], 1);
}

#[test]
fn ten_concurrent_requests_hitting_a_401_share_one_refresh_and_all_succeed() {
    let dir = TestDir::new("inj-401-ten");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let stored = real("at-", "claudecode");
    seed_token(&dir, "claudecode", &stored);
    let p = start(&dir, &upstream, &oauth, &["--allow", "claudecode"]);
    let auth = format!("Bearer {}", p.sentinel("claudecode", None));
    upstream.reject(&format!("Bearer {stored}"));
    let body = json!({"model": "claude-opus-4-1", "max_tokens": 8, "messages": []});
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(10));
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..10)
            .map(|_| {
                let (barrier, auth, body, p) = (barrier.clone(), auth.clone(), body.clone(), &p);
                s.spawn(move || {
                    let mut h = p.http();
                    barrier.wait();
                    h.post("/api.anthropic.com/v1/messages", &[("authorization", auth.as_str())], &body)
                        .status
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(statuses, vec![200; 10], "every request succeeds after the refresh");
    assert_eq!(oauth.count(), 1, "exactly one refresh for ten rejected requests");
    let rejected = format!("Bearer {stored}");
    let requests = upstream.requests();
    let retried = requests.iter().filter(|r| r.all("authorization") == ["Bearer at-refreshed-1"]).count();
    let first = requests.iter().filter(|r| r.all("authorization") == [rejected.as_str()]).count();
    assert_eq!(retried, 10, "each request ends with one request carrying the new token");
    assert!((1..=10).contains(&first), "{first} requests used the old token");
    assert_eq!(requests.len(), first + retried);
}

#[test]
fn a_provider_that_echoes_the_real_key_is_scrubbed_from_the_answer() {
    let dir = TestDir::new("inj-scrub");
    let (upstream, _oauth, key, p, s) = anthropic_key(&dir);
    // The key split across two reads of a stream, and whole in a header
    // and in a body with a length.
    let (head, tail) = key.split_at(key.len() / 2);
    upstream.push(Answer::sse(
        Framing::Chunked,
        vec![Step::send(format!("data: {{\"echo\":\"{head}")), Step::send(format!("{tail}\"}}\n\n"))],
        End::Finish,
    ));
    let echoed = format!("{{\"error\":\"bad key {key}\"}}");
    upstream.push(Answer::new(
        401,
        &[("x-debug", key.as_str()), ("content-type", "application/json")],
        &echoed,
    ));
    let body = json!({"model": "claude-sonnet-4-5", "stream": true, "messages": []});
    let mut h = p.http();
    let r = h.post("/api.anthropic.com/v1/messages", &[("x-api-key", s.as_str())], &body);
    assert_eq!(r.status, 200);
    let masked = "*".repeat(key.len());
    assert_eq!(r.text(), format!("data: {{\"echo\":\"{masked}\"}}\n\n"), "the key is masked in the stream");
    let r = h.post("/api.anthropic.com/v1/messages", &[("x-api-key", s.as_str())], &body);
    assert_eq!(r.status, 401, "a key's 401 passes through");
    assert_eq!(
        r.text(),
        format!("{{\"error\":\"bad key {masked}\"}}"),
        "same length: Content-Length stays true"
    );
    assert_eq!(r.header("x-debug"), Some(masked.as_str()), "and in headers");
}

/// The daemon's resident memory, KiB (read from `/proc` as the
/// benchmarks read it).
fn rss_kib(pid: u32) -> u64 {
    crate::procfs::rss_kib(pid).expect("the daemon's VmRSS")
}

#[test]
fn a_slow_client_keeps_the_daemons_memory_flat() {
    use std::io::{Read, Write};
    let dir = TestDir::new("inj-slow");
    let (upstream, _oauth, _key, p, s) = anthropic_key(&dir);
    let body = r#"{"model":"claude-sonnet-4-5","stream":true,"messages":[]}"#;
    // A warm-up request (threads, buffers), then the baseline.
    upstream.push(Answer::json(200, &json!({"ok": true})));
    let warm =
        p.http().post("/api.anthropic.com/v1/messages", &[("x-api-key", s.as_str())], &json!({"model": "m"}));
    assert_eq!(warm.status, 200);
    let pid = p.daemon.child.id();
    let baseline = rss_kib(pid);
    // The provider has 32 MiB to send as fast as it can.
    let block = format!("data: {}\n\n", "x".repeat(256 * 1024));
    upstream.push(Answer::sse(Framing::Chunked, (0..128).map(|_| Step::send(&block)).collect(), End::Finish));
    let mut client = std::os::unix::net::UnixStream::connect(&p.proxy).unwrap();
    let request = format!(
        "POST /api.anthropic.com/v1/messages HTTP/1.1\r\nhost: relay\r\nx-api-key: {s}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(request.as_bytes()).unwrap();
    // The client reads 1 KiB every 100 ms; the proxy must not buffer what
    // the provider sends meanwhile (blocking writes, TCP flow control).
    let mut buf = [0u8; 1024];
    let mut read = 0;
    let mut samples = Vec::new();
    for i in 0..30 {
        client.read_exact(&mut buf).unwrap();
        read += buf.len();
        if i == 5 || i == 29 {
            samples.push(rss_kib(pid));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let grew = samples.iter().max().unwrap().saturating_sub(baseline);
    eprintln!("slow client: read {read} bytes; daemon RSS {baseline} KiB, then {samples:?} KiB");
    assert!(
        grew < 4096,
        "the daemon's memory grew by {grew} KiB while the client read slowly (32 MiB offered)"
    );
    drop(client);
}

#[test]
fn the_audit_line_carries_the_token_usage_the_provider_reports() {
    let dir = TestDir::new("inj-usage");
    let (upstream, _oauth, _key, p, s) = anthropic_key(&dir);
    upstream
        .push(Answer::json(200, &json!({"id": "m1", "usage": {"input_tokens": 12, "output_tokens": 34}})));
    // a stream whose counts arrive in two events, the second split across reads
    upstream.push(Answer::sse(
        Framing::Chunked,
        vec![
            Step::send("event: message_start\ndata: {\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n"),
            Step::send("event: message_delta\ndata: {\"usage\":{\"output_"),
            Step::send("tokens\":157}}\n\n"),
        ],
        End::Finish,
    ));
    let mut h = p.http();
    for stream in [false, true] {
        let body = json!({"model": "claude-sonnet-4-5", "stream": stream, "messages": []});
        let r = h.post("/api.anthropic.com/v1/messages", &[("x-api-key", s.as_str())], &body);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    p.audit(&["stream=false", "usage_in=12", "usage_out=34"], 1);
    p.audit(&["stream=true", "usage_in=25", "usage_out=157"], 1);
}

#[test]
fn providers_file_routes_carry_their_providers_keys_only() {
    let dir = TestDir::new("inj-file-route");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let key = real("sk-", "examplellm");
    dir.set_key("EXAMPLE_KEY", &key);
    key_profile(&dir, "example", "examplellm", "EXAMPLE_KEY");
    let file = dir.root.join("providers.json");
    std::fs::write(
        &file,
        r#"{"routes": [{"host": "api.example-llm.test", "api": "openai", "prefix": "/api/v1", "providers": ["examplellm"]}]}"#,
    )
    .unwrap();
    let p =
        start(&dir, &upstream, &oauth, &["--profile", "example", "--providers-file", file.to_str().unwrap()]);
    let s = p.key("EXAMPLE_KEY");
    assert!(s.starts_with("sk-llxprtcredd"), "an OpenAI-style sentinel: {s}");
    let auth = format!("Bearer {s}");
    let body = json!({"model": "example-1", "messages": [{"role": "user", "content": "hi"}]});
    let mut h = p.http();
    let r =
        h.post("/api.example-llm.test/api/v1/chat/completions", &[("authorization", auth.as_str())], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let req = upstream.last();
    assert_eq!(req.target, "/api/v1/chat/completions");
    assert_eq!(req.all("authorization"), [format!("Bearer {key}").as_str()]);
    // only the route's allow-list, and only its own sentinel
    // (a refusal before the body is read closes the connection: a fresh one each)
    let r = p.http().post("/api.example-llm.test/api/v1/files", &[("authorization", auth.as_str())], &body);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = p.http().post("/api.openai.com/v1/chat/completions", &[("authorization", auth.as_str())], &body);
    assert_eq!(r.status, 401, "the key's sentinel is valid on its own route only: {}", r.text());
    assert_eq!(upstream.count(), 1);
    // a route that would take a built-in provider's keys elsewhere is refused at start
    std::fs::write(
        &file,
        r#"{"routes": [{"host": "evil.example.test", "api": "openai", "providers": ["openai"]}]}"#,
    )
    .unwrap();
    let out = dir.credd_start_failing(&[
        "--inject",
        "--profile",
        "example",
        "--providers-file",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("served by a built-in route"), "{}", stderr(&out));
}

#[test]
fn in_inject_mode_the_sandbox_saves_no_token_even_when_writes_are_permitted() {
    let dir = TestDir::new("inj-save");
    let (upstream, oauth) = (FakeStream::start(), FakeProvider::start());
    let stored = real("sk-ant-oat01-", "claude");
    seed_token(&dir, "claudecode", &stored);
    let p = start(&dir, &upstream, &oauth, &["--allow", "claudecode", "--permit", "write"]);
    let sentinel = p.sentinel("claudecode", None);
    let in_an_hour =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    for access in
        [sentinel.clone(), format!(" {sentinel}"), "sk-ant-oat01-attackers-own-token-0123456789".to_owned()]
    {
        let r = p.client().request(
            "save_token",
            json!({"provider": "claudecode", "token": {"access_token": access, "expiry": in_an_hour, "token_type": "Bearer"}}),
        );
        assert_eq!(r["ok"], false, "{r}");
        assert_eq!(r["code"], "FORBIDDEN", "{r}");
    }
    // the host's token is untouched: a request upstream still carries it
    let body = json!({"model": "m", "messages": []});
    let r = p.http().post(
        "/api.anthropic.com/v1/messages",
        &[("authorization", format!("Bearer {sentinel}").as_str())],
        &body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream.last().all("authorization"), [format!("Bearer {stored}").as_str()]);
}

#[test]
fn a_client_that_leaves_before_the_answer_begins_closes_the_upstream_request() {
    let dir = TestDir::new("inj-leave-early");
    let (upstream, _oauth, _key, p, s) = anthropic_key(&dir);
    let (tx, rx) = std::sync::mpsc::channel();
    // A non-streaming call: the provider says nothing until it has generated.
    upstream.push(Answer { status: 200, headers: vec![], body: crate::fake_stream::Body::Silent(tx) });
    let body = json!({"model": "claude-sonnet-4-5", "stream": false, "messages": []});
    let mut h = p.http();
    h.send_request(
        "POST",
        "/api.anthropic.com/v1/messages",
        &[("x-api-key", s.as_str())],
        body.to_string().as_bytes(),
    );
    assert!(upstream.wait_for(1, Duration::from_secs(10)), "the request reached the provider");
    let left = std::time::Instant::now();
    drop(h);
    let closed = rx.recv_timeout(Duration::from_secs(20)).expect("the upstream request was never closed");
    let after = closed.saturating_duration_since(left);
    eprintln!("the upstream request closed {after:?} after the client left (before any answer)");
    assert!(after < Duration::from_secs(2), "the upstream request stayed open {after:?}");
    p.audit(&["outcome=aborted-by-client"], 1);
}

#[test]
fn override_headers_never_reach_the_provider_and_a_refusing_connection_is_closed() {
    let dir = TestDir::new("inj-overrides");
    let (upstream, _oauth, _key, p, s) = anthropic_key(&dir);
    let body = json!({"model": "claude-sonnet-4-5", "messages": []});
    let headers = [
        ("x-api-key", s.as_str()),
        ("x-http-method-override", "DELETE"),
        ("x-original-url", "/v1/files/f1"),
        ("x-rewrite-url", "/v1/files/f1"),
    ];
    let r = p.http().post("/api.anthropic.com/v1/messages", &headers, &body);
    assert_eq!(r.status, 200, "{}", r.text());
    let names = upstream.last().names().join(" ");
    assert!(
        !names.contains("override") && !names.contains("original") && !names.contains("rewrite"),
        "{names}"
    );
    // Eight refused requests on one connection, then it is closed: a
    // refusing loop cannot flush the audit log from one connection.
    let mut h = p.http();
    for i in 0..8 {
        let r = h.get("/api.anthropic.com/v1/files", &[("x-api-key", s.as_str())]);
        assert_eq!(r.status, 403, "refusal {i}: {}", r.text());
    }
    h.send_request("GET", "/api.anthropic.com/v1/models", &[("x-api-key", s.as_str())], b"");
    assert!(h.head().is_none(), "the ninth request finds the connection closed");
    assert!(p.daemon.log_text().contains("closed after 8 refused requests"));
}

#[test]
fn upstream_connections_are_reused_only_after_a_clean_end() {
    let dir = TestDir::new("inj-pool");
    let (upstream, _oauth, _key, p, s) = anthropic_key(&dir);
    let body = json!({"model": "claude-sonnet-4-5", "messages": []});
    // The connection goes back to the pool just after the client has its
    // answer: a moment between requests lets it (a request that comes
    // first opens another connection, which is only slower).
    let post = |p: &Inject| {
        let r = p.http().post("/api.anthropic.com/v1/messages", &[("x-api-key", s.as_str())], &body);
        std::thread::sleep(Duration::from_millis(150));
        r
    };
    // two answers with a length: one connection to the provider
    for _ in 0..2 {
        assert_eq!(post(&p).status, 200);
    }
    assert_eq!(
        (upstream.count(), upstream.connections()),
        (2, 1),
        "the second request reused the connection"
    );
    // a stream that is cut: that connection is never used again
    upstream.push(Answer::sse(Framing::Chunked, vec![Step::send("data: {}\n\n")], End::Eof));
    let mut h = p.http();
    h.send_request(
        "POST",
        "/api.anthropic.com/v1/messages",
        &[("x-api-key", s.as_str())],
        body.to_string().as_bytes(),
    );
    let _ = h.head();
    let mut got = Vec::new();
    assert_eq!(h.rest(&mut got), Piece::Cut);
    assert_eq!(post(&p).status, 200);
    assert_eq!((upstream.count(), upstream.connections()), (4, 2), "a fresh connection after the cut one");
    // an idle connection the provider closed: the request goes again on a new one
    upstream.push(Answer::new(200, &[("connection", "close")], "{}"));
    assert_eq!(post(&p).status, 200);
    assert_eq!(post(&p).status, 200);
    assert_eq!((upstream.count(), upstream.connections()), (6, 3), "no reuse after connection: close");
}
