/*!
Messages: the handshake, typed requests with their validation, and the
response envelopes. Validation happens here, before any handler runs, so
a wrong type or a hostile name never reaches a store: it becomes
`INVALID_REQUEST` with a message built from fixed text.
*/
#![forbid(unsafe_code)]

use std::fmt;

use serde_json::{Map, Value, json};

pub use super::names::FlowType;
use super::names::{is_valid_key_name, is_valid_provider_name};
use super::{MAX_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// Wire error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The credential does not exist (or is outside the scope; see the server).
    NotFound,
    /// The request is malformed.
    InvalidRequest,
    /// Too many requests, or a refresh inside its cooldown.
    RateLimited,
    /// Capability token or scope check failed.
    Unauthorized,
    /// The host failed.
    InternalError,
    /// No common protocol version.
    UnknownVersion,
    /// Unknown OAuth session.
    SessionNotFound,
    /// OAuth session too old.
    SessionExpired,
    /// OAuth session used twice.
    SessionAlreadyUsed,
    /// The provider refused the authorization code.
    ExchangeFailed,
    /// No OAuth provider of that name.
    ProviderNotFound,
    /// The refresh token was revoked; log in again.
    ReauthRequired,
    /// The operation is not permitted for the sandbox (SPEC §11.1).
    Forbidden,
    /// A login from the sandbox would replace another account's login.
    AccountMismatch,
    /// Version 2: too many requests in flight on the connection.
    ResourceExhausted,
    /// Version 2: the request was cancelled.
    Cancelled,
    /// Version 1: the answer does not fit in a version-1 frame.
    ResponseTooLarge,
    /// `github`: no such operation.
    UnknownOp,
    /// `github`: a parameter is missing, unknown or invalid.
    InvalidParam,
    /// `github`: GitHub or the host refused (`--github-repo`).
    PermissionDenied,
    /// `github`: `gh` on the host is not logged in.
    HostAuthRequired,
    /// `github`: `gh` is not installed on the host.
    HostGhUnavailable,
    /// `github`: any other failure of `gh` or GitHub.
    GithubError,
}

impl ErrorCode {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::InternalError => "INTERNAL_ERROR",
            ErrorCode::UnknownVersion => "UNKNOWN_VERSION",
            ErrorCode::SessionNotFound => "SESSION_NOT_FOUND",
            ErrorCode::SessionExpired => "SESSION_EXPIRED",
            ErrorCode::SessionAlreadyUsed => "SESSION_ALREADY_USED",
            ErrorCode::ExchangeFailed => "EXCHANGE_FAILED",
            ErrorCode::ProviderNotFound => "PROVIDER_NOT_FOUND",
            ErrorCode::ReauthRequired => "REAUTH_REQUIRED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::AccountMismatch => "ACCOUNT_MISMATCH",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::ResponseTooLarge => "RESPONSE_TOO_LARGE",
            ErrorCode::UnknownOp => "UNKNOWN_OP",
            ErrorCode::InvalidParam => "INVALID_PARAM",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::HostAuthRequired => "HOST_AUTH_REQUIRED",
            ErrorCode::HostGhUnavailable => "HOST_GH_UNAVAILABLE",
            ErrorCode::GithubError => "GITHUB_ERROR",
        }
    }
}

/// Why a login flow ended without a token: the `code` of an `oauth_poll`
/// answer with `status:"error"`, and the kind behind a failed
/// `oauth_exchange`. The fixed text each one shows the sandbox is chosen in
/// `server::wire`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowFailure {
    /// The provider refused the authorization code, or its answer was unusable.
    ExchangeFailed,
    /// The pasted text is not `code#state`.
    BadPaste,
    /// The pasted code's state is not this login's.
    StateMismatch,
    /// The user denied the login.
    AccessDenied,
    /// The device code expired before the login was approved.
    ExpiredToken,
    /// Polling the provider failed.
    PollFailed,
    /// The browser did not come back in time.
    CallbackTimeout,
    /// The provider would not start a login.
    StartFailed,
    /// The account has device-code login turned off.
    DeviceNotEnabled,
    /// Logged in, but the token could not be stored.
    StoreFailed,
    /// The login was cancelled.
    Cancelled,
    /// A sandbox login would replace another account's login.
    AccountMismatch,
}

