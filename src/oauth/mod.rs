/*!
OAuth on the host: provider definitions ([`provider`]), the calls to
providers ([`http`]), the refresh that runs once per token host-wide
([`refresh`]), proactive renewal timers ([`renewal`]), and logins: the
flows' steps ([`login`]) and the sessions that run them ([`sessions`]).

[`OAuthHost`] is what the server holds. It refreshes on three triggers:

- the `refresh_token` op ([`OAuthHost::refresh`]);
- on read: `get_token` of a token that expires within
  [`REFRESH_ON_READ_SECONDS`] ([`OAuthHost::serve`]);
- proactively: serving a refreshable token arms a renewal timer.

A token is *refreshable* when it has a refresh token and its provider is
known ([`provider::Providers`]). Others are served as stored.

Test knobs (environment, read at start; production leaves them unset):

- `LLXPRT_CREDD_TIME_SCALE`: multiplies the retry delays, the refresh
  cooldown, the renewal delays and backoff, and the logins' device poll
  interval and `slow_down` step, browser-redirect timeout and session GC
  interval (e.g. `0.01`);
- `LLXPRT_CREDD_HTTP_TIMEOUT_MS`: the per-call timeout instead of 15 s.
*/
#![forbid(unsafe_code)]

pub mod http;
pub mod login;
pub mod provider;
pub mod refresh;
pub mod renewal;
pub mod sessions;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use provider::{FlowType, Providers};
pub use refresh::{RefreshError, Refreshed, Refresher, Source, Trigger};
pub use renewal::{Fired, Scheduler};
pub use sessions::{Initiated, LoginError, LoginOrigin, Logins, Owner, Poll};

use crate::error::{Error, Result};
use crate::store::TokenStore;
use crate::token::{OAuthToken, now_unix_seconds};

/// Timeout of one call to a token endpoint (SPEC §4: host per-operation).
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(15);
/// Delays before the second and third call after a transient failure.
pub const REFRESH_RETRY_DELAYS: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];
/// Whole-refresh budget: no retry starts that could not finish inside it,
/// so an answer reaches the client before its 30 s request timeout.
pub const REFRESH_BUDGET: Duration = Duration::from_secs(25);
/// A retry is skipped when less than this would be left of the budget.
pub const MIN_ATTEMPT_TIME: Duration = Duration::from_secs(1);
/// At most one call to the provider per provider:bucket in this long.
pub const REFRESH_COOLDOWN: Duration = Duration::from_secs(30);
/// `get_token` refreshes a token that expires within this many seconds.
pub const REFRESH_ON_READ_SECONDS: f64 = 30.0;
/// After taking the lock, a token valid for more than this many seconds
/// was renewed by someone else and is returned as it is.
pub const FRESH_AFTER_LOCK_SECONDS: f64 = 60.0;
/// Renewal lead: at least this long before expiry...
pub const RENEWAL_MIN_LEAD: Duration = Duration::from_secs(300);
/// ...minus a random jitter up to this.
pub const RENEWAL_JITTER: Duration = Duration::from_secs(30);
/// First renewal retry delay after a failure; doubles each time.
pub const RENEWAL_BACKOFF_BASE: Duration = Duration::from_secs(30);
/// Longest renewal retry delay.
pub const RENEWAL_BACKOFF_CAP: Duration = Duration::from_secs(30 * 60);
/// Renewal gives up after this many failures in a row.
pub const RENEWAL_MAX_FAILURES: u32 = 10;
/// Longest sleep of the renewal thread between wall-clock checks.
pub const RENEWAL_NAP: Duration = Duration::from_secs(30);
/// Environment knob scaling the refresh and renewal delays (tests).
pub const TIME_SCALE_ENV: &str = crate::env::TIME_SCALE;
/// Environment knob replacing [`HTTP_TIMEOUT`] (tests).
pub const HTTP_TIMEOUT_ENV: &str = crate::env::HTTP_TIMEOUT_MS;

