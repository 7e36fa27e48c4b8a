/*!
OAuth login sessions (SPEC §7): what `oauth_initiate` starts and
`oauth_exchange` / `oauth_poll` / `oauth_cancel` act on.

- **Id.** 16 random bytes as 32 lowercase hex. It is a capability: only
  its owner learns it, and the log shows at most its first
  [`SHOWN_ID_CHARS`] characters ([`short_id`]).
- **Owner.** A session is bound to the peer identity that started it
  ([`Owner`]: the peer's uid plus the SHA-256 of the capability token its
  connection presented, if any). Another identity gets `UNAUTHORIZED` and
  cannot use, see the state of, or cancel it. A reconnect of the same
  identity keeps the session (llxprt-code's plan binds to the identity,
  not the connection).
- **Single use.** An exchange marks the session used before it calls the
  provider; a poll that reports the outcome (complete or error) marks it
  used. Afterwards every op answers `SESSION_ALREADY_USED`.
- **Expiry.** After the TTL (10 min, `LLXPRT_OAUTH_SESSION_TIMEOUT_SECONDS`)
  every op answers `SESSION_EXPIRED` and the session's background work is
  stopped. Used and expired sessions stay as tombstones (so a replay gets
  the right code) until twice the TTL, when the GC (every 60 s) drops them.
- **Background work.** A device-code session polls the provider on its own
  thread, honouring the interval and `slow_down`; a browser-redirect
  session runs its loopback listener on its own thread. `oauth_cancel`,
  expiry and shutdown stop it at once: the thread wakes, makes no further
  upstream call and drops the listener; cancel waits (up to
  [`CANCEL_WAIT`]) for that before it answers.
- **Secrets.** Verifiers, state, device codes and authorization codes live
  only in this module's threads and session records
  ([`SecretString`](crate::secret::SecretString));
  the only things a caller gets are the URL to open, the user code and,
  at the end, the token (the server sanitizes it). The full token is
  stored on the host, merged under the refresh lock, before the outcome
  is visible.
- **Bounds.** At most [`MAX_OPEN_SESSIONS`] sessions in progress at once
  (more → `RATE_LIMITED`), at most [`MAX_RECORDS`] records in all.

This file holds the public side: the limits, the answers ([`Initiated`],
[`Poll`]) and [`Logins`], the ops on the table. Starting a login is in
`initiate`, the table, its records and GC in `table`, the cancel state
shared with a background thread in `control`, the device-code poller in
`device`, the browser-redirect listener in `redirect`, storing a finished
login in `store`, the owner identity in `owner` and the errors in `error`.
*/
#![forbid(unsafe_code)]

mod control;
mod device;
mod error;
mod initiate;
mod owner;
mod redirect;
mod store;
mod table;

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub use error::LoginError;
pub use owner::Owner;

use super::Timing;
use super::http::Http;
use super::login::{self, FlowError};
use super::provider::{FlowType, Providers};
use crate::protocol::message::FlowFailure;
use crate::store::TokenStore;
use crate::token::OAuthToken;
use control::{Control, Outcome};
use store::CodeGrant;
use table::{Inner, Phase, Table};

/// Who asked for the logins of a session table, which decides what a
/// completed login may replace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginOrigin {
    /// The sandbox, through the socket: only an empty bucket or the same
    /// account (SPEC §11.3).
    Sandbox,
    /// The user on the host (`llxprt-cred login`): any login, which is how
    /// accounts are switched.
    Host,
}

/// Default session lifetime (SPEC §4).
pub const SESSION_TTL: Duration = Duration::from_secs(600);
/// Environment variable replacing [`SESSION_TTL`] (whole seconds > 0).
pub const SESSION_TTL_ENV: &str = crate::env::OAUTH_SESSION_TIMEOUT_SECONDS;
/// How often expired and used sessions are collected (scaled by the time knob).
pub const SESSION_GC_INTERVAL: Duration = Duration::from_secs(60);
/// Sessions in progress at once; more are refused with `RATE_LIMITED`.
pub const MAX_OPEN_SESSIONS: usize = 16;
/// Session records kept in all (tombstones included).
pub const MAX_RECORDS: usize = 256;
/// Characters of a session id that may appear in a log line.
pub const SHOWN_ID_CHARS: usize = 6;
/// How long `oauth_cancel` waits for the background thread to stop.
pub const CANCEL_WAIT: Duration = Duration::from_secs(1);
/// How long the browser-redirect listener waits for the browser (scaled).
pub const REDIRECT_TIMEOUT: Duration = Duration::from_secs(300);
/// The poll interval suggested to clients of a browser-redirect session
/// (llxprt-code's adapter default; scaled).
pub const BROWSER_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Shortest poll interval suggested to a client.
pub const MIN_CLIENT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Transient poll failures in a row before a device login gives up.
pub const MAX_TRANSIENT_POLL_FAILURES: u32 = 5;
/// Browser-redirect logins in progress at once: each holds a loopback port
/// (the built-in codex range is 31 ports), so a sandbox allowed to log in
/// cannot take them all.
pub const MAX_BROWSER_LOGINS: usize = 4;

