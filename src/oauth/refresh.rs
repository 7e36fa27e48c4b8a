/*!
The refresh of one provider:bucket, once per token host-wide (SPEC §7).

1. Concurrent callers in this process share one refresh: the first becomes
   the leader of a *flight*, later ones wait for its result.
2. Within [`REFRESH_COOLDOWN`] of the last call to the provider, nobody
   calls it again: the stored token is returned while it is valid, else
   [`RefreshError::CoolingDown`] (→ `RATE_LIMITED` with `retryAfter`).
3. The leader reads the token (none → `NotFound`; no refresh token →
   `NoRefreshToken`), takes the refresh lock file that llxprt-code and
   other daemons also take, and reads again: a token someone else renewed
   meanwhile is returned as it is (see [`Trigger`] for what "renewed"
   means to each trigger).
4. It calls the token endpoint, retrying transient failures (5xx, 408,
   429, timeouts, connection errors) after 1 s and 3 s, never a 4xx.
   A revoked grant (`invalid_grant`) clears the stored refresh token.
5. It merges the answer over the stored token ([`OAuthToken::merge`]: new
   fields win, absent or empty ones keep the stored value, so a rotated
   refresh token replaces the old one and a missing one keeps it), saves
   while still holding the lock, releases it and returns the full token;
   the server sanitizes it before it leaves.
*/
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::http::{Http, UpstreamError};
use super::provider::{Provider, Providers};
use super::{
    FRESH_AFTER_LOCK_SECONDS, MIN_ATTEMPT_TIME, REFRESH_BUDGET, REFRESH_COOLDOWN, REFRESH_RETRY_DELAYS,
    Timing,
};
use crate::store::names::DEFAULT_BUCKET;
use crate::store::{Change, LockWait, StoreErrorKind, Stored, TokenStore, UpdateError, update_token};
use crate::token::{OAuthToken, now_unix_seconds};

/// A short fingerprint of an access token (the first 8 bytes of its
/// SHA-256), to tell "the token that was rejected" from "a newer one"
/// without keeping the token.
pub fn fingerprint(access_token: &str) -> u64 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(access_token.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// What asked for the refresh; it decides when a token someone else
/// stored is good enough.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Trigger {
    /// The `refresh_token` op.
    Request,
    /// `get_token` found the token within 30 s of expiry.
    Read,
    /// A proactive renewal timer armed for the token that expires at
    /// `armed_expiry`. The token is still valid for minutes when the timer
    /// fires, so "valid for > 60 s" cannot mean "someone renewed it": a
    /// token with another expiry does.
    Renewal {
        /// The expiry of the token the timer was armed for.
        armed_expiry: f64,
    },
    /// The provider answered 401 to the access token whose
    /// [`fingerprint`] this is (the injecting proxy): a stored token with
    /// another access token was renewed elsewhere; the same one is
    /// refreshed even when its expiry says it is valid.
    Rejected {
        /// The rejected access token's fingerprint.
        fingerprint: u64,
    },
}

/// Where the returned token came from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    /// This refresh called the provider.
    Upstream,
    /// Another process (or an earlier refresh) had already renewed it.
    Store,
    /// Inside the cooldown: the stored token, still valid; the cooldown
    /// ends after the duration.
    Cooldown(Duration),
}

/// A refresh's result: the full token (with its refresh token; sanitize
/// before sending) and where it came from.
#[derive(Clone, Debug)]
pub struct Refreshed {
    /// The token now stored.
    pub token: OAuthToken,
    /// Where it came from.
    pub source: Source,
}

/// Why a refresh failed. Every variant's text is safe to send and log.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RefreshError {
    /// No provider definition of that name.
    UnknownProvider,
    /// No token is stored.
    NotFound,
    /// The stored token has no refresh token.
    NoRefreshToken,
    /// The provider revoked the refresh token; it was cleared.
    Revoked {
        /// The provider's error code (`invalid_grant`, ...).
        code: String,
    },
    /// Within the cooldown and the stored token has expired.
    CoolingDown {
        /// Until the cooldown ends.
        retry_after: Duration,
    },
    /// Another process held the refresh lock for too long.
    LockBusy,
    /// The store failed (safe message).
    Store(String),
    /// The provider call failed.
    Upstream {
        /// The last failure.
        error: UpstreamError,
        /// Calls made.
        attempts: u32,
    },
}

