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
  only in this module's threads and session records ([`SecretString`]);
  the only things a caller gets are the URL to open, the user code and,
  at the end, the token (the server sanitizes it). The full token is
  stored on the host, merged under the refresh lock, before the outcome
  is visible.
- **Bounds.** At most [`MAX_OPEN_SESSIONS`] sessions in progress at once
  (more → `RATE_LIMITED`), at most [`MAX_RECORDS`] records in all.
*/
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::Timing;
use super::http::Http;
use super::login::{
    self, Callback, CallbackConn, CallbackRead, DevicePoll, DeviceStart, FlowError, Pkce, RedirectListener,
};
use super::provider::{FlowType, Provider, Providers};
use crate::protocol::message::FlowFailure;
use crate::secret::SecretString;
use crate::store::{Change, TokenStore};
use crate::token::OAuthToken;

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

/// What an authorization code is exchanged with.
struct CodeGrant<'a> {
    code: &'a str,
    verifier: &'a str,
    redirect_uri: &'a str,
    state: Option<&'a str>,
}

/// Default session lifetime (SPEC §4).
pub const SESSION_TTL: Duration = Duration::from_secs(600);
/// Environment variable replacing [`SESSION_TTL`] (whole seconds > 0).
pub const SESSION_TTL_ENV: &str = "LLXPRT_OAUTH_SESSION_TIMEOUT_SECONDS";
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
/// How often the loopback listener checks for cancellation and reads the
/// browser connections it holds.
const LISTENER_NAP: Duration = Duration::from_millis(20);
/// Browser-redirect logins in progress at once: each holds a loopback port
/// (the built-in codex range is 31 ports), so a sandbox allowed to log in
/// cannot take them all.
pub const MAX_BROWSER_LOGINS: usize = 4;
/// Connections one redirect listener reads at once; a new one beyond this
/// drops the oldest.
const MAX_CALLBACK_CONNECTIONS: usize = 16;
/// A browser connection must send its whole request within this.
const CALLBACK_DEADLINE: Duration = Duration::from_secs(5);

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

/// The peer identity a session is bound to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    uid: u32,
    principal: Option<[u8; 32]>,
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Owner {{ uid: {}, capability: {} }}", self.uid, self.principal.is_some())
    }
}

impl Owner {
    /// A peer of `uid` whose handshake presented `capability` (when the
    /// daemon requires one). Only a digest of the token is kept.
    pub fn new(uid: u32, capability: Option<&str>) -> Owner {
        Owner { uid, principal: capability.map(|t| Sha256::digest(t.as_bytes()).into()) }
    }

    /// The current process (logins run by `llxprt-cred` on the host).
    pub fn local() -> Owner {
        Owner::new(crate::sys::current_uid().0, None)
    }
}

/// Why a session op failed. Each maps to one wire code; the texts are fixed.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum LoginError {
    /// No provider of that name offers a login (`PROVIDER_NOT_FOUND`).
    UnknownProvider,
    /// The provider does not offer that flow (`INVALID_REQUEST`).
    FlowNotOffered(FlowType),
    /// No such session (`SESSION_NOT_FOUND`).
    NotFound,
    /// The session belongs to another peer identity (`UNAUTHORIZED`).
    WrongPeer,
    /// The session was used (`SESSION_ALREADY_USED`).
    AlreadyUsed,
    /// The session expired (`SESSION_EXPIRED`).
    Expired,
    /// The op does not fit the session's flow (`INVALID_REQUEST`).
    WrongOp {
        /// The op used.
        op: &'static str,
        /// The session's flow.
        flow: FlowType,
        /// The op to use.
        use_op: &'static str,
    },
    /// Too many logins in progress (`RATE_LIMITED`).
    TooMany,
    /// Too many browser-redirect logins in progress (`RATE_LIMITED`).
    TooManyBrowser,
    /// The login could not start, the exchange failed or the token could
    /// not be stored: the kind decides the code and the fixed text, the
    /// details stay on the host.
    Flow(FlowError),
    /// A login from the sandbox would replace another account's login
    /// (`ACCOUNT_MISMATCH`); nothing was stored.
    AccountMismatch,
}

impl LoginError {
    /// A login that could not start on the host, for `detail`.
    pub fn start(detail: impl Into<String>) -> LoginError {
        LoginError::Flow(FlowError::new(FlowFailure::StartFailed, detail))
    }
}

