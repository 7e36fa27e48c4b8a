/*!
`ProxySocketClient`: one blocking connection to the daemon.

The life of a client:

- Constructing it does nothing on the network. The first request connects
  and handshakes (offering versions 1 to 2 and the capability token when
  the client holds one); later requests carry the negotiated version.
- Each request has a fresh UUID as its id; the answer must carry the same
  id. Under protocol version 1 requests go one at a time (a mutex around
  the connection). Under version 2 (the `mux` module) requests from several
  threads go out at once on the one connection, and a request that times
  out sends `cancel` for itself and fails alone ("Request timed out after
  N ms"), the connection staying up.
- After [`CLIENT_IDLE_CLOSE`] without a request, the connection is shut
  down gracefully before the next request, which then connects and
  handshakes afresh. This is deliberately shorter than the daemon's own
  idle timeout, so the client always closes first and the daemon's close is
  never mistaken for a failure.
- Any other failure (I/O error, a version-1 timeout after
  [`REQUEST_TIMEOUT`], end of stream, a frame that is oversize, not JSON,
  of the wrong shape, or under version 1 with another id) kills the client
  for good: it never reconnects, and this and
  every later request fail with [`CONNECTION_LOST`]. A session whose broker
  went away must be restarted, not silently re-attached to whatever now
  listens on that path.
- A failed connect or handshake also kills the client; that call and
  every later one report what went wrong (the socket path and the OS
  error, or the handshake refusal).
- [`ProxySocketClient::close`] shuts the connection down; a later request
  opens a new one (as after an idle close).
*/
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

pub use crate::protocol::message::Response;
use crate::protocol::message::decode_response as parse_frame;

use super::mux::{CallError, Mux};
use super::{capability, socket_from};
use crate::error::{Error, RemoteCode, Result};
use crate::protocol::frame::{HEADER_LEN, encode_frame_max, frame_len_max, max_frame_len};
use crate::secret::SecretString;

/// How long a request may take, from sending to the whole answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An idle connection is closed before the next request after this long
/// (SPEC: 5 minutes). The daemon's own idle timeout is longer, so the client
/// always closes first.
pub const CLIENT_IDLE_CLOSE: Duration = Duration::from_secs(300);
/// The error of every request after the connection failed.
pub const CONNECTION_LOST: &str = "Credential proxy connection lost. Restart the session.";
/// The protocol versions offered in the handshake.
pub const OFFERED_VERSIONS: (u64, u64) = (1, 2);

impl Response {
    /// Turns an error response into [`Error::Remote`].
    pub fn into_data(self) -> Result<Map<String, Value>> {
        match self {
            Response::Ok(data) => Ok(data),
            Response::Err { code, message, .. } => {
                Err(Error::Remote { code: RemoteCode::parse(&code), message })
            }
        }
    }
}

/// The handshake frame.
fn handshake_frame(token: Option<&SecretString>) -> Zeroizing<Vec<u8>> {
    crate::protocol::message::encode_handshake(
        OFFERED_VERSIONS.0,
        OFFERED_VERSIONS.1,
        token.map(|t| t.expose()),
    )
}

/// The negotiated version from a handshake answer, or the error to report.
fn handshake_outcome(bytes: &[u8]) -> Result<u64> {
    let malformed = || Error::Connection("Malformed handshake response from proxy".into());
    match parse_frame(bytes).map_err(|_| malformed())?.response {
        Response::Ok(data) => Ok(data.get("version").and_then(Value::as_u64).unwrap_or(1)),
        Response::Err { code, message, .. } if code == "UNAUTHORIZED" => {
            Err(Error::Connection(format!("Credential proxy authentication failed: {message}")))
        }
        Response::Err { code, message, .. } => {
            Err(Error::Connection(format!("Handshake failed [{code}]: {message}")))
        }
    }
}