impl std::fmt::Display for RefreshError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefreshError::UnknownProvider => f.write_str("no OAuth provider of that name is configured"),
            RefreshError::NotFound => f.write_str("no token is stored"),
            RefreshError::NoRefreshToken => {
                f.write_str("the stored token has no refresh token; log in again")
            }
            RefreshError::Revoked { code } => {
                write!(f, "the provider revoked the refresh token ({code}); log in again")
            }
            RefreshError::CoolingDown { retry_after } => {
                write!(f, "refreshed less than 30 s ago; try again in {} s", retry_after.as_secs_f64().ceil())
            }
            RefreshError::LockBusy => f.write_str("another process is refreshing this token; try again"),
            RefreshError::Store(m) => write!(f, "the credential store failed: {m}"),
            RefreshError::Upstream { error, attempts } => {
                let calls = if *attempts == 1 { "call" } else { "calls" };
                write!(f, "token refresh failed: {error} ({attempts} {calls})")
            }
        }
    }
}

fn store_error(e: crate::error::Error) -> RefreshError {
    RefreshError::Store(e.to_string())
}

/// One in-progress refresh that later callers wait for.
struct Flight {
    result: Mutex<Option<Result<Refreshed, RefreshError>>>,
    done: Condvar,
}

impl Flight {
    fn wait(&self) -> Result<Refreshed, RefreshError> {
        let mut slot = self.result.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(r) = slot.as_ref() {
                return r.clone();
            }
            slot = self.done.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn finish(&self, result: Result<Refreshed, RefreshError>) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        self.done.notify_all();
    }
}

#[derive(Default)]
struct KeyState {
    flight: Option<Arc<Flight>>,
    cooldown_until: Option<Instant>,
}

/// Refreshes tokens of the host store.
pub struct Refresher {
    tokens: Arc<dyn TokenStore>,
    providers: Providers,
    http: Http,
    timing: Timing,
    keys: Mutex<HashMap<String, KeyState>>,
    idle: Condvar,
}

/// Ends a flight even if the leader unwinds: waiters get an error
/// instead of waiting forever.
struct Leader<'a> {
    refresher: &'a Refresher,
    key: String,
    flight: Arc<Flight>,
    attempted: bool,
    finished: bool,
}

impl Leader<'_> {
    fn finish(mut self, result: &Result<Refreshed, RefreshError>) {
        self.end(result.clone());
        self.finished = true;
    }

    fn end(&self, result: Result<Refreshed, RefreshError>) {
        let mut keys = self.refresher.lock_keys();
        let state = keys.entry(self.key.clone()).or_default();
        state.flight = None;
        if self.attempted {
            state.cooldown_until = Some(Instant::now() + self.refresher.timing.scaled(REFRESH_COOLDOWN));
        }
        self.refresher.idle.notify_all();
        drop(keys);
        self.flight.finish(result);
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.end(Err(RefreshError::Store("the refresh was interrupted".into())));
        }
    }
}

/// What the part under the refresh lock found or did.
enum Locked {
    /// Renewed elsewhere meanwhile: the stored token is used.
    Stored(OAuthToken),
    /// Renewed by the provider: the merged token (stored by the update).
    Renewed { token: OAuthToken, rotated: bool, attempts: u32, took: Duration },
    /// The provider revoked the refresh token; the record without it is stored.
    Revoked { status: u16, code: String },
    /// Nothing renewed, nothing stored.
    Failed(RefreshError),
}

impl Refresher {
    /// A refresher over `tokens` for `providers`.
    pub fn new(tokens: Arc<dyn TokenStore>, providers: Providers, timing: Timing) -> Refresher {
        Refresher {
            tokens,
            providers,
            http: Http::new(),
            timing,
            keys: Mutex::new(HashMap::new()),
            idle: Condvar::new(),
        }
    }