impl std::fmt::Display for LoginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginError::UnknownProvider => f.write_str("No OAuth login is configured for this provider"),
            LoginError::FlowNotOffered(flow) => {
                write!(f, "This provider does not offer the {} login flow", flow.as_str())
            }
            LoginError::NotFound => f.write_str("Unknown OAuth session"),
            LoginError::WrongPeer => f.write_str("This OAuth session belongs to another peer"),
            LoginError::AlreadyUsed => f.write_str("OAuth session already used"),
            LoginError::Expired => f.write_str("OAuth session expired; start a new login"),
            LoginError::WrongOp { op, flow, use_op } => write!(
                f,
                "Operation {op} is not valid for flow type {}. Use {use_op} instead.",
                flow.as_str()
            ),
            LoginError::TooMany => f.write_str("Too many OAuth logins in progress; try again later"),
            LoginError::TooManyBrowser => {
                f.write_str("Too many browser logins in progress; finish or cancel one, or use another flow")
            }
            LoginError::Flow(e) => write!(f, "{} ({})", e.kind.text(), e.detail),
            LoginError::AccountMismatch => {
                f.write_str("This bucket holds another account's login; log in on the host to replace it")
            }
        }
    }
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

/// The state a background flow shares with the session table.
enum Outcome {
    Pending { interval: Duration },
    Complete(OAuthToken),
    Failed(FlowError),
    Reported,
}

struct ControlState {
    cancelled: bool,
    running: bool,
    outcome: Outcome,
}

/// The handle between a session and its background thread.
struct Control {
    state: Mutex<ControlState>,
    changed: Condvar,
    /// A browser-redirect login's listener: closed by whoever ends the
    /// session (cancel, expiry, shutdown) at once, not when the thread
    /// next looks.
    listener: Mutex<Option<RedirectListener>>,
}

impl Control {
    fn new(interval: Duration, running: bool) -> Arc<Control> {
        Arc::new(Control {
            state: Mutex::new(ControlState {
                cancelled: false,
                running,
                outcome: Outcome::Pending { interval },
            }),
            changed: Condvar::new(),
            listener: Mutex::new(None),
        })
    }