/// An open, handshaken connection.
struct Connection {
    stream: UnixStream,
    version: u64,
    last_used: Instant,
    /// Version 2: the reader thread and the requests waiting on it.
    mux: Option<Arc<Mux>>,
}

impl Connection {
    /// Shuts the connection down on purpose.
    fn shut(&self) {
        if let Some(m) = &self.mux {
            m.close();
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

enum State {
    /// No connection: not yet connected, or closed while healthy.
    Closed,
    /// Connected and handshaken.
    Open(Connection),
    /// Failed; the message every later request returns.
    Dead(String),
}

/// Why an exchange failed (either way the connection is finished).
#[derive(Debug)]
enum Failure {
    Io(io::Error),
    Malformed(&'static str),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Malformed(what) => f.write_str(what),
        }
    }
}

fn read_exact_by(stream: &mut UnixStream, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes one frame and reads one back, all before `deadline`. The answer
/// is wiped from memory once the caller has parsed it.
fn exchange(
    stream: &mut UnixStream,
    frame: &[u8],
    deadline: Instant,
    version: u64,
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    stream.set_write_timeout(Some(left)).map_err(Failure::Io)?;
    stream.write_all(frame).map_err(Failure::Io)?;
    let mut header = [0u8; HEADER_LEN];
    read_exact_by(stream, &mut header, deadline).map_err(Failure::Io)?;
    let len = frame_len_max(header, max_frame_len(version))
        .map_err(|_| Failure::Malformed("response frame length out of bounds"))?;
    let mut body = Zeroizing::new(vec![0u8; len]);
    read_exact_by(stream, &mut body, deadline).map_err(Failure::Io)?;
    Ok(body)
}

/// A blocking client of one daemon socket. `Send + Sync`: share it behind
/// an `Arc`; requests from several threads take turns on the connection.
pub struct ProxySocketClient {
    socket_path: PathBuf,
    capability_token: Option<SecretString>,
    request_timeout: Duration,
    idle_close: Duration,
    state: Mutex<State>,
}

impl fmt::Debug for ProxySocketClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySocketClient")
            .field("socket_path", &self.socket_path)
            .field("capability_token", &self.capability_token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl ProxySocketClient {
    /// A client of the daemon at `socket_path`, presenting
    /// `capability_token` in the handshake when given. Does not connect.
    pub fn new(socket_path: impl Into<PathBuf>, capability_token: Option<SecretString>) -> Self {
        ProxySocketClient {
            socket_path: socket_path.into(),
            capability_token,
            request_timeout: REQUEST_TIMEOUT,
            idle_close: CLIENT_IDLE_CLOSE,
            state: Mutex::new(State::Closed),
        }
    }

    /// The client named by the environment: `LLXPRT_CREDENTIAL_SOCKET`
    /// (`None` when unset or empty) and the capability token found as
    /// [`capability`] describes.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_lookup(&super::process_env)
    }

    /// [`from_env`](Self::from_env) with the variables read through `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Option<Self>> {
        let Some(socket) = socket_from(lookup) else { return Ok(None) };
        Ok(Some(Self::new(socket, capability::from_lookup(lookup)?)))
    }

    /// Sets the per-request timeout (default [`REQUEST_TIMEOUT`]).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the idle close (default [`CLIENT_IDLE_CLOSE`]). Keep it below
    /// the daemon's idle timeout.
    pub fn with_idle_close(mut self, idle: Duration) -> Self {
        self.idle_close = idle;
        self
    }

    /// The daemon's socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                // A request panicked half-way: its connection cannot be trusted.
                let mut g = poisoned.into_inner();
                if let State::Open(c) = &*g {
                    c.shut();
                    *g = State::Dead(CONNECTION_LOST.into());
                }
                g
            }
        }
    }

    /// Connects and handshakes now, unless a usable connection is open;
    /// returns the negotiated protocol version.
    pub fn connect(&self) -> Result<u64> {
        let mut state = self.lock();
        Ok(self.open(&mut state)?.version)
    }

    /// Shuts the connection down gracefully. A later request connects
    /// afresh; a client that failed stays failed.
    pub fn close(&self) {
        let mut state = self.lock();
        if let State::Open(c) = &*state {
            c.shut();
            *state = State::Closed;
        }
    }

    /// The open connection, after an idle close or a first connect if
    /// needed.
    fn open<'s>(&self, state: &'s mut State) -> Result<&'s mut Connection> {
        if let State::Open(c) = state {
            if c.last_used.elapsed() > self.idle_close {
                c.shut();
                *state = State::Closed;
            }
        }
        if let State::Open(c) = state {
            if c.mux.as_ref().is_some_and(|m| m.is_broken()) {
                c.shut();
                *state = State::Dead(CONNECTION_LOST.into());
            }
        }
        if let State::Closed = state {
            match self.handshake() {
                Ok(c) => *state = State::Open(c),
                Err(e) => {
                    *state = State::Dead(e.to_string());
                    return Err(e);
                }
            }
        }
        match state {
            State::Open(c) => Ok(c),
            State::Dead(message) => Err(Error::Connection(message.clone())),
            State::Closed => unreachable!("a connection was just opened"),
        }
    }

    fn handshake(&self) -> Result<Connection> {
        let path = self.socket_path.display();
        let mut stream = UnixStream::connect(&self.socket_path).map_err(|e| {
            // Say what the OS error means for a credential socket, and what to do.
            let advice = match e.kind() {
                io::ErrorKind::ConnectionRefused => {
                    " (a stale socket: no llxprt-credd listens there any more; start one, e.g. \
                     eval \"$(llxprt-credd --profile NAME)\", or unset LLXPRT_CREDENTIAL_SOCKET)"
                }
                io::ErrorKind::NotFound => {
                    " (no socket there: the daemon has stopped or the path is wrong; start one with \
                     llxprt-credd --profile NAME, or unset LLXPRT_CREDENTIAL_SOCKET)"
                }
                io::ErrorKind::PermissionDenied => {
                    " (this user may not use it: run as the daemon's user, or start the daemon with \
                     --allow-uid UID)"
                }
                _ => "",
            };
            Error::Connection(format!("cannot connect to the credential proxy at {path}: {e}{advice}"))
        })?;
        let frame = encode_frame_max(&handshake_frame(self.capability_token.as_ref()), max_frame_len(1))
            .map(Zeroizing::new)
            .expect("a handshake frame is small");
        let deadline = Instant::now() + self.request_timeout;
        let answer = exchange(&mut stream, &frame, deadline, 1).map_err(|e| {
            let _ = stream.shutdown(Shutdown::Both);
            Error::Connection(format!("Credential proxy handshake at {path} failed: {e}"))
        })?;
        let version = handshake_outcome(&answer).inspect_err(|_| {
            let _ = stream.shutdown(Shutdown::Both);
        })?;
        let mux = if version >= 2 {
            let started =
                Mux::start(&stream).map_err(|e| Error::io("cannot start the connection's reader", e));
            Some(started.inspect_err(|_| {
                let _ = stream.shutdown(Shutdown::Both);
            })?)
        } else {
            None
        };
        Ok(Connection { stream, version, last_used: Instant::now(), mux })
    }

    /// Sends `op` with `payload` (a JSON object, or null for none) and
    /// returns the daemon's answer. Error responses are `Ok(Response::Err)`;
    /// `Err` means the request could not be made or the connection failed.
    pub fn request(&self, op: &str, payload: Value) -> Result<Response> {
        let payload = match payload {
            Value::Null => Value::Object(Map::new()),
            Value::Object(p) => Value::Object(p),
            _ => return Err(Error::Usage("a request payload must be a JSON object".into())),
        };
        let id = crate::random::uuid_v4().map_err(|e| Error::io("cannot make a request id", e))?;
        let mut state = self.lock();
        let conn = self.open(&mut state)?;
        if let Some(mux) = conn.mux.clone() {
            conn.last_used = Instant::now();
            drop(state);
            return self.request_v2(&mux, &id, op, payload);
        }
        let body = Zeroizing::new(
            serde_json::to_vec(&json!({"v": conn.version, "id": id, "op": op, "payload": payload}))
                .expect("JSON serialises"),
        );
        let Some(frame) = encode_frame_max(&body, max_frame_len(conn.version)).map(Zeroizing::new) else {
            return Err(Error::Usage(format!("the {op} request is too large to send")));
        };
        let deadline = Instant::now() + self.request_timeout;
        let outcome = exchange(&mut conn.stream, &frame, deadline, conn.version).and_then(|answer| {
            let parsed = parse_frame(&answer).map_err(|_| Failure::Malformed("malformed response frame"))?;
            if parsed.id.as_deref() != Some(id.as_str()) {
                return Err(Failure::Malformed("response for another request id"));
            }
            Ok(parsed.response)
        });
        match outcome {
            Ok(response) => {
                conn.last_used = Instant::now();
                Ok(response)
            }
            Err(failure) => {
                crate::log_debug!("credential proxy connection failed during {op}: {failure}");
                let _ = conn.stream.shutdown(Shutdown::Both);
                *state = State::Dead(CONNECTION_LOST.into());
                Err(Error::Connection(CONNECTION_LOST.into()))
            }
        }
    }
}

