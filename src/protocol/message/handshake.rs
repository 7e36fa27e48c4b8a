/*!
The handshake: the first frame a client sends, offering a range of
protocol versions and its capability token, and the version settled on.
*/
#![forbid(unsafe_code)]

use serde_json::{Value, json};

use super::codes::ErrorCode;
use super::parse::{RequestError, invalid, parse_object};
use crate::protocol::{MAX_PROTOCOL_VERSION, PROTOCOL_VERSION};

/// A parsed handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeRequest {
    /// The capability token the client presented (any non-string is `None`).
    pub capability_token: Option<String>,
    /// The version settled on: `min(2, maxVersion)`.
    pub version: u64,
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