/// The session TTL from the environment: whole seconds above 0, else
/// the default (with a warning for a value that is set but unusable).
pub fn session_ttl_from(var: impl Fn(&str) -> Option<String>) -> Duration {
    match var(SESSION_TTL_ENV).filter(|v| !v.trim().is_empty()) {
        None => SESSION_TTL,
        Some(v) => match v.trim().parse::<u64>() {
            Ok(s) if s > 0 => Duration::from_secs(s),
            _ => {
                crate::log_warn!("{SESSION_TTL_ENV}={v:?} is not a number of seconds above 0; using 600");
                SESSION_TTL
            }
        },
    }
}

/// The first characters of a session id, for log lines (hex only, so a
/// hostile id cannot forge a log line).
pub fn short_id(id: &str) -> String {
    id.chars().filter(char::is_ascii_hexdigit).take(SHOWN_ID_CHARS).collect()
}

/// What `oauth_initiate` answers: only what the user must see.
#[derive(Clone, Debug)]
pub struct Initiated {
    /// The session id (the caller's capability for this login).
    pub session_id: String,
    /// The flow.
    pub flow: FlowType,
    /// The URL to open.
    pub auth_url: String,
    /// Device flow: the code the user types.
    pub user_code: Option<String>,
    /// Device flow: the verification page.
    pub verification_uri: Option<String>,
    /// Device flow: the verification page with the code filled in.
    pub verification_uri_complete: Option<String>,
    /// How often to poll (device and browser flows).
    pub poll_interval: Duration,
    /// Time left before the session expires.
    pub expires_in: Duration,
}

impl Initiated {
    /// A login whose user only opens `auth_url` (no code to type).
    fn url_only(
        session_id: String,
        flow: FlowType,
        auth_url: String,
        poll: Duration,
        expires: Duration,
    ) -> Self {
        Initiated {
            session_id,
            flow,
            auth_url,
            user_code: None,
            verification_uri: None,
            verification_uri_complete: None,
            poll_interval: poll,
            expires_in: expires,
        }
    }
}

/// What `oauth_poll` answers.
#[derive(Debug)]
pub enum Poll {
    /// Not finished; poll again after the interval.
    Pending {
        /// Suggested interval.
        interval: Duration,
    },
    /// Logged in; the full token is stored (sanitize before sending).
    Complete(OAuthToken),
    /// The login failed.
    Failed(FlowError),
}

/// The login sessions of one daemon (or of one `llxprt-cred login`).
pub struct Logins {
    inner: Arc<Inner>,
}

impl Logins {
    /// A session table over `tokens` for `providers`, with its GC thread.
    pub fn start(
        tokens: Arc<dyn TokenStore>,
        providers: Providers,
        timing: Timing,
        ttl: Duration,
        origin: LoginOrigin,
    ) -> std::io::Result<Logins> {
        let inner = Arc::new(Inner {
            tokens,
            providers,
            http: Http::new(),
            timing,
            ttl,
            origin,
            table: Mutex::new(Table::default()),
            gc_wake: Condvar::new(),
        });
        let gc = inner.clone();
        std::thread::Builder::new().name("oauth-gc".into()).spawn(move || gc.gc_loop())?;
        Ok(Logins { inner })
    }

    /// The audit target of a session (`provider:bucket session=abc123`),
    /// or just the short id when the session is unknown.
    pub fn target(&self, id: &str) -> String {
        match self.inner.table().sessions.get(id) {
            Some(s) => s.target(id),
            None => format!("session={}", short_id(id)),
        }
    }

    /// The provider and bucket a session logs in to.
    pub fn login_of(&self, id: &str) -> Option<(String, Option<String>)> {
        self.inner.table().sessions.get(id).map(|s| (s.provider.clone(), s.bucket.clone()))
    }

    /// The code-paste exchange: checks the state of the pasted
    /// `code#state`, exchanges the code, stores the token, returns it
    /// (full; sanitize before sending). The session is used up either way.
    pub fn exchange(&self, owner: Owner, id: &str, pasted: &str) -> Result<OAuthToken, LoginError> {
        let inner = &self.inner;
        let (provider, bucket, secrets, tag, control) = {
            let mut table = inner.table();
            let s = inner.lookup(&mut table, &owner, id, "oauth_exchange")?;
            let secrets = s.paste.take();
            s.phase = Phase::Used;
            (s.provider.clone(), s.bucket.clone(), secrets, s.target(id), s.control.clone())
        };
        let secrets = secrets.ok_or(LoginError::AlreadyUsed)?;
        let def = inner.providers.get(&provider).ok_or(LoginError::UnknownProvider)?;
        let exchange_failed = |e: FlowError| {
            crate::log_info!("oauth {tag}: exchange failed: {e}");
            match e.kind {
                FlowFailure::AccountMismatch => LoginError::AccountMismatch,
                FlowFailure::Cancelled => LoginError::Expired,
                _ => LoginError::Flow(e),
            }
        };
        let (code, state) = login::split_pasted_code(pasted).map_err(exchange_failed)?;
        if !login::same_secret(state, secrets.state.expose()) {
            crate::log_warn!("oauth {tag}: the pasted code's state does not match this login");
            return Err(LoginError::Flow(FlowError::new(FlowFailure::StateMismatch, "state mismatch")));
        }
        let token = inner
            .finish_code(
                def,
                bucket.as_deref(),
                CodeGrant {
                    code,
                    verifier: secrets.verifier.expose(),
                    redirect_uri: &secrets.redirect_uri,
                    state: Some(state),
                },
                &control,
            )
            .map_err(exchange_failed)?;
        crate::log_info!("oauth {tag}: logged in, token stored");
        Ok(token)
    }