impl FlowFailure {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowFailure::ExchangeFailed | FlowFailure::BadPaste | FlowFailure::StateMismatch => {
                "EXCHANGE_FAILED"
            }
            FlowFailure::AccessDenied => "ACCESS_DENIED",
            FlowFailure::ExpiredToken => "EXPIRED_TOKEN",
            FlowFailure::PollFailed => "POLL_FAILED",
            FlowFailure::CallbackTimeout => "CALLBACK_TIMEOUT",
            FlowFailure::StartFailed | FlowFailure::DeviceNotEnabled | FlowFailure::StoreFailed => {
                "INTERNAL_ERROR"
            }
            FlowFailure::Cancelled => "CANCELLED",
            FlowFailure::AccountMismatch => "ACCOUNT_MISMATCH",
        }
    }

    /// The fixed text the sandbox is shown (details stay in the host log).
    pub fn text(self) -> &'static str {
        match self {
            FlowFailure::ExchangeFailed => "The provider refused the authorization code",
            FlowFailure::BadPaste => {
                "Paste the whole code#state string the provider showed after you signed in"
            }
            FlowFailure::StateMismatch => {
                "The pasted code does not belong to this login (state mismatch); start a new login"
            }
            FlowFailure::AccessDenied => "The login was denied",
            FlowFailure::ExpiredToken => "The device code expired before the login was approved",
            FlowFailure::PollFailed => "Polling the provider failed",
            FlowFailure::CallbackTimeout => "The browser did not come back in time",
            FlowFailure::StartFailed => "The login could not start on the host",
            FlowFailure::DeviceNotEnabled => "Device code login is not enabled for this account",
            FlowFailure::StoreFailed => "Logged in, but the token could not be stored on the host",
            FlowFailure::Cancelled => "The login was cancelled",
            FlowFailure::AccountMismatch => {
                "This bucket holds another account's login; log in on the host to replace it"
            }
        }
    }
}

/// A parsed handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The capability token the client presented (any non-string is `None`).
    pub capability_token: Option<String>,
    /// The version settled on: `min(2, maxVersion)`.
    pub version: u64,
}

/// Why a frame could not be turned into a request (or handshake).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    /// The request id to echo (`"unknown"` when there was none).
    pub id: String,
    /// The code to send.
    pub code: ErrorCode,
    /// Fixed, safe text.
    pub message: String,
}

fn invalid(id: &str, message: impl Into<String>) -> RequestError {
    RequestError { id: id.to_owned(), code: ErrorCode::InvalidRequest, message: message.into() }
}

/// The handshake a client sends, offering versions `min..=max` (its frame
/// says `max`) and the capability token when it has one; wiped on drop, as
/// it may carry the token.
pub fn encode_handshake(min: u64, max: u64, capability_token: Option<&str>) -> zeroize::Zeroizing<Vec<u8>> {
    let mut payload = json!({"minVersion": min, "maxVersion": max});
    if let Some(t) = capability_token {
        payload["capabilityToken"] = Value::String(t.to_owned());
    }
    let mut frame = json!({"v": max, "op": "handshake", "payload": payload});
    let bytes = zeroize::Zeroizing::new(serde_json::to_vec(&frame).expect("JSON serialises"));
    if let Some(Value::String(s)) = frame.pointer_mut("/payload/capabilityToken") {
        zeroize::Zeroize::zeroize(s);
    }
    bytes
}

/// Parses the first frame of a connection.
pub fn parse_handshake(bytes: &[u8]) -> Result<HandshakeRequest, RequestError> {
    let value = parse_object(bytes, "unknown")?;
    if value.get("op").and_then(Value::as_str) != Some("handshake") {
        return Err(invalid("unknown", "Handshake required before any request"));
    }
    let payload = value.get("payload").and_then(Value::as_object);
    let bound = |name: &str| payload.and_then(|p| p.get(name)).and_then(Value::as_i64);
    let version_error = RequestError {
        id: "unknown".into(),
        code: ErrorCode::UnknownVersion,
        message: "Unsupported protocol version".into(),
    };
    // SPEC §12: both bounds integers, min <= max, the ranges overlap; the
    // answer is min(2, max).
    let version = match (bound("minVersion"), bound("maxVersion")) {
        (Some(min), Some(max))
            if min <= max && min <= MAX_PROTOCOL_VERSION as i64 && max >= PROTOCOL_VERSION as i64 =>
        {
            max.min(MAX_PROTOCOL_VERSION as i64) as u64
        }
        _ => return Err(version_error),
    };
    let capability_token =
        payload.and_then(|p| p.get("capabilityToken")).and_then(Value::as_str).map(str::to_owned);
    Ok(HandshakeRequest { capability_token, version })
}

fn parse_object(bytes: &[u8], id: &str) -> Result<Map<String, Value>, RequestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid(id, "Frame is not valid UTF-8"))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(id, "Frame must be a JSON object")),
        Err(_) => Err(invalid(id, "Frame is not valid JSON")),
    }
}

