/*!
`ProxyOAuthAdapter`: an OAuth login run by the daemon on the host, driven
from the sandbox over the socket (`oauth_initiate`, `oauth_exchange`,
`oauth_poll`, `oauth_cancel`).

It reads both spellings the daemon sends (`session_id`/`sessionId`,
`verification_url`/`verification_uri`, the `token` object or the flat
token fields), as llxprt-code's adapter does. A flow that fails
(`status:"error"`) becomes [`Error::Remote`] with the flow's code and
"Authentication failed: ...". What the caller gets is only what the user
must see (the URL, the user code) and, at the end, the sanitized token.
*/
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::socket::ProxySocketClient;
use crate::error::{Error, Result};
use crate::oauth::{FlowType, Initiated, Poll};
use crate::store::names::{check_bucket, check_provider};

/// Poll interval when the daemon suggests none: llxprt-code's adapter
/// defaults (device 5 s, browser 2 s).
fn default_interval(flow: FlowType) -> Duration {
    match flow {
        FlowType::BrowserRedirect => Duration::from_secs(2),
        _ => Duration::from_secs(5),
    }
}

/// A login that has started: what to show the user.
#[derive(Clone)]
pub struct LoginStart {
    /// The session id (pass it back; do not show or log it).
    pub session_id: String,
    /// The flow the daemon chose.
    pub flow: FlowType,
    /// The URL the user opens.
    pub auth_url: String,
    /// Device flow: the code the user types.
    pub user_code: Option<String>,
    /// Device flow: the page with the code filled in, when the provider has one.
    pub verification_url_complete: Option<String>,
    /// How often to poll.
    pub poll_interval: Duration,
}

impl fmt::Debug for LoginStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginStart")
            .field("session_id", &"<redacted>")
            .field("flow", &self.flow)
            .field("user_code", &self.user_code)
            .finish_non_exhaustive()
    }
}

impl From<&Initiated> for LoginStart {
    fn from(i: &Initiated) -> Self {
        LoginStart {
            session_id: i.session_id.clone(),
            flow: i.flow,
            auth_url: i.auth_url.clone(),
            user_code: i.user_code.clone(),
            verification_url_complete: i.verification_uri_complete.clone(),
            poll_interval: i.poll_interval,
        }
    }
}

/// A poll's answer.
#[derive(Debug)]
pub enum LoginPoll {
    /// Not yet; poll again after this.
    Pending(Duration),
    /// Logged in: the sanitized token's fields.
    Complete(Map<String, Value>),
}

impl LoginPoll {
    /// The host-side session table's answer in the same terms (a failed
    /// flow is an error, as over the socket).
    pub fn from_host(poll: Poll) -> Result<LoginPoll> {
        match poll {
            Poll::Pending { interval } => Ok(LoginPoll::Pending(interval)),
            Poll::Complete(token) => Ok(LoginPoll::Complete(token.sanitize().into_map())),
            Poll::Failed(e) => Err(Error::Remote {
                code: e.kind.as_str().to_owned(),
                message: format!("Authentication failed: {} ({})", e.kind.text(), e.detail),
            }),
        }
    }
}

/// The four login operations, over the socket or on the host.
pub trait LoginDriver {
    /// Starts a login (`flow`: the provider's default when `None`).
    fn initiate(&self, provider: &str, bucket: Option<&str>, flow: Option<FlowType>) -> Result<LoginStart>;
    /// Code-paste: exchanges the pasted `code#state`; the sanitized token.
    fn exchange(&self, session_id: &str, code: &str) -> Result<Map<String, Value>>;
    /// Device and browser flows: the state of the login.
    fn poll(&self, session_id: &str) -> Result<LoginPoll>;
    /// Abandons a login.
    fn cancel(&self, session_id: &str) -> Result<()>;

    /// Polls until the login completes, fails, or `keep_waiting` (called
    /// before each wait with the time spent) says stop, which cancels it.
    fn wait(
        &self,
        start: &LoginStart,
        keep_waiting: &mut dyn FnMut(Duration) -> bool,
    ) -> Result<Map<String, Value>> {
        let started = Instant::now();
        let mut interval = start.poll_interval;
        loop {
            if !keep_waiting(started.elapsed()) {
                let _ = self.cancel(&start.session_id);
                return Err(Error::Usage("the login was abandoned".into()));
            }
            std::thread::sleep(interval);
            match self.poll(&start.session_id)? {
                LoginPoll::Pending(next) => interval = next,
                LoginPoll::Complete(token) => return Ok(token),
            }
        }
    }
}