    /// The state of a device-code or browser-redirect login. Reporting the
    /// outcome (complete or failed) uses the session up.
    pub fn poll(&self, owner: Owner, id: &str) -> Result<Poll, LoginError> {
        let inner = &self.inner;
        let mut table = inner.table();
        let s = inner.lookup(&mut table, &owner, id, "oauth_poll")?;
        let mut c = s.control.lock();
        let outcome = std::mem::replace(&mut c.outcome, Outcome::Reported);
        let poll = match outcome {
            Outcome::Pending { interval } => {
                c.outcome = Outcome::Pending { interval };
                return Ok(Poll::Pending { interval });
            }
            Outcome::Complete(t) => Poll::Complete(t),
            Outcome::Failed(e) => Poll::Failed(e),
            Outcome::Reported => return Err(LoginError::AlreadyUsed),
        };
        drop(c);
        s.close(Phase::Used);
        Ok(poll)
    }

    /// Cancels a login: its background work stops before this returns (or
    /// after [`CANCEL_WAIT`] when an upstream call is in flight; no further
    /// call follows it). Cancelling a used or expired session is a no-op.
    pub fn cancel(&self, owner: Owner, id: &str) -> Result<(), LoginError> {
        let control = {
            let mut table = self.inner.table();
            let s = table.sessions.get_mut(id).ok_or(LoginError::NotFound)?;
            if s.owner != owner {
                crate::log_warn!("oauth {}: oauth_cancel refused, another peer's session", s.target(id));
                return Err(LoginError::WrongPeer);
            }
            if s.phase == Phase::Open {
                crate::log_info!("oauth {}: cancelled", s.target(id));
            }
            s.close(if s.phase == Phase::Open { Phase::Used } else { s.phase });
            s.control.clone()
        };
        control.cancel(CANCEL_WAIT);
        Ok(())
    }

    /// Ends every session in progress whose provider:bucket `keep` refuses
    /// (a SIGHUP narrowed the scope): its background work stops and its
    /// login stores nothing. How many were ended.
    pub fn retain(&self, keep: impl Fn(&str, Option<&str>) -> bool) -> usize {
        let controls: Vec<Arc<Control>> = {
            let mut table = self.inner.table();
            let mut ended = vec![];
            for (id, s) in table.sessions.iter_mut() {
                if s.phase == Phase::Open && !keep(&s.provider, s.bucket.as_deref()) {
                    crate::log_info!("oauth {}: left the scope; login cancelled", s.target(id));
                    s.close(Phase::Expired);
                    ended.push(s.control.clone());
                }
            }
            ended
        };
        for c in &controls {
            c.cancel(CANCEL_WAIT);
        }
        controls.len()
    }

    /// Stops every session's background work and the GC (shutdown).
    pub fn stop(&self) {
        let mut table = self.inner.table();
        table.stopped = true;
        for s in table.sessions.values_mut() {
            if s.phase == Phase::Open {
                s.close(Phase::Expired);
            }
        }
        self.inner.gc_wake.notify_all();
    }
}

impl Drop for Logins {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(tag: &str, control: &Arc<Control>, f: impl FnOnce() + Send + 'static) -> Result<(), LoginError> {
    std::thread::Builder::new().name("oauth-login".into()).spawn(f).map(|_| ()).map_err(|e| {
        control.stopped();
        crate::log_error!("oauth {tag}: cannot start a thread: {e}");
        LoginError::start("no thread for the login")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_knob_and_short_ids() {
        assert_eq!(session_ttl_from(|_| None), SESSION_TTL);
        assert_eq!(session_ttl_from(|_| Some("7".into())), Duration::from_secs(7));
        for bad in ["0", "-3", "x", "1.5"] {
            assert_eq!(session_ttl_from(|_| Some(bad.into())), SESSION_TTL, "{bad}");
        }
        assert_eq!(short_id("0123456789abcdef0123456789abcdef"), "012345");
        assert_eq!(short_id("zz\n<x>ab"), "ab");
    }
}