/// Timing of refreshes and renewals.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// Multiplies delays, cooldown and renewal times (1 in production).
    pub scale: f64,
    /// Timeout of one call to the provider.
    pub http_timeout: Duration,
    /// Longest wait for the refresh lock file.
    pub lock_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { scale: 1.0, http_timeout: HTTP_TIMEOUT, lock_wait: crate::store::lock::REFRESH_LOCK_WAIT }
    }
}

impl Timing {
    /// The defaults, with the test knobs from the environment.
    pub fn from_env() -> Result<Timing> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Timing> {
        let mut timing = Timing::default();
        if let Some(v) = var(TIME_SCALE_ENV).filter(|v| !v.is_empty()) {
            timing.scale =
                v.parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0 && *s <= 1000.0).ok_or_else(
                    || Error::Environment(format!("{TIME_SCALE_ENV} must be a number above 0, not {v:?}")),
                )?;
        }
        if let Some(v) = var(HTTP_TIMEOUT_ENV).filter(|v| !v.is_empty()) {
            let ms = v.parse::<u64>().ok().filter(|ms| (1..=600_000).contains(ms)).ok_or_else(|| {
                Error::Environment(format!(
                    "{HTTP_TIMEOUT_ENV} must be milliseconds (1 to 600000), not {v:?}"
                ))
            })?;
            timing.http_timeout = Duration::from_millis(ms);
        }
        Ok(timing)
    }

    /// `d` times the scale.
    pub fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.scale)
    }
}

/// What the daemon needs to refresh and log in: providers and timing.
#[derive(Clone, Debug)]
pub struct OAuthConfig {
    /// Known providers.
    pub providers: Providers,
    /// Timing.
    pub timing: Timing,
    /// Login session lifetime ([`sessions::SESSION_TTL`], or
    /// `LLXPRT_OAUTH_SESSION_TIMEOUT_SECONDS`).
    pub session_ttl: Duration,
    /// Who starts the logins: the sandbox (the daemon, the default) or the
    /// user on the host (`llxprt-cred login`).
    pub login_origin: LoginOrigin,
}

impl OAuthConfig {
    /// Providers from the providers file the host named (`--providers-file`,
    /// else `LLXPRT_CREDD_PROVIDERS_FILE`; never a file in llxprt-code's
    /// config directory, which a sandbox may write) and the environment;
    /// timing knobs and the session lifetime from the environment.
    pub fn load(providers_file: Option<&Path>) -> Result<OAuthConfig> {
        Ok(OAuthConfig {
            providers: Providers::load(providers_file)?,
            timing: Timing::from_env()?,
            session_ttl: sessions::session_ttl_from(|name| std::env::var(name).ok()),
            login_origin: LoginOrigin::Sandbox,
        })
    }

    /// A login session table over `tokens` (with its GC thread).
    pub fn logins(&self, tokens: Arc<dyn TokenStore>) -> Result<Logins> {
        Logins::start(tokens, self.providers.clone(), self.timing, self.session_ttl, self.login_origin)
            .map_err(|e| Error::io("cannot start the login session thread", e))
    }
}

/// The refresher, the renewal timers and the login sessions, as the
/// server uses them.
pub struct OAuthHost {
    refresher: Arc<Refresher>,
    renewal: Scheduler,
    logins: Logins,
}

fn fired(result: Result<Refreshed, RefreshError>) -> Fired {
    match result {
        Ok(Refreshed { source: Source::Cooldown(left), .. }) => Fired::RetryIn(left),
        Ok(Refreshed { token, .. }) if token.refresh_token().is_some() => {
            Fired::Renewed { expiry: token.expiry() }
        }
        Ok(_) => Fired::Stop,
        Err(RefreshError::CoolingDown { retry_after }) => Fired::RetryIn(retry_after),
        Err(
            RefreshError::NotFound
            | RefreshError::NoRefreshToken
            | RefreshError::Revoked { .. }
            | RefreshError::UnknownProvider,
        ) => Fired::Stop,
        Err(_) => Fired::Failed,
    }
}