impl ProxySocketClient {
    /// A version-2 request: sent at once beside any others, answered when
    /// its own answer comes.
    fn request_v2(&self, mux: &Arc<Mux>, id: &str, op: &str, payload: Value) -> Result<Response> {
        let body = Zeroizing::new(
            serde_json::to_vec(&json!({"v": 2, "id": id, "op": op, "payload": payload}))
                .expect("JSON serialises"),
        );
        let Some(frame) = encode_frame_max(&body, max_frame_len(2)).map(Zeroizing::new) else {
            return Err(Error::Usage(format!("the {op} request is too large to send")));
        };
        match mux.call(id, &frame, self.request_timeout) {
            Ok(frame) => Ok(frame.response),
            Err(CallError::TimedOut) => Err(Error::Connection(format!(
                "Request timed out after {}ms",
                self.request_timeout.as_millis()
            ))),
            Err(CallError::Lost) => {
                crate::log_debug!("credential proxy connection failed during {op}");
                let mut state = self.lock();
                if let State::Open(c) = &*state {
                    if c.mux.as_ref().is_some_and(|m| Arc::ptr_eq(m, mux)) {
                        c.shut();
                        *state = State::Dead(CONNECTION_LOST.into());
                    }
                }
                Err(Error::Connection(CONNECTION_LOST.into()))
            }
        }
    }
}

