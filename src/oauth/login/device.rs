/*!
Device authorization: RFC 8628, and OpenAI's variant that answers an
authorization code and a server-generated verifier; starting one and
polling it.
*/
#![forbid(unsafe_code)]

use std::time::Duration;

use serde_json::{Map, Value};

use super::pkce::query_escape;
use super::{FlowError, upstream};
use crate::oauth::http::{Http, UpstreamError, classify, safe_error_code};
use crate::oauth::provider::{Device, DeviceStyle, Encoding, Provider};
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

#[cfg(test)]
mod tests {
    use super::*;

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
