/*!
The handle between a login session and its background thread
([`Control`]): the cancel flag a napping thread wakes on, whether the
thread still runs, the outcome it reports, and a browser login's listener,
which whoever ends the session closes at once. A cancelled session takes
no outcome.
*/
#![forbid(unsafe_code)]

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::table::Inner;
use crate::oauth::login::{FlowError, RedirectListener};
use crate::token::OAuthToken;

/// The state a background flow shares with the session table.
pub(super) enum Outcome {
    Pending { interval: Duration },
    Complete(OAuthToken),
    Failed(FlowError),
    Reported,
}

pub(super) struct ControlState {
    pub(super) cancelled: bool,
    pub(super) running: bool,
    pub(super) outcome: Outcome,
}

/// The handle between a session and its background thread.
pub(super) struct Control {
    state: Mutex<ControlState>,
    pub(super) changed: Condvar,
    /// A browser-redirect login's listener: closed by whoever ends the
    /// session (cancel, expiry, shutdown) at once, not when the thread
    /// next looks.
    listener: Mutex<Option<RedirectListener>>,
}

impl Control {
    pub(super) fn new(interval: Duration, running: bool) -> Arc<Control> {
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

    pub(super) fn listener(&self) -> MutexGuard<'_, Option<RedirectListener>> {
        self.listener.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Closes the redirect listener, if there is one.
    pub(super) fn close_listener(&self) {
        drop(self.listener().take());
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Sleeps up to `d`; whether the session was cancelled meanwhile.
    pub(super) fn nap(&self, d: Duration) -> bool {
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
    pub(super) fn finish(&self, outcome: Outcome) -> bool {
        let mut s = self.lock();
        if s.cancelled {
            return false;
        }
        s.outcome = outcome;
        self.changed.notify_all();
        true
    }

    pub(super) fn set_interval(&self, interval: Duration) {
        let mut s = self.lock();
        if let Outcome::Pending { .. } = s.outcome {
            s.outcome = Outcome::Pending { interval };
        }
    }

    pub(super) fn stopped(&self) {
        let mut s = self.lock();
        s.running = false;
        self.changed.notify_all();
    }

    /// Cancels and waits up to `wait` for the thread to stop.
    pub(super) fn cancel(&self, wait: Duration) {
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

impl Inner {
    pub(super) fn report(&self, tag: &str, outcome: Option<Outcome>, control: &Control) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::sessions::CANCEL_WAIT;

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
