/*!
`ProxyOAuthAdapter`: an OAuth login run by the daemon on the host, driven
from the sandbox over the socket (`oauth_initiate`, `oauth_exchange`,
`oauth_poll`, `oauth_cancel`).

Requests are encoded by [`Op::payload`] and answers decoded by
[`Answer::decode`], which reads both spellings the daemon may send
(`session_id`/`sessionId`, `verification_url`/`verification_uri`, the
`token` object or the flat token fields), as llxprt-code's adapter does. A flow that fails
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
use crate::error::{Error, RemoteCode, Result};
#[cfg(feature = "host")]
use crate::oauth::{Initiated, Poll};
use crate::protocol::answer::{Answer, PollState};
use crate::protocol::message::Op;
use crate::protocol::names::FlowType;
use crate::store::names::{check_bucket, check_provider};

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

#[cfg(feature = "host")]
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
    #[cfg(feature = "host")]
    pub fn from_host(poll: Poll) -> Result<LoginPoll> {
        match poll {
            Poll::Pending { interval } => Ok(LoginPoll::Pending(interval)),
            Poll::Complete(token) => Ok(LoginPoll::Complete(token.sanitize().into_map())),
            Poll::Failed(e) => Err(Error::Remote {
                code: RemoteCode::parse(e.kind.as_str()),
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

fn malformed(what: &str) -> Error {
    Error::Connection(format!("Malformed OAuth answer from the credential proxy: {what}"))
}

impl ProxyOAuthAdapter {
    /// An adapter over `client`.
    pub fn new(client: Arc<ProxySocketClient>) -> Self {
        ProxyOAuthAdapter { client }
    }
}

impl ProxyOAuthAdapter {
    /// Sends `op` and decodes its answer.
    fn ask(&self, op: &Op) -> Result<Answer> {
        let data = self.client.request(op.name(), Value::Object(op.payload()))?.into_data()?;
        Answer::decode(op.name(), data).map_err(|m| malformed(m.0))
    }
}

impl LoginDriver for ProxyOAuthAdapter {
    fn initiate(&self, provider: &str, bucket: Option<&str>, flow: Option<FlowType>) -> Result<LoginStart> {
        check_provider(provider)?;
        if let Some(b) = bucket {
            check_bucket(b)?;
        }
        let op = Op::OauthInitiate {
            provider: provider.to_owned(),
            bucket: bucket.map(str::to_owned),
            flow_type: flow,
        };
        match self.ask(&op)? {
            Answer::Initiated(i) => Ok(LoginStart {
                session_id: i.session_id,
                flow: i.flow,
                auth_url: i.auth_url,
                user_code: i.user_code,
                verification_url_complete: i.verification_uri_complete,
                poll_interval: i.poll_interval,
            }),
            _ => Err(malformed("not a started login")),
        }
    }

    fn exchange(&self, session_id: &str, code: &str) -> Result<Map<String, Value>> {
        let op = Op::OauthExchange { session_id: session_id.to_owned(), code: code.to_owned() };
        match self.ask(&op)? {
            Answer::Token(t) => Ok(t),
            _ => Err(malformed("not a token")),
        }
    }

    fn poll(&self, session_id: &str) -> Result<LoginPoll> {
        match self.ask(&Op::OauthPoll { session_id: session_id.to_owned() })? {
            Answer::Polled(PollState::Pending(interval)) => Ok(LoginPoll::Pending(interval)),
            Answer::Polled(PollState::Complete(token)) => Ok(LoginPoll::Complete(token)),
            Answer::Polled(PollState::Failed { code, message }) => Err(Error::Remote {
                code: RemoteCode::parse(&code),
                message: format!("Authentication failed: {message}"),
            }),
            _ => Err(malformed("no known status")),
        }
    }

    fn cancel(&self, session_id: &str) -> Result<()> {
        self.ask(&Op::OauthCancel { session_id: session_id.to_owned() }).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_poll_yields_the_token_object_or_the_flat_fields() {
        let token = |v: Value| match Answer::decode("oauth_poll", v.as_object().unwrap().clone()) {
            Ok(Answer::Polled(PollState::Complete(t))) => Value::Object(t),
            other => panic!("{other:?}"),
        };
        let both = serde_json::json!({"status":"complete","access_token":"a","token":{"access_token":"a","expiry":1}});
        assert_eq!(token(both), serde_json::json!({"access_token":"a","expiry":1}));
        let flat = serde_json::json!({"status":"complete","access_token":"a"});
        assert_eq!(token(flat), serde_json::json!({"access_token":"a"}));
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