    /// The providers this refresher knows.
    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    fn lock_keys(&self) -> MutexGuard<'_, HashMap<String, KeyState>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `timeout` until no refresh is in flight (at shutdown: a
    /// provider that already rotated the refresh token must see the new
    /// one saved). Whether none is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut keys = self.lock_keys();
        loop {
            if keys.values().all(|s| s.flight.is_none()) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            keys = self.idle.wait_timeout(keys, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Refreshes `provider:bucket` (see the module doc).
    pub fn refresh(
        &self,
        provider: &str,
        bucket: Option<&str>,
        trigger: Trigger,
    ) -> Result<Refreshed, RefreshError> {
        let def = self.providers.get(provider).ok_or(RefreshError::UnknownProvider)?;
        let key = format!("{provider}:{}", bucket.unwrap_or(DEFAULT_BUCKET));
        let mut keys = self.lock_keys();
        let state = keys.entry(key.clone()).or_default();
        if let Some(flight) = state.flight.clone() {
            drop(keys);
            crate::log_debug!("refresh {key}: joining the refresh in flight");
            return flight.wait();
        }
        let now = Instant::now();
        if let Some(until) = state.cooldown_until.filter(|u| *u > now) {
            drop(keys);
            return self.within_cooldown(provider, bucket, until - now);
        }
        let flight = Arc::new(Flight { result: Mutex::new(None), done: Condvar::new() });
        state.flight = Some(flight.clone());
        drop(keys);
        let mut leader = Leader { refresher: self, key, flight, attempted: false, finished: false };
        let result = self.lead(def, provider, bucket, trigger, &mut leader.attempted, &leader.key);
        leader.finish(&result);
        result
    }

    fn within_cooldown(
        &self,
        provider: &str,
        bucket: Option<&str>,
        remaining: Duration,
    ) -> Result<Refreshed, RefreshError> {
        match self.tokens.get_token(provider, bucket).map_err(store_error)? {
            Some(token) if token.expiry() > now_unix_seconds() => {
                Ok(Refreshed { token, source: Source::Cooldown(remaining) })
            }
            Some(_) => Err(RefreshError::CoolingDown { retry_after: remaining }),
            None => Err(RefreshError::NotFound),
        }
    }

    fn lead(
        &self,
        def: &Provider,
        provider: &str,
        bucket: Option<&str>,
        trigger: Trigger,
        attempted: &mut bool,
        key: &str,
    ) -> Result<Refreshed, RefreshError> {
        let before =
            self.tokens.get_token(provider, bucket).map_err(store_error)?.ok_or(RefreshError::NotFound)?;
        if before.refresh_token().is_none() {
            return Err(RefreshError::NoRefreshToken);
        }
        drop(before);
        let wait = LockWait::up_to(self.timing.lock_wait);
        let outcome = update_token(self.tokens.as_ref(), provider, bucket, &wait, |stored| {
            self.locked(def, stored, trigger, attempted, key)
        });
        match outcome {
            Ok(Locked::Stored(token)) => Ok(Refreshed { token, source: Source::Store }),
            Ok(Locked::Failed(e)) => Err(e),
            Ok(Locked::Renewed { token, rotated, attempts, took }) => {
                crate::log_info!(
                    "refresh {key}: renewed by the provider in {} ms ({attempts} call(s){}), valid for {} s",
                    took.as_millis(),
                    if rotated { ", refresh token rotated" } else { "" },
                    (token.expiry() - now_unix_seconds()).round()
                );
                Ok(Refreshed { token, source: Source::Upstream })
            }
            Ok(Locked::Revoked { status, code }) => {
                crate::log_warn!(
                    "refresh {key}: the provider revoked the refresh token (HTTP {status}, {code}); cleared it, a new login is needed"
                );
                Err(RefreshError::Revoked { code })
            }
            Err(UpdateError::Lock(e)) => Err(match &e {
                crate::error::Error::Store(s) if s.kind == StoreErrorKind::Timeout => RefreshError::LockBusy,
                _ => store_error(e),
            }),
            Err(UpdateError::Write(e, Locked::Revoked { code, .. })) => {
                crate::log_error!(
                    "refresh {key}: the provider revoked the refresh token ({code}) and clearing it failed: {e}"
                );
                Err(RefreshError::Revoked { code })
            }
            Err(UpdateError::Write(e, _)) => {
                crate::log_error!("refresh {key}: renewed by the provider but cannot be saved: {e}");
                Err(store_error(e))
            }
        }
    }

    /// The part under the refresh lock: re-read, call, merge; what to
    /// store and what happened ([`update_token`] writes it).
    fn locked(
        &self,
        def: &Provider,
        stored: &Stored<'_>,
        trigger: Trigger,
        attempted: &mut bool,
        key: &str,
    ) -> (Change, Locked) {
        let current = match stored.get() {
            Ok(Some(current)) => current,
            Ok(None) => return (Change::Keep, Locked::Failed(RefreshError::NotFound)),
            Err(e) => return (Change::Keep, Locked::Failed(store_error(e))),
        };
        let fresh = current.expiry() > now_unix_seconds() + FRESH_AFTER_LOCK_SECONDS;
        let renewed_elsewhere = match trigger {
            Trigger::Request | Trigger::Read => fresh,
            Trigger::Renewal { armed_expiry } => fresh && current.expiry() != armed_expiry,
            Trigger::Rejected { fingerprint: rejected } => fingerprint(current.access_token()) != rejected,
        };
        if renewed_elsewhere {
            crate::log_debug!("refresh {key}: already renewed, the stored token is used");
            return (Change::Keep, Locked::Stored(current));
        }
        let Some(refresh_token) = current.refresh_token() else {
            return (Change::Keep, Locked::Failed(RefreshError::NoRefreshToken));
        };
        *attempted = true;
        let started = Instant::now();
        let (answer, attempts) = self.call_with_retries(def, refresh_token, key);
        let answer = match answer {
            Ok(answer) => answer,
            Err(UpstreamError::Revoked { status, code }) => {
                let mut cleared = current.clone();
                cleared.clear_refresh_token();
                return (Change::Save(cleared), Locked::Revoked { status, code });
            }
            Err(error) => {
                crate::log_warn!("refresh {key}: failed after {attempts} call(s): {error}");
                return (Change::Keep, Locked::Failed(RefreshError::Upstream { error, attempts }));
            }
        };
        let new = match def.token_from_answer(&answer, now_unix_seconds()) {
            Ok(t) => t,
            Err(bad) => {
                crate::log_warn!("refresh {key}: {}", bad.0);
                let error = UpstreamError::BadAnswer(bad.0);
                return (Change::Keep, Locked::Failed(RefreshError::Upstream { error, attempts }));
            }
        };
        let rotated = new.refresh_token().is_some_and(|r| Some(r) != current.refresh_token());
        let merged = OAuthToken::merge(&current, &new);
        (
            Change::Save(merged.clone()),
            Locked::Renewed { token: merged, rotated, attempts, took: started.elapsed() },
        )
    }

    /// Calls the endpoint, retrying transient failures after the
    /// [`REFRESH_RETRY_DELAYS`], within [`REFRESH_BUDGET`] overall.
    fn call_with_retries(
        &self,
        def: &Provider,
        refresh_token: &str,
        key: &str,
    ) -> (Result<super::http::Fields, UpstreamError>, u32) {
        let deadline = Instant::now() + REFRESH_BUDGET;
        let mut attempts = 0u32;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            attempts += 1;
            let result = self.http.refresh(def, refresh_token, self.timing.http_timeout.min(left));
            let Err(UpstreamError::Transient(why)) = &result else { return (result, attempts) };
            let Some(delay) = REFRESH_RETRY_DELAYS.get(attempts as usize - 1).map(|d| self.timing.scaled(*d))
            else {
                return (result, attempts);
            };
            if Instant::now() + delay + MIN_ATTEMPT_TIME > deadline {
                return (result, attempts);
            }
            crate::log_info!(
                "refresh {key}: call {attempts} failed ({why}); retrying in {} ms",
                delay.as_millis()
            );
            std::thread::sleep(delay);
        }
    }
}