    fn listener(&self) -> MutexGuard<'_, Option<RedirectListener>> {
        self.listener.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the redirect listener, if there is one.
    fn close_listener(&self) {
        drop(self.listener().take());
    }

    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Sleeps up to `d`; whether the session was cancelled meanwhile.
    fn nap(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut s = self.lock();
        while !s.cancelled {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }

    /// Sets the outcome unless cancelled; whether it was set.
    fn finish(&self, outcome: Outcome) -> bool {
        let mut s = self.lock();
        if s.cancelled {
            return false;
        }
        s.outcome = outcome;
        self.changed.notify_all();
        true
    }

    fn set_interval(&self, interval: Duration) {
        let mut s = self.lock();
        if let Outcome::Pending { .. } = s.outcome {
            s.outcome = Outcome::Pending { interval };
        }
    }

    fn stopped(&self) {
        let mut s = self.lock();
        s.running = false;
        self.changed.notify_all();
    }

    /// Cancels and waits up to `wait` for the thread to stop.
    fn cancel(&self, wait: Duration) {
        self.close_listener();
        let deadline = Instant::now() + wait;
        let mut s = self.lock();
        s.cancelled = true;
        self.changed.notify_all();
        while s.running {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

/// The code-paste session's secrets.
struct PasteSecrets {
    verifier: SecretString,
    state: SecretString,
    redirect_uri: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Open,
    Used,
    Expired,
}

struct Session {
    provider: String,
    bucket: Option<String>,
    flow: FlowType,
    owner: Owner,
    created: Instant,
    phase: Phase,
    control: Arc<Control>,
    paste: Option<PasteSecrets>,
}

impl Session {
    fn target(&self, id: &str) -> String {
        format!(
            "{}:{} session={}",
            self.provider,
            self.bucket.as_deref().unwrap_or(crate::store::names::DEFAULT_BUCKET),
            short_id(id)
        )
    }

    /// Ends the session's life: stops its thread (without waiting) and
    /// drops its secrets.
    fn close(&mut self, phase: Phase) {
        self.phase = phase;
        self.paste = None;
        self.control.close_listener();
        let mut s = self.control.lock();
        s.cancelled = true;
        self.control.changed.notify_all();
    }
}

#[derive(Default)]
struct Table {
    sessions: HashMap<String, Session>,
    stopped: bool,
    /// Logins between their slot check and their session record (the
    /// provider call in between may take seconds): counted against the
    /// caps, so concurrent starts cannot all pass.
    reserved: usize,
    reserved_browser: usize,
}

/// A slot in the caps, taken before a login starts; given back on drop
/// unless the session was recorded ([`Reservation::recorded`]).
struct Reservation<'a> {
    inner: &'a Inner,
    browser: bool,
    held: bool,
}

impl Reservation<'_> {
    /// The session is in the table now (under the same lock): the slot is
    /// the session's.
    fn recorded(&mut self, table: &mut Table) {
        table.reserved -= 1;
        if self.browser {
            table.reserved_browser -= 1;
        }
        self.held = false;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.held {
            let mut table = self.inner.table();
            table.reserved -= 1;
            if self.browser {
                table.reserved_browser -= 1;
            }
        }
    }
}

struct Inner {
    tokens: Arc<dyn TokenStore>,
    providers: Providers,
    http: Http,
    timing: Timing,
    ttl: Duration,
    origin: LoginOrigin,
    table: Mutex<Table>,
    gc_wake: Condvar,
}

/// The login sessions of one daemon (or of one `llxprt-cred login`).
pub struct Logins {
    inner: Arc<Inner>,
}

impl Inner {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn client_interval(&self, upstream: Duration) -> Duration {
        self.timing.scaled(upstream).max(MIN_CLIENT_POLL_INTERVAL)
    }

    /// Marks sessions past the TTL expired (stopping their threads) and
    /// drops records past twice the TTL.
    fn collect(&self, table: &mut Table) {
        let now = Instant::now();
        table.sessions.retain(|id, s| {
            let age = now.duration_since(s.created);
            if age >= self.ttl && s.phase == Phase::Open {
                crate::log_info!("oauth {}: expired", s.target(id));
                s.close(Phase::Expired);
            }
            age < self.ttl * 2
        });
    }

    fn gc_loop(&self) {
        let every = self.timing.scaled(SESSION_GC_INTERVAL).max(Duration::from_millis(10));
        let mut table = self.table();
        while !table.stopped {
            table = self.gc_wake.wait_timeout(table, every).unwrap_or_else(|e| e.into_inner()).0;
            if table.stopped {
                break;
            }
            self.collect(&mut table);
        }
    }

    /// Looks a session up for `op` by `owner`, in the order: unknown,
    /// another peer's, wrong op for the flow, used, expired.
    fn lookup<'a>(
        &self,
        table: &'a mut Table,
        owner: &Owner,
        id: &str,
        op: &'static str,
    ) -> Result<&'a mut Session, LoginError> {
        let ttl = self.ttl;
        let s = table.sessions.get_mut(id).ok_or(LoginError::NotFound)?;
        if s.owner != *owner {
            crate::log_warn!("oauth {}: {op} refused, another peer's session", s.target(id));
            return Err(LoginError::WrongPeer);
        }
        let use_op = match (op, s.flow) {
            ("oauth_exchange", FlowType::DeviceCode | FlowType::BrowserRedirect) => Some("oauth_poll"),
            ("oauth_poll", FlowType::PkceRedirect) => Some("oauth_exchange"),
            _ => None,
        };
        if let Some(use_op) = use_op {
            return Err(LoginError::WrongOp { op, flow: s.flow, use_op });
        }
        match s.phase {
            Phase::Used => return Err(LoginError::AlreadyUsed),
            Phase::Expired => return Err(LoginError::Expired),
            Phase::Open => {}
        }
        if s.created.elapsed() >= ttl {
            crate::log_info!("oauth {}: expired", s.target(id));
            s.close(Phase::Expired);
            return Err(LoginError::Expired);
        }
        Ok(s)
    }