/// Logins through the daemon: the sandbox side of `oauth_*`.
#[derive(Clone, Debug)]
pub struct ProxyOAuthAdapter {
    client: Arc<ProxySocketClient>,
}

fn text(data: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| data.get(*n).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn malformed(what: &str) -> Error {
    Error::Connection(format!("Malformed OAuth answer from the credential proxy: {what}"))
}

/// The token of a `complete` poll: the `token` object, else the flat fields.
fn token_of(mut data: Map<String, Value>) -> Map<String, Value> {
    match data.remove("token") {
        Some(Value::Object(t)) => t,
        _ => {
            data.remove("status");
            data
        }
    }
}

impl ProxyOAuthAdapter {
    /// An adapter over `client`.
    pub fn new(client: Arc<ProxySocketClient>) -> Self {
        ProxyOAuthAdapter { client }
    }
}

impl LoginDriver for ProxyOAuthAdapter {
    fn initiate(&self, provider: &str, bucket: Option<&str>, flow: Option<FlowType>) -> Result<LoginStart> {
        check_provider(provider)?;
        let mut payload = Map::new();
        payload.insert("provider".into(), provider.into());
        if let Some(b) = bucket {
            check_bucket(b)?;
            payload.insert("bucket".into(), b.into());
        }
        if let Some(f) = flow {
            payload.insert("flow_type".into(), f.as_str().into());
        }
        let data = self.client.request("oauth_initiate", Value::Object(payload))?.into_data()?;
        let session_id =
            text(&data, &["session_id", "sessionId"]).ok_or_else(|| malformed("no session_id"))?;
        let flow = text(&data, &["flow_type", "mode"])
            .and_then(|f| FlowType::parse(&f))
            .ok_or_else(|| malformed("no known flow_type"))?;
        let auth_url = text(&data, &["auth_url", "verification_url", "verification_uri"])
            .ok_or_else(|| malformed("no URL to open"))?;
        let poll_interval = data
            .get("pollIntervalMs")
            .and_then(Value::as_u64)
            .map(Duration::from_millis)
            .unwrap_or_else(|| default_interval(flow));
        Ok(LoginStart {
            session_id,
            flow,
            auth_url,
            user_code: text(&data, &["user_code"]),
            verification_url_complete: text(&data, &["verification_uri_complete"]),
            poll_interval,
        })
    }

    fn exchange(&self, session_id: &str, code: &str) -> Result<Map<String, Value>> {
        let payload = serde_json::json!({ "session_id": session_id, "code": code });
        self.client.request("oauth_exchange", payload)?.into_data()
    }

    fn poll(&self, session_id: &str) -> Result<LoginPoll> {
        let data = self
            .client
            .request("oauth_poll", serde_json::json!({ "session_id": session_id }))?
            .into_data()?;
        match data.get("status").and_then(Value::as_str) {
            Some("pending") => {
                let ms = data.get("pollIntervalMs").and_then(Value::as_u64);
                let secs = data.get("interval").and_then(Value::as_u64).map(|s| s * 1000);
                Ok(LoginPoll::Pending(Duration::from_millis(ms.or(secs).unwrap_or(2000))))
            }
            Some("complete") => Ok(LoginPoll::Complete(token_of(data))),
            Some("error") => Err(Error::Remote {
                code: text(&data, &["code"]).unwrap_or_else(|| "UNKNOWN".into()),
                message: format!("Authentication failed: {}", text(&data, &["error"]).unwrap_or_default()),
            }),
            _ => Err(malformed("no known status")),
        }
    }

    fn cancel(&self, session_id: &str) -> Result<()> {
        self.client
            .request("oauth_cancel", serde_json::json!({ "session_id": session_id }))?
            .into_data()
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_poll_yields_the_token_object_or_the_flat_fields() {
        let both = serde_json::json!({"status":"complete","access_token":"a","token":{"access_token":"a","expiry":1}});
        assert_eq!(
            Value::Object(token_of(both.as_object().unwrap().clone())),
            serde_json::json!({"access_token":"a","expiry":1})
        );
        let flat = serde_json::json!({"status":"complete","access_token":"a"});
        assert_eq!(
            Value::Object(token_of(flat.as_object().unwrap().clone())),
            serde_json::json!({"access_token":"a"})
        );
        let start = LoginStart {
            session_id: "0123456789abcdef".into(),
            flow: FlowType::DeviceCode,
            auth_url: "u".into(),
            user_code: None,
            verification_url_complete: None,
            poll_interval: Duration::ZERO,
        };
        assert!(!format!("{start:?}").contains("0123456789abcdef"));
    }
}
