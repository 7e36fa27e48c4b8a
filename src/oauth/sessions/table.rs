/*!
The session table behind [`Logins`](super::Logins): one record per session
([`Session`]: its provider, bucket, flow, owner, age, phase, background
control and code-paste secrets), the slots reserved against the caps while
a login starts ([`Reservation`]), the collection of expired and used
sessions (the GC thread), and the lookup every op goes through.
*/
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::control::Control;
use super::{LoginError, LoginOrigin, MIN_CLIENT_POLL_INTERVAL, Owner, SESSION_GC_INTERVAL, short_id};
use crate::oauth::Timing;
use crate::oauth::http::Http;
use crate::oauth::provider::{FlowType, Providers};
use crate::secret::SecretString;
use crate::store::TokenStore;

/// The code-paste session's secrets.
pub(super) struct PasteSecrets {
    pub(super) verifier: SecretString,
    pub(super) state: SecretString,
    pub(super) redirect_uri: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Phase {
    Open,
    Used,
    Expired,
}

pub(super) struct Session {
    pub(super) provider: String,
    pub(super) bucket: Option<String>,
    pub(super) flow: FlowType,
    pub(super) owner: Owner,
    pub(super) created: Instant,
    pub(super) phase: Phase,
    pub(super) control: Arc<Control>,
    pub(super) paste: Option<PasteSecrets>,
}

impl Session {
    pub(super) fn target(&self, id: &str) -> String {
        format!(
            "{}:{} session={}",
            self.provider,
            self.bucket.as_deref().unwrap_or(crate::store::names::DEFAULT_BUCKET),
            short_id(id)
        )
    }

    /// Ends the session's life: stops its thread (without waiting) and
    /// drops its secrets.
    pub(super) fn close(&mut self, phase: Phase) {
        self.phase = phase;
        self.paste = None;
        self.control.close_listener();
        let mut s = self.control.lock();
        s.cancelled = true;
        self.control.changed.notify_all();
    }
}

#[derive(Default)]
pub(super) struct Table {
    pub(super) sessions: HashMap<String, Session>,
    pub(super) stopped: bool,
    /// Logins between their slot check and their session record (the
    /// provider call in between may take seconds): counted against the
    /// caps, so concurrent starts cannot all pass.
    pub(super) reserved: usize,
    pub(super) reserved_browser: usize,
}

/// A slot in the caps, taken before a login starts; given back on drop
/// unless the session was recorded ([`Reservation::recorded`]).
pub(super) struct Reservation<'a> {
    pub(super) inner: &'a Inner,
    pub(super) browser: bool,
    pub(super) held: bool,
}

impl Reservation<'_> {
    /// The session is in the table now (under the same lock): the slot is
    /// the session's.
    pub(super) fn recorded(&mut self, table: &mut Table) {
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

pub(super) struct Inner {
    pub(super) tokens: Arc<dyn TokenStore>,
    pub(super) providers: Providers,
    pub(super) http: Http,
    pub(super) timing: Timing,
    pub(super) ttl: Duration,
    pub(super) origin: LoginOrigin,
    pub(super) table: Mutex<Table>,
    pub(super) gc_wake: Condvar,
}

impl Inner {
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn client_interval(&self, upstream: Duration) -> Duration {
        self.timing.scaled(upstream).max(MIN_CLIENT_POLL_INTERVAL)
    }

    /// Marks sessions past the TTL expired (stopping their threads) and
    /// drops records past twice the TTL.
    pub(super) fn collect(&self, table: &mut Table) {
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

    pub(super) fn gc_loop(&self) {
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
    pub(super) fn lookup<'a>(
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
}