impl Drop for ProxySocketClient {
    /// Closes the connection (and so ends a version-2 reader thread).
    fn drop(&mut self) {
        if let State::Open(c) = &*self.lock() {
            c.shut();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(
        s: &str,
    ) -> std::result::Result<
        crate::protocol::message::ResponseFrame,
        crate::protocol::message::MalformedResponse,
    > {
        parse_frame(s.as_bytes())
    }

    #[test]
    #[cfg(feature = "host")]
    fn the_client_closes_an_idle_connection_before_the_daemon_does() {
        assert!(CLIENT_IDLE_CLOSE < crate::server::IDLE_TIMEOUT);
    }

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ProxySocketClient>();
    }

    #[test]
    fn response_shape_check() {
        let f = frame(r#"{"v":1,"id":"a","ok":true,"data":{"k":1}}"#).unwrap();
        assert_eq!(f.id.as_deref(), Some("a"));
        assert_eq!(f.response, Response::Ok(serde_json::from_str(r#"{"k":1}"#).unwrap()));
        assert_eq!(frame(r#"{"id":"a","ok":true}"#).unwrap().response, Response::Ok(Map::new()));
        assert_eq!(
            frame(r#"{"id":"a","ok":false,"code":"RATE_LIMITED","error":"slow","retryAfter":1.5}"#)
                .unwrap()
                .response,
            Response::Err { code: "RATE_LIMITED".into(), message: "slow".into(), retry_after: Some(2) }
        );
        assert_eq!(
            frame(r#"{"ok":false}"#).unwrap().response,
            Response::Err { code: "UNKNOWN".into(), message: "proxy error".into(), retry_after: None }
        );
        for bad in [
            "[]",
            "null",
            "{",
            r#"{"id":"a"}"#,
            r#"{"id":"a","ok":"true"}"#,
            r#"{"id":"a","ok":true,"data":null}"#,
            r#"{"id":"a","ok":true,"data":[]}"#,
            r#"{"id":"a","ok":true,"data":"x"}"#,
            r#"{"id":"a","ok":false,"code":5}"#,
            r#"{"id":"a","ok":false,"code":null}"#,
            r#"{"id":"a","ok":false,"error":{}}"#,
            r#"{"id":"a","ok":false,"retryAfter":"1"}"#,
        ] {
            assert_eq!(frame(bad).unwrap_err(), crate::protocol::message::MalformedResponse, "{bad}");
        }
    }

    #[test]
    fn handshake_frame_offers_one_to_two_and_the_token_when_held() {
        let plain: Value = serde_json::from_slice(&handshake_frame(None)).unwrap();
        assert_eq!(plain, json!({"v":2,"op":"handshake","payload":{"minVersion":1,"maxVersion":2}}));
        let token = SecretString::from("ab".repeat(32));
        let with: Value = serde_json::from_slice(&handshake_frame(Some(&token))).unwrap();
        assert_eq!(with["payload"]["capabilityToken"], "ab".repeat(32));
    }

    #[test]
    fn handshake_answers() {
        let outcome = |s: &str| handshake_outcome(s.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(outcome(r#"{"v":1,"op":"handshake","ok":true,"data":{"version":1}}"#), Ok(1));
        assert_eq!(outcome(r#"{"op":"handshake","ok":true,"data":{"version":2}}"#), Ok(2));
        assert_eq!(outcome(r#"{"op":"handshake","ok":true,"data":{}}"#), Ok(1));
        assert_eq!(
            outcome(r#"{"ok":false,"code":"UNAUTHORIZED","error":"Invalid or missing capability token"}"#),
            Err("Credential proxy authentication failed: Invalid or missing capability token".into())
        );
        assert_eq!(
            outcome(r#"{"ok":false,"code":"UNKNOWN_VERSION","error":"Unsupported protocol version"}"#),
            Err("Handshake failed [UNKNOWN_VERSION]: Unsupported protocol version".into())
        );
        assert_eq!(
            outcome(r#"{"ok":true,"data":[]}"#),
            Err("Malformed handshake response from proxy".into())
        );
    }

    #[test]
    fn debug_output_hides_data_and_token() {
        let r = Response::Ok(serde_json::from_str(r#"{"key":"sk-SECRET"}"#).unwrap());
        assert!(!format!("{r:?}").contains("sk-SECRET"));
        let c = ProxySocketClient::new("/x.sock", Some(SecretString::from("f".repeat(64))));
        assert!(!format!("{c:?}").contains("ffff"));
    }

    #[test]
    fn requests_on_a_missing_socket_fail_and_stay_failed() {
        let c = ProxySocketClient::new("/nonexistent/credd-test.sock", None);
        let first = c.request("list_providers", Value::Null).unwrap_err().to_string();
        assert!(
            first.starts_with("cannot connect to the credential proxy at /nonexistent/credd-test.sock: ")
        );
        assert_eq!(c.request("list_providers", Value::Null).unwrap_err().to_string(), first);
        assert!(matches!(c.request("x", json!([1])), Err(Error::Usage(_))));
    }
}