/// A validated request.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The client's id, echoed in the response.
    pub id: String,
    /// What is asked.
    pub op: Op,
}

/// The operations, with their validated arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `get_token`
    GetToken { provider: String, bucket: Option<String> },
    /// `save_token`
    SaveToken { provider: String, bucket: Option<String>, token: Map<String, Value> },
    /// `remove_token`
    RemoveToken { provider: String, bucket: Option<String> },
    /// `list_providers`
    ListProviders,
    /// `list_buckets`
    ListBuckets { provider: String },
    /// `get_bucket_stats`
    GetBucketStats { provider: String, bucket: Option<String> },
    /// `get_api_key`
    GetApiKey { name: String },
    /// `list_api_keys`
    ListApiKeys,
    /// `has_api_key`
    HasApiKey { name: String },
    /// `refresh_token`
    RefreshToken { provider: String, bucket: Option<String> },
    /// `oauth_initiate` (`flow_type` absent: the provider's default flow)
    OauthInitiate { provider: String, bucket: Option<String>, flow_type: Option<FlowType> },
    /// `oauth_exchange`
    OauthExchange { session_id: String, code: String },
    /// `oauth_poll`
    OauthPoll { session_id: String },
    /// `oauth_cancel`
    OauthCancel { session_id: String },
    /// `cancel`
    Cancel { target_id: String },
    /// `github`: `payload.op` and the other keys of the payload as its
    /// parameters (checked by the broker, not here).
    Github { op: String, params: Map<String, Value> },
}

impl Op {
    /// The wire name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::GetToken { .. } => "get_token",
            Op::SaveToken { .. } => "save_token",
            Op::RemoveToken { .. } => "remove_token",
            Op::ListProviders => "list_providers",
            Op::ListBuckets { .. } => "list_buckets",
            Op::GetBucketStats { .. } => "get_bucket_stats",
            Op::GetApiKey { .. } => "get_api_key",
            Op::ListApiKeys => "list_api_keys",
            Op::HasApiKey { .. } => "has_api_key",
            Op::RefreshToken { .. } => "refresh_token",
            Op::OauthInitiate { .. } => "oauth_initiate",
            Op::OauthExchange { .. } => "oauth_exchange",
            Op::OauthPoll { .. } => "oauth_poll",
            Op::OauthCancel { .. } => "oauth_cancel",
            Op::Cancel { .. } => "cancel",
            Op::Github { .. } => "github",
        }
    }
}

/// What an operation does to the host, for the permission check (SPEC
/// §11.1): a sandbox may only read unless the host permits a class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpClass {
    /// Reads: always permitted.
    Read,
    /// `refresh_token`.
    Refresh,
    /// `oauth_initiate`, `oauth_exchange`, `oauth_poll`, `oauth_cancel`.
    Login,
    /// `save_token`, `remove_token`.
    Write,
    /// The mutating operations of `github`.
    GithubWrite,
}

impl OpClass {
    /// The classes a host can permit, by their `--permit` names.
    pub const PERMITTABLE: [OpClass; 4] =
        [OpClass::Refresh, OpClass::Login, OpClass::Write, OpClass::GithubWrite];

    /// The name `--permit` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            OpClass::Read => "read",
            OpClass::Refresh => "refresh",
            OpClass::Login => "login",
            OpClass::GithubWrite => "github-write",
            OpClass::Write => "write",
        }
    }
}

impl Op {
    /// The permission class of this operation.
    pub fn class(&self) -> OpClass {
        match self {
            Op::RefreshToken { .. } => OpClass::Refresh,
            Op::OauthInitiate { .. }
            | Op::OauthExchange { .. }
            | Op::OauthPoll { .. }
            | Op::OauthCancel { .. } => OpClass::Login,
            Op::SaveToken { .. } | Op::RemoveToken { .. } => OpClass::Write,
            Op::Github { op, .. } if super::github::spec(op).is_some_and(|s| s.mutating) => {
                OpClass::GithubWrite
            }
            Op::Github { .. } => OpClass::Read,
            Op::GetToken { .. }
            | Op::ListProviders
            | Op::ListBuckets { .. }
            | Op::GetBucketStats { .. }
            | Op::GetApiKey { .. }
            | Op::ListApiKeys
            | Op::HasApiKey { .. }
            | Op::Cancel { .. } => OpClass::Read,
        }
    }
}