impl OAuthHost {
    /// Starts the renewal thread; refreshes go to `tokens`.
    pub fn start(config: OAuthConfig, tokens: Arc<dyn TokenStore>) -> Result<OAuthHost> {
        let logins = config.logins(tokens.clone())?;
        let refresher = Arc::new(Refresher::new(tokens, config.providers, config.timing));
        let r = refresher.clone();
        let fire = move |provider: &str, bucket: Option<&str>, armed_expiry: f64| {
            fired(r.refresh(provider, bucket, Trigger::Renewal { armed_expiry }))
        };
        let renewal = Scheduler::start(
            Box::new(fire),
            Box::new(now_unix_seconds),
            config.timing.scale,
            config.timing.scaled(RENEWAL_NAP),
        )
        .map_err(|e| Error::io("cannot start the renewal thread", e))?;
        Ok(OAuthHost { refresher, renewal, logins })
    }

    fn refreshable(&self, provider: &str, token: &OAuthToken) -> bool {
        token.refresh_token().is_some() && self.refresher.providers().get(provider).is_some()
    }

    /// What `get_token` sends for a stored token: refreshed first when it
    /// expires within [`REFRESH_ON_READ_SECONDS`] and is refreshable. A
    /// failed refresh still serves a token that has not expired yet; an
    /// expired one gets the refresh's error. A refreshable token served
    /// arms its renewal timer.
    pub fn serve(
        &self,
        provider: &str,
        bucket: Option<&str>,
        stored: OAuthToken,
    ) -> Result<OAuthToken, RefreshError> {
        if !self.refreshable(provider, &stored) {
            return Ok(stored);
        }
        let token = if stored.expires_within(now_unix_seconds(), REFRESH_ON_READ_SECONDS) {
            match self.refresher.refresh(provider, bucket, Trigger::Read) {
                Ok(r) => r.token,
                Err(e) if stored.expiry() > now_unix_seconds() => {
                    crate::log_warn!(
                        "refresh on read failed ({e}); serving the stored token until it expires"
                    );
                    return Ok(stored);
                }
                Err(e) => return Err(e),
            }
        } else {
            stored
        };
        if self.refreshable(provider, &token) {
            self.renewal.arm(provider, bucket, token.expiry());
        }
        Ok(token)
    }

    /// The `refresh_token` op.
    pub fn refresh(&self, provider: &str, bucket: Option<&str>) -> Result<OAuthToken, RefreshError> {
        let token = self.refresher.refresh(provider, bucket, Trigger::Request)?.token;
        if self.refreshable(provider, &token) {
            self.renewal.arm(provider, bucket, token.expiry());
        }
        Ok(token)
    }

    /// A token newer than the one whose access token the provider just
    /// rejected (401): the stored one when another refresh replaced it,
    /// else a refresh now, whatever the expiry says. Concurrent callers
    /// share one refresh; within the cooldown the stored token comes back
    /// (the caller then passes the 401 on).
    pub fn refresh_rejected(
        &self,
        provider: &str,
        bucket: Option<&str>,
        rejected_access_token: &str,
    ) -> Result<OAuthToken, RefreshError> {
        let trigger = Trigger::Rejected { fingerprint: refresh::fingerprint(rejected_access_token) };
        let token = self.refresher.refresh(provider, bucket, trigger)?.token;
        if self.refreshable(provider, &token) {
            self.renewal.arm(provider, bucket, token.expiry());
        }
        Ok(token)
    }

    /// The login sessions (`oauth_initiate`, `oauth_poll`, `oauth_cancel`).
    pub fn logins(&self) -> &Logins {
        &self.logins
    }

