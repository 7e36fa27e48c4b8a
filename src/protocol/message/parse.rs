/*!
Request frames parsed into typed requests, with every check on their
fields (names, ids, the token a peer asks to save) made before any handler
runs.
*/
#![forbid(unsafe_code)]

use serde_json::{Map, Value};

use super::FlowType;
use super::codes::ErrorCode;
use super::op::{Op, Request};
use crate::protocol::names::{is_valid_key_name, is_valid_provider_name};

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

pub(super) fn invalid(id: &str, message: impl Into<String>) -> RequestError {
    RequestError { id: id.to_owned(), code: ErrorCode::InvalidRequest, message: message.into() }
}

pub(super) fn parse_object(bytes: &[u8], id: &str) -> Result<Map<String, Value>, RequestError> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid(id, "Frame is not valid UTF-8"))?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(id, "Frame must be a JSON object")),
        Err(_) => Err(invalid(id, "Frame is not valid JSON")),
    }
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