impl Op {
    /// The request's `payload`, as a client sends it (the inverse of
    /// [`parse_request`]; an absent bucket or flow is left out).
    pub fn payload(&self) -> Map<String, Value> {
        let mut p = Map::new();
        let mut put = |k: &str, v: Value| {
            p.insert(k.to_owned(), v);
        };
        let target = |put: &mut dyn FnMut(&str, Value), provider: &str, bucket: &Option<String>| {
            put("provider", json!(provider));
            if let Some(b) = bucket {
                put("bucket", json!(b));
            }
        };
        match self {
            Op::GetToken { provider, bucket }
            | Op::RemoveToken { provider, bucket }
            | Op::GetBucketStats { provider, bucket }
            | Op::RefreshToken { provider, bucket } => target(&mut put, provider, bucket),
            Op::SaveToken { provider, bucket, token } => {
                target(&mut put, provider, bucket);
                put("token", Value::Object(token.clone()));
            }
            Op::OauthInitiate { provider, bucket, flow_type } => {
                target(&mut put, provider, bucket);
                if let Some(f) = flow_type {
                    put("flow_type", json!(f.as_str()));
                }
            }
            Op::ListBuckets { provider } => put("provider", json!(provider)),
            Op::GetApiKey { name } | Op::HasApiKey { name } => put("name", json!(name)),
            Op::ListProviders | Op::ListApiKeys => {}
            Op::OauthExchange { session_id, code } => {
                put("session_id", json!(session_id));
                put("code", json!(code));
            }
            Op::OauthPoll { session_id } | Op::OauthCancel { session_id } => {
                put("session_id", json!(session_id))
            }
            Op::Cancel { target_id } => put("targetId", json!(target_id)),
            Op::Github { op, params } => {
                put("op", json!(op));
                for (k, v) in params {
                    put(k, v.clone());
                }
            }
        }
        p
    }
}

/// A request frame's body for protocol `version`.
pub fn encode_request(version: u64, req: &Request) -> Vec<u8> {
    to_bytes(
        json!({"v": version, "id": req.id, "op": req.op.name(), "payload": Value::Object(req.op.payload())}),
    )
}

/// Largest token object `save_token` accepts, as JSON text (SPEC §11.2).
pub const MAX_SAVED_TOKEN_BYTES: usize = 16 * 1024;
/// Largest `access_token` `save_token` accepts (SPEC §11.2).
pub const MAX_SAVED_ACCESS_TOKEN_BYTES: usize = 8 * 1024;
/// How far from now a saved `expiry` may lie, either way (SPEC §11.2).
pub const MAX_SAVED_EXPIRY_DISTANCE_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// The checks of SPEC §11.2 on a token a peer asks to save: small, with a
/// string `access_token` and a finite `expiry` near now.
fn check_saved_token(id: &str, token: &Map<String, Value>) -> Result<(), RequestError> {
    let size = serde_json::to_vec(token).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_SAVED_TOKEN_BYTES {
        return Err(invalid(id, "token is too large"));
    }
    match token.get("access_token") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SAVED_ACCESS_TOKEN_BYTES => {}
        Some(Value::String(s)) if !s.is_empty() => return Err(invalid(id, "access_token is too large")),
        _ => return Err(invalid(id, "token.access_token must be a non-empty string")),
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    match token.get("expiry").and_then(Value::as_f64) {
        Some(e) if e.is_finite() && (e - now).abs() <= MAX_SAVED_EXPIRY_DISTANCE_SECONDS => Ok(()),
        _ => Err(invalid(id, "token.expiry must be a time in seconds within 30 days of now")),
    }
}

struct Fields<'a> {
    id: &'a str,
    payload: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn string(&self, name: &str) -> Result<String, RequestError> {
        match self.payload.get(name) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                Err(invalid(self.id, format!("Missing {name}")))
            }
            Some(_) => Err(invalid(self.id, format!("{name} must be a string"))),
        }
    }

    fn provider(&self) -> Result<String, RequestError> {
        let p = self.string("provider")?;
        if !is_valid_provider_name(&p) {
            return Err(invalid(self.id, "Invalid provider name"));
        }
        Ok(p)
    }

    fn bucket(&self) -> Result<Option<String>, RequestError> {
        match self.payload.get("bucket") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(b)) if is_valid_provider_name(b) => Ok(Some(b.clone())),
            Some(Value::String(_)) => Err(invalid(self.id, "Invalid bucket name")),
            Some(_) => Err(invalid(self.id, "bucket must be a string")),
        }
    }

    fn key_name(&self) -> Result<String, RequestError> {
        let n = self.string("name")?;
        if !is_valid_key_name(&n) {
            return Err(invalid(self.id, "Invalid key name"));
        }
        Ok(n)
    }
}