    /// `oauth_exchange`: the new full token (stored; sanitize before
    /// sending), with its renewal timer armed.
    pub fn exchange(&self, owner: Owner, session_id: &str, code: &str) -> Result<OAuthToken, LoginError> {
        let of = self.logins.login_of(session_id);
        let token = self.logins.exchange(owner, session_id, code)?;
        self.logged_in(of, &token);
        Ok(token)
    }

    /// `oauth_poll`; a completed login's token gets its renewal timer.
    pub fn poll(&self, owner: Owner, session_id: &str) -> Result<Poll, LoginError> {
        let of = self.logins.login_of(session_id);
        let poll = self.logins.poll(owner, session_id)?;
        if let Poll::Complete(token) = &poll {
            self.logged_in(of, token);
        }
        Ok(poll)
    }

    fn logged_in(&self, of: Option<(String, Option<String>)>, token: &OAuthToken) {
        if let Some((provider, bucket)) = of.filter(|(provider, _)| self.refreshable(provider, token)) {
            self.renewal.arm(&provider, bucket.as_deref(), token.expiry());
        }
    }

    /// Keeps only the logins in progress and the renewal timers whose
    /// provider:bucket `keep` accepts (a SIGHUP narrowed the scope).
    pub fn retain(&self, keep: &dyn Fn(&str, Option<&str>) -> bool) {
        let sessions = self.logins.retain(keep);
        let timers = self.renewal.retain(keep);
        if sessions + timers > 0 {
            crate::log_info!(
                "scope narrowed: {sessions} login(s) cancelled, {timers} renewal timer(s) stopped"
            );
        }
    }

    /// Cancels every renewal timer and every login session's background
    /// work (shutdown).
    pub fn stop(&self) {
        self.renewal.stop();
        self.logins.stop();
    }

    /// Waits up to `timeout` for refreshes in flight to finish and be saved.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let renewal_idle = self.renewal.wait_idle(timeout);
        renewal_idle
            && self.refresher.wait_idle(deadline.saturating_duration_since(std::time::Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_parse_and_bad_values_are_refused() {
        let t = Timing::from_vars(|n| match n {
            TIME_SCALE_ENV => Some("0.01".into()),
            HTTP_TIMEOUT_ENV => Some("250".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!((t.scale, t.http_timeout), (0.01, Duration::from_millis(250)));
        assert_eq!(t.scaled(REFRESH_COOLDOWN), Duration::from_millis(300));
        assert_eq!(Timing::from_vars(|_| None).unwrap(), Timing::default());
        for (name, bad) in
            [(TIME_SCALE_ENV, "0"), (TIME_SCALE_ENV, "-1"), (TIME_SCALE_ENV, "x"), (HTTP_TIMEOUT_ENV, "0")]
        {
            assert!(Timing::from_vars(|n| (n == name).then(|| bad.to_owned())).is_err(), "{name}={bad}");
        }
    }

    #[test]
    fn fired_outcomes_follow_the_refresh_result() {
        let token = |rt: bool| {
            let mut m = serde_json::json!({"access_token":"a","expiry":5000,"token_type":"Bearer"});
            if rt {
                m["refresh_token"] = "r".into();
            }
            OAuthToken::from_value(m).unwrap()
        };
        let ok = |rt, source| fired(Ok(Refreshed { token: token(rt), source }));
        assert_eq!(ok(true, Source::Upstream), Fired::Renewed { expiry: 5000.0 });
        assert_eq!(ok(true, Source::Store), Fired::Renewed { expiry: 5000.0 });
        assert_eq!(ok(false, Source::Upstream), Fired::Stop);
        let d = Duration::from_secs(3);
        assert_eq!(ok(true, Source::Cooldown(d)), Fired::RetryIn(d));
        assert_eq!(fired(Err(RefreshError::CoolingDown { retry_after: d })), Fired::RetryIn(d));
        assert_eq!(fired(Err(RefreshError::Revoked { code: "invalid_grant".into() })), Fired::Stop);
        assert_eq!(fired(Err(RefreshError::LockBusy)), Fired::Failed);
    }
}
