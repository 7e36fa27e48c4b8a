/*!
The OS keyring, behind one small trait with one implementation per OS
(Secret Service on Linux, Keychain on macOS), and [`KeyringAccess`], which
every store shares and which makes the keyring safe to call from a request:

- each call runs on its own thread and is abandoned after a timeout, so a
  stalled D-Bus never blocks a caller for longer than that; while an
  abandoned call is still stuck, further calls fail fast with `TIMEOUT`;
- the first call probes the keyring (connect, default collection present
  and unlocked) with a shorter timeout; an unavailable keyring is re-probed
  at most once per [`PROBE_RETRY`];
- a `LOCKED` or `DENIED` answer latches the process onto the file fallback
  for the rest of its life, with one notice on the log, as llxprt-code does;
  without a fallback (`--store keyring`) nothing latches: each request asks
  again and gets its error, so unlocking the collection (or restarting the
  keyring) brings the process back without a restart;
- nothing here ever unlocks a collection or creates one: both may pop up a
  prompt, and a request path must never wait on a human.
*/
#![forbid(unsafe_code)]

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::error::{StoreError, StoreErrorKind, StoreResult};
use crate::secret::SecretString;

/// Default limit on one keyring call. A healthy call takes milliseconds;
/// the read cache means a stall costs at most one request this long.
pub const KEYRING_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Default limit on the first probe (connect and find the collection).
pub const KEYRING_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an unavailable keyring is left alone before it is probed again.
pub const PROBE_RETRY: Duration = Duration::from_secs(60);
/// Environment variable overriding both timeouts, in milliseconds.
pub const TIMEOUT_ENV: &str = crate::env::KEYRING_TIMEOUT_MS;

/// Accounts starting with this are llxprt-code's availability probes.
pub const PROBE_ACCOUNT_PREFIX: &str = "__securestore_probe__";

/// One OS keyring. Implementations are blocking and may stall; callers go
/// through [`KeyringAccess`], never to a backend directly.
pub trait Keyring: Send + Sync + 'static {
    /// A short description for `doctor` ("Secret Service (gnome-keyring)").
    fn describe(&self) -> String;
    /// Checks that items can be read and written without a prompt.
    fn check(&self) -> StoreResult<()>;
    /// Reads the value of `service`/`account`.
    fn get(&self, service: &str, account: &str) -> StoreResult<Option<SecretString>>;
    /// Writes the value of `service`/`account`.
    fn set(&self, service: &str, account: &str, value: &SecretString) -> StoreResult<()>;
    /// Deletes `service`/`account`; whether anything was deleted.
    fn delete(&self, service: &str, account: &str) -> StoreResult<bool>;
    /// The accounts stored under `service`.
    fn list(&self, service: &str) -> StoreResult<Vec<String>>;
}

/// The OS keyring of this platform, if it has one we support.
pub fn platform_keyring() -> Option<Arc<dyn Keyring>> {
    #[cfg(target_os = "linux")]
    {
        Some(Arc::new(linux::SecretServiceKeyring::new()))
    }
    #[cfg(target_os = "macos")]
    {
        Some(Arc::new(macos::Keychain))
    }
    #[cfg(not(any(target_os = "linux", target_os = "macos")))]
    {
        None
    }
}

#[derive(Clone, Debug)]
enum Health {
    Unprobed,
    Ready,
    Unavailable { since: Instant, reason: String },
    Latched { reason: String },
}

/// What `doctor` shows about the keyring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyringStatus {
    /// Probed and usable.
    Ready,
    /// Not reachable; the reason is safe to show.
    Unavailable(String),
    /// Disabled for this process after a LOCKED/DENIED answer.
    Latched(String),
}

/// Shared, timeout-guarded access to one keyring.
pub struct KeyringAccess {
    backend: Arc<dyn Keyring>,
    call_timeout: Duration,
    probe_timeout: Duration,
    health: Mutex<Health>,
    stuck_calls: Arc<AtomicUsize>,
    /// Whether a `LOCKED`/`DENIED` answer latches (only when a file
    /// fallback exists to latch onto).
    latch_on_refusal: bool,
}

impl KeyringAccess {
    /// Wraps `backend` with the default timeouts (or `TIMEOUT_ENV`).
    pub fn new(backend: Arc<dyn Keyring>) -> Arc<Self> {
        Self::with_fallback(backend, true)
    }

    /// Wraps `backend`; `has_fallback: false` (`--store keyring`) means a
    /// `LOCKED`/`DENIED` answer is returned each time instead of latching.
    pub fn with_fallback(backend: Arc<dyn Keyring>, has_fallback: bool) -> Arc<Self> {
        let env =
            std::env::var(TIMEOUT_ENV).ok().and_then(|v| v.parse::<u64>().ok()).map(Duration::from_millis);
        Arc::new(KeyringAccess {
            backend,
            call_timeout: env.unwrap_or(KEYRING_CALL_TIMEOUT),
            probe_timeout: env.unwrap_or(KEYRING_PROBE_TIMEOUT),
            health: Mutex::new(Health::Unprobed),
            stuck_calls: Arc::new(AtomicUsize::new(0)),
            latch_on_refusal: has_fallback,
        })
    }