/// Parses a request frame (after the handshake).
pub fn parse_request(bytes: &[u8]) -> Result<Request, RequestError> {
    let map = parse_object(bytes, "unknown")?;
    let id = match map.get("id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(invalid("unknown", "Missing request id or op")),
    };
    let op = match map.get("op") {
        Some(Value::String(s)) if !s.is_empty() => s.as_str(),
        _ => return Err(invalid(&id, "Missing request id or op")),
    };
    let empty = Map::new();
    let payload = match map.get("payload") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(p)) => p,
        Some(_) => return Err(invalid(&id, "payload must be an object")),
    };
    let f = Fields { id: &id, payload };
    let op = match op {
        "get_token" => Op::GetToken { provider: f.provider()?, bucket: f.bucket()? },
        "save_token" => {
            let (provider, bucket) = (f.provider()?, f.bucket()?);
            let token = match payload.get("token") {
                Some(Value::Object(t)) => t.clone(),
                None | Some(Value::Null) => return Err(invalid(&id, "Missing token")),
                Some(_) => return Err(invalid(&id, "token must be an object")),
            };
            check_saved_token(&id, &token)?;
            Op::SaveToken { provider, bucket, token }
        }
        "remove_token" => Op::RemoveToken { provider: f.provider()?, bucket: f.bucket()? },
        "list_providers" => Op::ListProviders,
        "list_buckets" => Op::ListBuckets { provider: f.provider()? },
        "get_bucket_stats" => Op::GetBucketStats { provider: f.provider()?, bucket: f.bucket()? },
        "get_api_key" => Op::GetApiKey { name: f.key_name()? },
        "list_api_keys" => Op::ListApiKeys,
        "has_api_key" => Op::HasApiKey { name: f.key_name()? },
        "refresh_token" => Op::RefreshToken { provider: f.provider()?, bucket: f.bucket()? },
        "oauth_initiate" => {
            let (provider, bucket) = (f.provider()?, f.bucket()?);
            let flow_type = match payload.get("flow_type") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => {
                    Some(FlowType::parse(s).ok_or_else(|| invalid(&id, "Unknown flow_type"))?)
                }
                Some(_) => return Err(invalid(&id, "flow_type must be a string")),
            };
            Op::OauthInitiate { provider, bucket, flow_type }
        }
        "oauth_exchange" => {
            Op::OauthExchange { session_id: f.string("session_id")?, code: f.string("code")? }
        }
        "oauth_poll" => Op::OauthPoll { session_id: f.string("session_id")? },
        "oauth_cancel" => Op::OauthCancel { session_id: f.string("session_id")? },
        "cancel" => Op::Cancel { target_id: f.string("targetId")? },
        "github" => {
            let op = payload.get("op").and_then(Value::as_str).unwrap_or_default().to_owned();
            let params = payload
                .iter()
                .filter(|(k, _)| k.as_str() != "op")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Op::Github { op, params }
        }
        other => {
            let shown: String = other.chars().take(64).filter(|c| !c.is_control()).collect();
            return Err(invalid(&id, format!("Unknown operation: {shown}")));
        }
    };
    Ok(Request { id, op })
}

fn to_bytes(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).expect("a JSON value serialises")
}

/// The successful handshake answer.
pub fn handshake_ok(version: u64) -> Vec<u8> {
    to_bytes(json!({"v": version, "op": "handshake", "ok": true, "data": {"version": version}}))
}

/// An answer built by this module (which says `"v":1`) as sent on a
/// connection of protocol `version`. The keys of the answers are sorted,
/// so `"v"` is always the last one and the rewrite touches only the end.
pub fn for_version(mut answer: Vec<u8>, version: u64) -> Vec<u8> {
    const V1_END: &[u8] = b"\"v\":1}";
    if version == PROTOCOL_VERSION {
        return answer;
    }
    if answer.ends_with(V1_END) && version < 10 {
        let at = answer.len() - 2;
        answer[at] = b'0' + version as u8;
        return answer;
    }
    match serde_json::from_slice::<Value>(&answer) {
        Ok(Value::Object(mut map)) => {
            map.insert("v".into(), json!(version));
            to_bytes(Value::Object(map))
        }
        _ => answer,
    }
}

/// A failed handshake answer.
pub fn handshake_error(code: ErrorCode, message: &str) -> Vec<u8> {
    to_bytes(
        json!({"v": PROTOCOL_VERSION, "op": "handshake", "ok": false, "code": code.as_str(), "error": message}),
    )
}