    /// Stores a new login's token under the refresh lock. A login replaces
    /// the stored record (a new login is not merged into the old one). A
    /// login from the sandbox ([`LoginOrigin::Sandbox`]) is stored only
    /// into an empty bucket or over a login of the same account (SPEC
    /// §11.3); otherwise `ACCOUNT_MISMATCH` and nothing is stored. A
    /// session cancelled meanwhile (by `oauth_cancel`, expiry, shutdown or a
    /// narrowed scope) stores nothing.
    fn store(
        &self,
        provider: &str,
        bucket: Option<&str>,
        token: &OAuthToken,
        control: &Control,
    ) -> Result<OAuthToken, FlowError> {
        let target = format!("{provider}:{}", bucket.unwrap_or(crate::store::names::DEFAULT_BUCKET));
        let failed = |e: crate::error::Error| {
            crate::log_error!("oauth {target}: cannot store the new token: {e}");
            FlowError::new(FlowFailure::StoreFailed, "the store failed (logged above)")
        };
        let wait = crate::store::LockWait::up_to(self.timing.lock_wait);
        let stored = crate::store::update_token(self.tokens.as_ref(), provider, bucket, &wait, |stored| {
            if control.cancelled() {
                crate::log_info!("oauth {target}: the login was cancelled; nothing stored");
                let e = FlowError::new(FlowFailure::Cancelled, "cancelled before the token was stored");
                return (Change::Keep, Err(e));
            }
            let other_account = match self.origin {
                LoginOrigin::Sandbox => match stored.get() {
                    Ok(stored) => stored.is_some_and(|stored| !OAuthToken::same_account(&stored, token)),
                    Err(e) => return (Change::Keep, Err(failed(e))),
                },
                _ => false,
            };
            if other_account {
                crate::log_warn!(
                    "oauth {target}: a login from the sandbox would replace another account's login; \
                     nothing stored (switch accounts on the host: llxprt-cred login)"
                );
                let e = FlowError::new(FlowFailure::AccountMismatch, "the bucket holds another account");
                return (Change::Keep, Err(e));
            }
            (Change::Save(token.clone()), Ok(()))
        });
        match stored {
            Ok(Ok(())) => Ok(token.clone()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(failed(e.into_error())),
        }
    }

    /// Exchanges a code and stores the token; the flow outcome.
    fn finish_code(
        &self,
        provider: &Provider,
        bucket: Option<&str>,
        grant: CodeGrant<'_>,
        control: &Control,
    ) -> Result<OAuthToken, FlowError> {
        let token = login::exchange_code(
            &self.http,
            provider,
            grant.code,
            grant.verifier,
            grant.redirect_uri,
            grant.state,
            self.timing.http_timeout,
        )?;
        self.store(&provider.name, bucket, &token, control)
    }

    /// The device-code thread: polls until an outcome, expiry or cancel.
    fn run_device(
        &self,
        provider: Provider,
        bucket: Option<String>,
        start: DeviceStart,
        control: Arc<Control>,
        tag: String,
    ) {
        let Some(device) = provider.login.device.clone() else { return };
        let deadline = Instant::now() + start.expires_in.min(self.ttl);
        let mut interval = start.interval;
        let mut failures = 0u32;
        let outcome = loop {
            if control.nap(self.timing.scaled(interval)) {
                break None;
            }
            if Instant::now() >= deadline {
                break Some(Outcome::Failed(FlowError::new(
                    FlowFailure::ExpiredToken,
                    "the session's deadline passed while polling",
                )));
            }
            match login::device_poll(&self.http, &provider, &device, &start, self.timing.http_timeout) {
                DevicePoll::Pending => failures = 0,
                DevicePoll::SlowDown => {
                    interval += login::SLOW_DOWN_STEP;
                    control.set_interval(self.client_interval(interval));
                    crate::log_debug!("oauth {tag}: slow_down, polling every {} s now", interval.as_secs());
                }
                DevicePoll::Denied => {
                    break Some(Outcome::Failed(FlowError::new(
                        FlowFailure::AccessDenied,
                        "the provider answered access_denied",
                    )));
                }
                DevicePoll::Expired => {
                    break Some(Outcome::Failed(FlowError::new(
                        FlowFailure::ExpiredToken,
                        "the provider answered expired_token",
                    )));
                }
                DevicePoll::Transient(e) => {
                    failures += 1;
                    crate::log_info!("oauth {tag}: poll failed ({e}), {failures} in a row");
                    if failures >= MAX_TRANSIENT_POLL_FAILURES {
                        break Some(Outcome::Failed(FlowError::new(
                            FlowFailure::PollFailed,
                            format!("{failures} polls in a row failed, the last: {e}"),
                        )));
                    }
                }
                DevicePoll::Failed(e) => break Some(Outcome::Failed(e)),
                DevicePoll::Token(token) => {
                    if control.cancelled() {
                        break None;
                    }
                    break Some(match self.store(&provider.name, bucket.as_deref(), &token, &control) {
                        Ok(t) => Outcome::Complete(t),
                        Err(e) => Outcome::Failed(e),
                    });
                }
                DevicePoll::Approved { code, verifier } => {
                    if control.cancelled() {
                        break None;
                    }
                    let redirect = device.exchange_redirect_uri.as_deref().unwrap_or_default();
                    break Some(
                        match self.finish_code(
                            &provider,
                            bucket.as_deref(),
                            CodeGrant {
                                code: code.expose(),
                                verifier: verifier.expose(),
                                redirect_uri: redirect,
                                state: None,
                            },
                            &control,
                        ) {
                            Ok(t) => Outcome::Complete(t),
                            Err(e) => Outcome::Failed(e),
                        },
                    );
                }
            }
        };
        self.report(&tag, outcome, &control);
    }

    /// The browser-redirect thread: waits for the callback until an
    /// outcome, the timeout or cancel. It reads every browser connection
    /// without blocking, each with its own deadline, so a connection that
    /// trickles bytes holds up nothing; the listener itself lives in the
    /// session's [`Control`], where ending the session closes it.
    #[allow(clippy::too_many_arguments)]
    fn run_listener(
        &self,
        provider: Provider,
        bucket: Option<String>,
        state: SecretString,
        verifier: SecretString,
        redirect_uri: String,
        control: Arc<Control>,
        tag: String,
    ) {
        let deadline = Instant::now() + self.timing.scaled(REDIRECT_TIMEOUT).min(self.ttl);
        let path = provider.login.redirect_path.clone();
        let mut conns: Vec<CallbackConn> = Vec::new();
        let outcome = 'serve: loop {
            if control.cancelled() {
                break None;
            }
            let now = Instant::now();
            if now >= deadline {
                break Some(Outcome::Failed(FlowError::new(
                    FlowFailure::CallbackTimeout,
                    "no callback before the deadline",
                )));
            }
            let accepted = match control.listener().as_ref() {
                None => break None,
                Some(l) => l.accept_ready(MAX_CALLBACK_CONNECTIONS),
            };
            match accepted {
                Ok(streams) => {
                    for stream in streams {
                        if conns.len() >= MAX_CALLBACK_CONNECTIONS {
                            crate::log_info!(
                                "oauth {tag}: too many browser connections; the oldest is dropped"
                            );
                            conns.remove(0);
                        }
                        match CallbackConn::new(stream, now + CALLBACK_DEADLINE) {
                            Ok(c) => conns.push(c),
                            Err(e) => crate::log_warn!("oauth {tag}: a browser connection failed: {e}"),
                        }
                    }
                }
                Err(e) => crate::log_warn!("oauth {tag}: accept failed: {e}"),
            }
            let mut i = 0;
            while i < conns.len() {
                match conns[i].read(now) {
                    CallbackRead::Waiting => i += 1,
                    CallbackRead::Dropped => {
                        conns.swap_remove(i);
                    }
                    CallbackRead::Complete => {
                        let (mut stream, callback) = conns.swap_remove(i).finish(&path, state.expose());
                        match callback {
                            Callback::Ignored => crate::log_info!(
                                "oauth {tag}: a request that is not this login's callback was refused"
                            ),
                            Callback::Denied(code) => {
                                login::respond(&mut stream, 200, "Login cancelled. You can close this tab.");
                                break 'serve Some(Outcome::Failed(FlowError::new(
                                    FlowFailure::AccessDenied,
                                    format!("the callback carried error={code}"),
                                )));
                            }
                            Callback::Code(code) => {
                                break 'serve self.finish_browser(
                                    &provider,
                                    bucket.as_deref(),
                                    &mut stream,
                                    code,
                                    &verifier,
                                    &redirect_uri,
                                    &control,
                                );
                            }
                        }
                    }
                }
            }
            if control.nap(LISTENER_NAP) {
                break None;
            }
        };
        drop(conns);
        control.close_listener();
        self.report(&tag, outcome, &control);
    }

    /// The browser came back with a code: the listener closes, the code is
    /// exchanged and the token stored, and the browser is told how it went.
    #[allow(clippy::too_many_arguments)]
    fn finish_browser(
        &self,
        provider: &Provider,
        bucket: Option<&str>,
        stream: &mut std::net::TcpStream,
        code: SecretString,
        verifier: &SecretString,
        redirect_uri: &str,
        control: &Control,
    ) -> Option<Outcome> {
        if control.cancelled() {
            login::respond(stream, 400, "This login was cancelled.");
            return None;
        }
        control.close_listener();
        let result = self.finish_code(
            provider,
            bucket,
            CodeGrant { code: code.expose(), verifier: verifier.expose(), redirect_uri, state: None },
            control,
        );
        let page = if result.is_ok() {
            (200, "Login complete. You can close this tab and return to llxprt.")
        } else {
            (400, "Login failed. Return to llxprt for details.")
        };
        login::respond(stream, page.0, page.1);
        Some(match result {
            Ok(t) => Outcome::Complete(t),
            Err(e) => Outcome::Failed(e),
        })
    }
    fn report(&self, tag: &str, outcome: Option<Outcome>, control: &Control) {
        match outcome {
            None => crate::log_debug!("oauth {tag}: background work stopped"),
            Some(o) => {
                match &o {
                    Outcome::Complete(_) => crate::log_info!("oauth {tag}: logged in, token stored"),
                    Outcome::Failed(e) => crate::log_info!("oauth {tag}: login failed: {e}"),
                    _ => {}
                }
                if !control.finish(o) {
                    crate::log_debug!("oauth {tag}: outcome dropped, the session was cancelled");
                }
            }
        }
        control.stopped();
    }
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

    /// The providers known.
    pub fn providers(&self) -> &Providers {
        &self.inner.providers
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

    /// Starts a login of `provider:bucket` for `owner`, with `flow` or the
    /// provider's default.
    pub fn initiate(
        &self,
        owner: Owner,
        provider: &str,
        bucket: Option<&str>,
        flow: Option<FlowType>,
    ) -> Result<Initiated, LoginError> {
        let inner = &self.inner;
        let def = inner
            .providers
            .get(provider)
            .filter(|p| !p.login.flows.is_empty())
            .ok_or(LoginError::UnknownProvider)?;
        let flow = match flow {
            None => def.login.flows[0],
            Some(f) if def.login.flows.contains(&f) => f,
            Some(f) => return Err(LoginError::FlowNotOffered(f)),
        };
        let browser = flow == FlowType::BrowserRedirect;
        let mut reservation = {
            let mut table = inner.table();
            if table.stopped {
                return Err(LoginError::start("the daemon is shutting down"));
            }
            inner.collect(&mut table);
            let open = table.sessions.values().filter(|s| s.phase == Phase::Open);
            let (open, open_browser) =
                open.fold((0, 0), |(n, b), s| (n + 1, b + usize::from(s.flow == FlowType::BrowserRedirect)));
            if open + table.reserved >= MAX_OPEN_SESSIONS {
                return Err(LoginError::TooMany);
            }
            if browser && open_browser + table.reserved_browser >= MAX_BROWSER_LOGINS {
                return Err(LoginError::TooManyBrowser);
            }
            table.reserved += 1;
            if browser {
                table.reserved_browser += 1;
            }
            Reservation { inner, browser, held: true }
        };
        let random = |e: std::io::Error| LoginError::start(format!("The OS random generator failed: {e}"));
        let id = crate::random::hex(16).map_err(random)?;
        let tag = format!(
            "{provider}:{} session={}",
            bucket.unwrap_or(crate::store::names::DEFAULT_BUCKET),
            short_id(&id)
        );
        let expires_in = inner.ttl;
        let mut paste = None;
        let (initiated, control) = match flow {
            FlowType::PkceRedirect => {
                let pkce = Pkce::new(def.login.verifier_bytes).map_err(random)?;
                let state = login::new_state().map_err(random)?;
                let redirect_uri = def.login.paste_redirect_uri.clone().unwrap_or_default();
                let auth_url = login::authorize_url(def, &redirect_uri, &pkce.challenge, state.expose());
                paste = Some(PasteSecrets { verifier: pkce.verifier, state, redirect_uri });
                let interval = inner.client_interval(login::DEFAULT_DEVICE_INTERVAL);
                let initiated = Initiated {
                    session_id: id.clone(),
                    flow,
                    auth_url,
                    user_code: None,
                    verification_uri: None,
                    verification_uri_complete: None,
                    poll_interval: interval,
                    expires_in,
                };
                (initiated, Control::new(interval, false))
            }
            FlowType::DeviceCode => {
                let device = def.login.device.as_ref().ok_or(LoginError::FlowNotOffered(flow))?;
                let start = login::device_start(&inner.http, def, device, inner.timing.http_timeout)
                    .map_err(|e| {
                        crate::log_warn!("oauth {tag}: {e}");
                        LoginError::Flow(e)
                    })?;
                let interval = inner.client_interval(start.interval);
                let initiated = Initiated {
                    session_id: id.clone(),
                    flow,
                    auth_url: start.verification_uri.clone(),
                    user_code: Some(start.user_code.clone()),
                    verification_uri: Some(start.verification_uri.clone()),
                    verification_uri_complete: start.verification_uri_complete.clone(),
                    poll_interval: interval,
                    expires_in: expires_in.min(start.expires_in),
                };
                let control = Control::new(interval, true);
                let (me, c, p, b, t) =
                    (inner.clone(), control.clone(), def.clone(), bucket.map(str::to_owned), tag.clone());
                spawn(&tag, &control, move || me.run_device(p, b, start, c, t))?;
                (initiated, control)
            }
            FlowType::BrowserRedirect => {
                let listener = login::bind_redirect_listener(&def.login.redirect_ports).map_err(|e| {
                    crate::log_warn!("oauth {tag}: cannot listen for the browser: {e}");
                    LoginError::start(format!("cannot listen for the browser on the host's loopback: {e}"))
                })?;
                let port = listener.port();
                let redirect_uri = format!("http://localhost:{port}{}", def.login.redirect_path);
                let pkce = Pkce::new(def.login.verifier_bytes).map_err(random)?;
                let state = login::new_state().map_err(random)?;
                let auth_url = login::authorize_url(def, &redirect_uri, &pkce.challenge, state.expose());
                let interval = inner.client_interval(BROWSER_POLL_INTERVAL);
                let initiated = Initiated {
                    session_id: id.clone(),
                    flow,
                    auth_url,
                    user_code: None,
                    verification_uri: None,
                    verification_uri_complete: None,
                    poll_interval: interval,
                    expires_in,
                };
                let control = Control::new(interval, true);
                *control.listener() = Some(listener);
                let (me, c, p, b, t) =
                    (inner.clone(), control.clone(), def.clone(), bucket.map(str::to_owned), tag.clone());
                let verifier = pkce.verifier;
                spawn(&tag, &control, move || me.run_listener(p, b, state, verifier, redirect_uri, c, t))?;
                crate::log_debug!("oauth {tag}: listening for the browser on 127.0.0.1 and ::1 port {port}");
                (initiated, control)
            }
        };
        let session = Session {
            provider: provider.to_owned(),
            bucket: bucket.map(str::to_owned),
            flow,
            owner,
            created: Instant::now(),
            phase: Phase::Open,
            control,
            paste,
        };
        let mut table = inner.table();
        if table.stopped {
            let mut session = session;
            session.close(Phase::Expired);
            return Err(LoginError::start("the daemon is shutting down"));
        }
        reservation.recorded(&mut table);
        if table.sessions.len() >= MAX_RECORDS {
            let oldest = table
                .sessions
                .iter()
                .filter(|(_, s)| s.phase != Phase::Open)
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                table.sessions.remove(&k);
            }
        }
        table.sessions.insert(id, session);
        crate::log_info!("oauth {tag}: {} login started", flow.as_str());
        Ok(initiated)
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

    /// Sessions in progress (tests, status).
    pub fn open_sessions(&self) -> usize {
        self.inner.table().sessions.values().filter(|s| s.phase == Phase::Open).count()
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

    #[test]
    fn owners_compare_uid_and_capability() {
        assert_eq!(Owner::new(1, Some("t")), Owner::new(1, Some("t")));
        assert_ne!(Owner::new(1, Some("t")), Owner::new(2, Some("t")));
        assert_ne!(Owner::new(1, Some("t")), Owner::new(1, Some("u")));
        assert_ne!(Owner::new(1, Some("t")), Owner::new(1, None));
        assert!(!format!("{:?}", Owner::new(1, Some("secret-token"))).contains("secret"));
    }

    #[test]
    fn control_cancel_wakes_a_napping_thread() {
        let c = Control::new(Duration::from_secs(1), true);
        let c2 = c.clone();
        let t = std::thread::spawn(move || {
            let cancelled = c2.nap(Duration::from_secs(30));
            c2.stopped();
            cancelled
        });
        let started = Instant::now();
        c.cancel(CANCEL_WAIT);
        assert!(t.join().unwrap());
        assert!(started.elapsed() < Duration::from_millis(500));
        assert!(!c.finish(Outcome::Reported), "a cancelled session takes no outcome");
    }
}