    /// The backend's description.
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// Probes (if not done yet) and reports the keyring's state.
    pub fn status(&self) -> KeyringStatus {
        match self.ensure_ready() {
            Ok(()) => KeyringStatus::Ready,
            Err(e) => match &*self.health.lock().unwrap_or_else(|p| p.into_inner()) {
                Health::Latched { reason } => KeyringStatus::Latched(reason.clone()),
                _ => KeyringStatus::Unavailable(e.message),
            },
        }
    }

    /// Whether the process has been latched onto the fallback.
    pub fn is_latched(&self) -> bool {
        matches!(*self.health.lock().unwrap_or_else(|p| p.into_inner()), Health::Latched { .. })
    }

    fn ensure_ready(&self) -> StoreResult<()> {
        let health = self.health.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match health {
            Health::Ready => Ok(()),
            Health::Latched { reason } => Err(StoreError::new(StoreErrorKind::Unavailable, reason)),
            Health::Unavailable { since, reason } if since.elapsed() < PROBE_RETRY => {
                Err(StoreError::new(StoreErrorKind::Unavailable, reason))
            }
            Health::Unavailable { .. } | Health::Unprobed => {
                let backend = self.backend.clone();
                let result = self.run(self.probe_timeout, move || backend.check());
                self.record(&result, true);
                result
            }
        }
    }

    /// Runs one keyring operation with the probe, the timeout and the latch
    /// applied.
    pub fn call<T: Send + 'static>(
        &self,
        op: impl FnOnce(&dyn Keyring) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.ensure_ready()?;
        let backend = self.backend.clone();
        let result = self.run(self.call_timeout, move || op(backend.as_ref()));
        self.record(&result, false);
        result
    }

    fn record<T>(&self, result: &StoreResult<T>, probing: bool) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*health, Health::Latched { .. }) {
            return;
        }
        match result {
            Ok(_) if probing => *health = Health::Ready,
            Ok(_) => {}
            // no fallback to latch onto: the next call asks again (a refused
            // call is quick and never prompts)
            Err(e)
                if matches!(e.kind, StoreErrorKind::Locked | StoreErrorKind::Denied)
                    && !self.latch_on_refusal => {}
            Err(e) if matches!(e.kind, StoreErrorKind::Locked | StoreErrorKind::Denied) => {
                let reason = format!(
                    "the OS keyring answered {}; using the encrypted file store for the rest of this process",
                    e.kind.code()
                );
                crate::log_warn!("{reason} ({})", e.message);
                *health = Health::Latched { reason };
            }
            Err(e) if probing || matches!(e.kind, StoreErrorKind::Unavailable | StoreErrorKind::Timeout) => {
                *health = Health::Unavailable { since: Instant::now(), reason: e.message.clone() };
            }
            Err(_) => {}
        }
    }

    fn run<T: Send + 'static>(
        &self,
        timeout: Duration,
        op: impl FnOnce() -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        if self.stuck_calls.load(Ordering::SeqCst) > 0 {
            return Err(StoreError::new(StoreErrorKind::Timeout, "an earlier keyring call is still stalled"));
        }
        // The worker and the caller meet in one slot under one mutex, so the
        // hand-over and the "caller gave up" decision cannot race.
        let slot = Arc::new((Mutex::new(Slot::<T> { result: None, abandoned: false }), Condvar::new()));
        let (worker_slot, stuck) = (slot.clone(), self.stuck_calls.clone());
        let spawned = std::thread::Builder::new().name("keyring-call".into()).spawn(move || {
            let result = op();
            let (lock, cv) = &*worker_slot;
            let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
            if s.abandoned {
                stuck.fetch_sub(1, Ordering::SeqCst);
            } else {
                s.result = Some(result);
                cv.notify_one();
            }
        });
        if let Err(e) = spawned {
            return Err(StoreError::io("cannot start a keyring call", &e));
        }
        let (lock, cv) = &*slot;
        let deadline = Instant::now() + timeout;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(result) = s.result.take() {
                return result;
            }
            let now = Instant::now();
            if now >= deadline {
                s.abandoned = true;
                self.stuck_calls.fetch_add(1, Ordering::SeqCst);
                return Err(StoreError::new(
                    StoreErrorKind::Timeout,
                    format!("the OS keyring did not answer within {} ms", timeout.as_millis()),
                ));
            }
            s = cv.wait_timeout(s, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

struct Slot<T> {
    result: Option<StoreResult<T>>,
    abandoned: bool,
}
