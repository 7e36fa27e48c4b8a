/*!
The answer envelopes: built by the server, and decoded by the client
library.
*/
#![forbid(unsafe_code)]

use std::fmt;

use serde_json::{Map, Value, json};

use super::codes::ErrorCode;
use super::to_bytes;
use crate::protocol::PROTOCOL_VERSION;

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