/// A success response; `data` is always an object.
pub fn ok_response(id: &str, data: Map<String, Value>) -> Vec<u8> {
    to_bytes(json!({"v": PROTOCOL_VERSION, "id": id, "ok": true, "data": Value::Object(data)}))
}

/// An error response (`retry_after` in whole seconds, for `RATE_LIMITED`).
pub fn error_response(id: &str, code: ErrorCode, message: &str, retry_after: Option<u64>) -> Vec<u8> {
    let mut v =
        json!({"v": PROTOCOL_VERSION, "id": id, "ok": false, "code": code.as_str(), "error": message});
    if let Some(secs) = retry_after {
        v["retryAfter"] = json!(secs);
    }
    to_bytes(v)
}

/// The envelope of every answer, decoded (the client library's side of
/// [`ok_response`] and [`error_response`]).
/// A response from the daemon.
#[derive(Clone, PartialEq)]
pub enum Response {
    /// `ok: true`, with its `data` object (empty when the daemon sent none).
    Ok(Map<String, Value>),
    /// `ok: false`.
    Err {
        /// The wire code (`NOT_FOUND`, `UNAUTHORIZED`, ...); `UNKNOWN` when
        /// the daemon sent none.
        code: String,
        /// The daemon's message (`proxy error` when it sent none).
        message: String,
        /// Seconds to wait before retrying (`RATE_LIMITED`).
        retry_after: Option<u64>,
    },
}

impl fmt::Debug for Response {
    /// Data may hold a token or a key: only the field names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Ok(data) => {
                let keys: Vec<&String> = data.keys().collect();
                write!(f, "Ok {{ fields: {keys:?}, values: <redacted> }}")
            }
            Response::Err { code, message, retry_after } => f
                .debug_struct("Err")
                .field("code", code)
                .field("message", message)
                .field("retry_after", retry_after)
                .finish(),
        }
    }
}

/// A frame that breaks the response shape.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedResponse;

/// A decoded response frame: its id (if any) and the response.
#[derive(Debug)]
pub struct ResponseFrame {
    /// The request id it answers, if it names one.
    pub id: Option<String>,
    /// The answer.
    pub response: Response,
}

/// The shape check of llxprt-code's client: a JSON object whose `ok` is a
/// boolean; `code` and `error` strings, `retryAfter` a number and `data` an
/// object whenever they are present.
pub fn decode_response(bytes: &[u8]) -> Result<ResponseFrame, MalformedResponse> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(bytes) else {
        return Err(MalformedResponse);
    };
    let ok = map.get("ok").and_then(Value::as_bool).ok_or(MalformedResponse)?;
    let string = |v: Option<Value>| match v {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(MalformedResponse),
    };
    let code = string(map.remove("code"))?;
    let error = string(map.remove("error"))?;
    let retry_after = match map.remove("retryAfter") {
        None => None,
        Some(Value::Number(n)) => Some(n.as_f64().unwrap_or(0.0).ceil().max(0.0) as u64),
        Some(_) => return Err(MalformedResponse),
    };
    let data = match map.remove("data") {
        None => Map::new(),
        Some(Value::Object(d)) => d,
        Some(_) => return Err(MalformedResponse),
    };
    let id = match map.remove("id") {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let response = if ok {
        Response::Ok(data)
    } else {
        Response::Err {
            code: code.unwrap_or_else(|| "UNKNOWN".into()),
            message: error.unwrap_or_else(|| "proxy error".into()),
            retry_after,
        }
    };
    Ok(ResponseFrame { id, response })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> Result<Request, RequestError> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn the_handshake_a_client_sends_is_what_the_server_reads() {
        let h = parse_handshake(&encode_handshake(1, 2, Some("ab"))).unwrap();
        assert_eq!((h.version, h.capability_token.as_deref()), (2, Some("ab")));
        assert_eq!(
            serde_json::from_slice::<Value>(&encode_handshake(1, 2, None)).unwrap(),
            json!({"v":2,"op":"handshake","payload":{"minVersion":1,"maxVersion":2}})
        );
    }

    #[test]
    fn every_error_envelope_decodes_as_sent() {
        for (bytes, code, text, retry) in [
            (
                error_response("i", ErrorCode::RateLimited, "Too many requests", Some(1)),
                "RATE_LIMITED",
                "Too many requests",
                Some(1),
            ),
            (
                error_response("i", ErrorCode::Cancelled, "Operation cancelled", None),
                "CANCELLED",
                "Operation cancelled",
                None,
            ),
            (error_response("i", ErrorCode::ResponseTooLarge, "x", None), "RESPONSE_TOO_LARGE", "x", None),
        ] {
            let f = decode_response(&bytes).unwrap();
            assert_eq!(f.id.as_deref(), Some("i"));
            assert_eq!(
                f.response,
                Response::Err { code: code.into(), message: text.into(), retry_after: retry }
            );
        }
        let f = decode_response(&ok_response("j", Map::new())).unwrap();
        assert_eq!((f.id.as_deref(), f.response), (Some("j"), Response::Ok(Map::new())));
        assert_eq!(decode_response(br#"{"ok":"yes"}"#).unwrap_err(), MalformedResponse);
    }

    #[test]
    fn every_request_encodes_to_what_the_parser_reads_back() {
        let token: Map<String, Value> = serde_json::from_value(
            json!({"access_token":"at","expiry": (crate::token::now_unix_seconds() + 60.0).floor(),"token_type":"Bearer"}),
        )
        .unwrap();
        let ops = [
            Op::GetToken { provider: "codex".into(), bucket: None },
            Op::SaveToken { provider: "codex".into(), bucket: Some("work".into()), token },
            Op::RemoveToken { provider: "codex".into(), bucket: Some("w".into()) },
            Op::ListProviders,
            Op::ListBuckets { provider: "codex".into() },
            Op::GetBucketStats { provider: "codex".into(), bucket: None },
            Op::GetApiKey { name: "K".into() },
            Op::ListApiKeys,
            Op::HasApiKey { name: "K".into() },
            Op::RefreshToken { provider: "codex".into(), bucket: None },
            Op::OauthInitiate {
                provider: "codex".into(),
                bucket: None,
                flow_type: Some(FlowType::DeviceCode),
            },
            Op::OauthExchange { session_id: "s".into(), code: "c#s".into() },
            Op::OauthPoll { session_id: "s".into() },
            Op::OauthCancel { session_id: "s".into() },
            Op::Cancel { target_id: "t".into() },
            Op::Github {
                op: "issue.view".into(),
                params: serde_json::from_value(json!({"number":7})).unwrap(),
            },
        ];
        for op in ops {
            let req = Request { id: "r1".into(), op };
            let bytes = encode_request(2, &req);
            assert_eq!(parse_request(&bytes).unwrap(), req, "{}", String::from_utf8_lossy(&bytes));
        }
        let fixed = encode_request(
            1,
            &Request { id: "a".into(), op: Op::GetToken { provider: "p".into(), bucket: Some("b".into()) } },
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&fixed).unwrap(),
            json!({"v":1,"id":"a","op":"get_token","payload":{"provider":"p","bucket":"b"}})
        );
    }

    #[test]
    fn handshake_negotiates_the_highest_common_version() {
        let ok = |s: &str| parse_handshake(s.as_bytes());
        let one = ok(r#"{"v":1,"op":"handshake","payload":{"minVersion":1,"maxVersion":1}}"#).unwrap();
        assert_eq!((one.capability_token, one.version), (None, 1));
        let h = ok(
            r#"{"v":2,"op":"handshake","payload":{"minVersion":1,"maxVersion":2,"capabilityToken":"ab"}}"#,
        )
        .unwrap();
        assert_eq!((h.capability_token.as_deref(), h.version), (Some("ab"), 2));
        for (range, version) in [((2, 3), 2), ((1, 9), 2), ((2, 2), 2), ((0, 1), 1)] {
            let text = format!(
                r#"{{"op":"handshake","payload":{{"minVersion":{},"maxVersion":{}}}}}"#,
                range.0, range.1
            );
            assert_eq!(ok(&text).unwrap().version, version, "{range:?}");
        }
        for bad in [
            r#"{"op":"handshake","payload":{"minVersion":3,"maxVersion":4}}"#,
            r#"{"op":"handshake","payload":{"minVersion":0,"maxVersion":0}}"#,
            r#"{"op":"handshake","payload":{"minVersion":1}}"#,
            r#"{"op":"handshake","payload":{"minVersion":"1","maxVersion":1}}"#,
            r#"{"op":"handshake","payload":{"minVersion":1.5,"maxVersion":2}}"#,
            r#"{"op":"handshake","payload":{"minVersion":2,"maxVersion":1}}"#,
            r#"{"op":"handshake"}"#,
        ] {
            assert_eq!(ok(bad).unwrap_err().code, ErrorCode::UnknownVersion, "{bad}");
        }
        assert_eq!(ok(r#"{"v":1,"id":"1","op":"get_token"}"#).unwrap_err().code, ErrorCode::InvalidRequest);
        assert_eq!(ok("[]").unwrap_err().code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn requests_are_typed_and_validated() {
        assert_eq!(
            req(r#"{"v":1,"id":"a","op":"get_token","payload":{"provider":"anthropic"}}"#).unwrap(),
            Request { id: "a".into(), op: Op::GetToken { provider: "anthropic".into(), bucket: None } }
        );
        assert_eq!(req(r#"{"id":"b","op":"list_providers"}"#).unwrap().op, Op::ListProviders);
        assert_eq!(
            req(r#"{"id":"c","op":"oauth_initiate","payload":{"provider":"codex","flow_type":"device_code","redirect_uri":"x"}}"#)
                .unwrap()
                .op,
            Op::OauthInitiate { provider: "codex".into(), bucket: None, flow_type: Some(FlowType::DeviceCode) }
        );
        let cases = [
            ("null", "unknown", "Frame must be a JSON object"),
            ("\"x\"", "unknown", "Frame must be a JSON object"),
            ("[1]", "unknown", "Frame must be a JSON object"),
            ("{", "unknown", "Frame is not valid JSON"),
            (r#"{"op":"get_token"}"#, "unknown", "Missing request id or op"),
            (r#"{"id":"","op":"get_token"}"#, "unknown", "Missing request id or op"),
            (r#"{"id":"i","op":""}"#, "i", "Missing request id or op"),
            (r#"{"id":"i","op":"nope"}"#, "i", "Unknown operation: nope"),
            (r#"{"id":"i","op":"get_token","payload":[]}"#, "i", "payload must be an object"),
            (r#"{"id":"i","op":"get_token","payload":{}}"#, "i", "Missing provider"),
            (r#"{"id":"i","op":"get_token","payload":{"provider":7}}"#, "i", "provider must be a string"),
            (r#"{"id":"i","op":"get_token","payload":{"provider":"../x"}}"#, "i", "Invalid provider name"),
            (
                r#"{"id":"i","op":"get_token","payload":{"provider":"a","bucket":1}}"#,
                "i",
                "bucket must be a string",
            ),
            (r#"{"id":"i","op":"get_api_key","payload":{"name":"a@b"}}"#, "i", "Invalid key name"),
            (
                r#"{"id":"i","op":"save_token","payload":{"provider":"a","token":"t"}}"#,
                "i",
                "token must be an object",
            ),
            (r#"{"id":"i","op":"cancel","payload":{}}"#, "i", "Missing targetId"),
            (
                r#"{"id":"i","op":"oauth_initiate","payload":{"provider":"codex","flow_type":"magic"}}"#,
                "i",
                "Unknown flow_type",
            ),
            (r#"{"id":"i","op":"oauth_exchange","payload":{"session_id":"s"}}"#, "i", "Missing code"),
            (
                r#"{"id":"i","op":"oauth_poll","payload":{"session_id":5}}"#,
                "i",
                "session_id must be a string",
            ),
        ];
        for (input, id, message) in cases {
            let e = req(input).unwrap_err();
            assert_eq!(
                (e.id.as_str(), e.code, e.message.as_str()),
                (id, ErrorCode::InvalidRequest, message),
                "{input}"
            );
        }
        assert_eq!(parse_request(b"\xff\xfe").unwrap_err().message, "Frame is not valid UTF-8");
    }

    #[test]
    fn responses_have_the_envelope_and_object_data() {
        let ok: Value = serde_json::from_slice(&ok_response("x", Map::new())).unwrap();
        assert_eq!(ok, json!({"v":1,"id":"x","ok":true,"data":{}}));
        let e: Value =
            serde_json::from_slice(&error_response("x", ErrorCode::RateLimited, "slow down", Some(1)))
                .unwrap();
        assert_eq!(
            e,
            json!({"v":1,"id":"x","ok":false,"code":"RATE_LIMITED","error":"slow down","retryAfter":1})
        );
        let h: Value = serde_json::from_slice(&handshake_ok(1)).unwrap();
        assert_eq!(h, json!({"v":1,"op":"handshake","ok":true,"data":{"version":1}}));
        let h: Value = serde_json::from_slice(&handshake_ok(2)).unwrap();
        assert_eq!(h, json!({"v":2,"op":"handshake","ok":true,"data":{"version":2}}));
        let two: Value =
            serde_json::from_slice(&for_version(error_response("x", ErrorCode::Cancelled, "c", Some(1)), 2))
                .unwrap();
        assert_eq!(two, json!({"v":2,"id":"x","ok":false,"code":"CANCELLED","error":"c","retryAfter":1}));
        let two: Value = serde_json::from_slice(&for_version(ok_response("y", Map::new()), 2)).unwrap();
        assert_eq!(two, json!({"v":2,"id":"y","ok":true,"data":{}}));
    }
}
