/*!
The one way a stored token changes: under the refresh lock of its
`provider:bucket`, read, decide, write, release.

Every writer goes through [`update_token`]: the daemon's `save_token` and
`remove_token`, a completed login, a refresh, and `llxprt-cred`'s `token
import` and `logout`. The lock is llxprt-code's own refresh lock, so a
refresh in llxprt-code on the same host and a write here never interleave.
The decision is a closure that sees the stored record only through
[`Stored::get`], read after the lock is held, and answers a [`Change`]; a
panic inside it still releases the lock (the lock file is removed when the
held lock is dropped).

What each writer may put in the record is decided next to the token type
([`OAuthToken::merge`], [`OAuthToken::sandbox_update`]): the host's refresh
token is never lost by an update that does not carry a new one.
*/
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use super::{StoreErrorKind, TokenStore};
use crate::error::Error;
use crate::token::OAuthToken;

/// The refresh lock is waited for in slices this long when a wait can be
/// cancelled, so a cancelled wait ends within one.
const LOCK_SLICE: Duration = Duration::from_millis(200);

/// How long to wait for the refresh lock.
pub struct LockWait<'a> {
    /// The longest wait.
    pub limit: Duration,
    /// Asked between slices of the wait; `true` ends it with the store's
    /// timeout error and nothing is written.
    pub cancelled: Option<&'a dyn Fn() -> bool>,
}

impl LockWait<'_> {
    /// A plain wait of up to `limit`.
    pub fn up_to(limit: Duration) -> LockWait<'static> {
        LockWait { limit, cancelled: None }
    }
}

/// What an update does with the stored record.
pub enum Change {
    /// Store this record.
    Save(OAuthToken),
    /// Remove the record (absent is fine).
    Remove,
    /// Leave the store as it is.
    Keep,
}

/// Where an update failed.
#[derive(Debug)]
pub enum UpdateError<R> {
    /// The refresh lock could not be taken (a timeout is
    /// [`StoreErrorKind::Timeout`]); nothing was read or written.
    Lock(Error),
    /// The decision was made (`R`), but writing it failed.
    Write(Error, R),
}

impl<R> UpdateError<R> {
    /// The store error, whichever step failed.
    pub fn into_error(self) -> Error {
        match self {
            UpdateError::Lock(e) | UpdateError::Write(e, _) => e,
        }
    }
}

impl<R> From<UpdateError<R>> for Error {
    fn from(e: UpdateError<R>) -> Error {
        e.into_error()
    }
}

/// The stored record of the `provider:bucket` being updated, read on
/// demand under the lock (a writer that replaces the record whole need not
/// read it, so an unreadable old record does not stop it).
pub struct Stored<'a> {
    tokens: &'a dyn TokenStore,
    provider: &'a str,
    bucket: Option<&'a str>,
}

impl Stored<'_> {
    /// Reads the stored token; `None` when there is none. Never a cached
    /// value the store has not checked against its files
    /// ([`TokenStore::get_token_for_update`]): what is written is based on
    /// what is stored.
    pub fn get(&self) -> Result<Option<OAuthToken>, Error> {
        self.tokens.get_token_for_update(self.provider, self.bucket)
    }
}

/// Takes the refresh lock of `provider:bucket` (waiting as `wait` says),
/// lets `decide` look at the stored record and choose a [`Change`], makes
/// that change, and releases the lock (a failed release is logged: the
/// lock file is left for its owner check to reclaim). `decide`'s second
/// value is handed back, also when the write fails.
pub fn update_token<R>(
    tokens: &dyn TokenStore,
    provider: &str,
    bucket: Option<&str>,
    wait: &LockWait<'_>,
    decide: impl FnOnce(&Stored<'_>) -> (Change, R),
) -> Result<R, UpdateError<R>> {
    let lock = acquire(tokens, provider, bucket, wait).map_err(UpdateError::Lock)?;
    let (change, value) = decide(&Stored { tokens, provider, bucket });
    let written = match &change {
        Change::Save(token) => tokens.save_token(provider, bucket, token),
        Change::Remove => tokens.remove_token(provider, bucket),
        Change::Keep => Ok(()),
    };
    if let Err(e) = tokens.release_refresh_lock(lock) {
        crate::log_warn!(
            "{provider}:{}: cannot release the refresh lock: {e}",
            bucket.unwrap_or(super::names::DEFAULT_BUCKET)
        );
    }
    match written {
        Ok(()) => Ok(value),
        Err(e) => Err(UpdateError::Write(e, value)),
    }
}

/// The refresh lock, waited for in slices while the wait can be cancelled.
fn acquire(
    tokens: &dyn TokenStore,
    provider: &str,
    bucket: Option<&str>,
    wait: &LockWait<'_>,
) -> Result<super::RefreshLock, Error> {
    let Some(cancelled) = wait.cancelled else {
        return tokens.acquire_refresh_lock(provider, bucket, wait.limit);
    };
    let deadline = Instant::now() + wait.limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokens.acquire_refresh_lock(provider, bucket, left.min(LOCK_SLICE)) {
            Err(Error::Store(e)) if e.kind == StoreErrorKind::Timeout && !cancelled() && !left.is_zero() => {}
            other => return other,
        }
    }
}

#[cfg(all(test, feature = "host"))]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::store::{Backend, KeyringTokenStore, MachineSecret, SecureStore};

    fn store(tag: &str) -> (PathBuf, KeyringTokenStore) {
        let root =
            std::env::temp_dir().join(format!("credd-update-{tag}-{}", crate::random::hex(6).unwrap()));
        let secret = Arc::new(MachineSecret::new(None, root.join("machine_secret"), root.join("locks")));
        let secure = SecureStore::new(
            "llxprt-code-oauth",
            root.join("files"),
            Backend::File,
            None,
            secret,
            root.join("locks"),
        );
        (root.clone(), KeyringTokenStore::new(secure, root.join("oauth-locks")))
    }

    fn token(access: &str, refresh: Option<&str>) -> OAuthToken {
        let mut json =
            serde_json::json!({"access_token": access, "expiry": 4102444800u64, "token_type": "Bearer"});
        if let Some(r) = refresh {
            json["refresh_token"] = r.into();
        }
        OAuthToken::from_json(&json.to_string()).unwrap()
    }

    fn wait() -> LockWait<'static> {
        LockWait::up_to(Duration::from_millis(300))
    }

    #[test]
    fn save_keep_and_remove_do_what_they_say_and_release_the_lock() {
        let (root, tokens) = store("steps");
        let seen = update_token(&tokens, "p", None, &wait(), |s| {
            (Change::Save(token("one", Some("r1"))), s.get().unwrap().is_none())
        })
        .unwrap();
        assert!(seen, "the first update finds nothing stored");
        let kept = update_token(&tokens, "p", None, &wait(), |s| (Change::Keep, s.get().unwrap())).unwrap();
        assert_eq!(kept.unwrap().access_token(), "one", "the decision sees what is stored, under the lock");
        let merged = update_token(&tokens, "p", None, &wait(), |s| {
            let merged = OAuthToken::merge(&s.get().unwrap().unwrap(), &token("two", None));
            (Change::Save(merged), ())
        });
        assert!(merged.is_ok());
        let now = tokens.get_token("p", None).unwrap().unwrap();
        assert_eq!(
            (now.access_token(), now.refresh_token()),
            ("two", Some("r1")),
            "the refresh token is kept"
        );
        update_token(&tokens, "p", None, &wait(), |_| (Change::Remove, ())).unwrap();
        assert!(tokens.get_token("p", None).unwrap().is_none(), "removed");
        // every update released the lock: it can be taken at once
        let lock = tokens.acquire_refresh_lock("p", None, Duration::ZERO).expect("lock released");
        lock.release().unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_held_lock_stops_the_update_before_it_reads_and_a_cancelled_wait_ends_early() {
        let (root, tokens) = store("held");
        let held = tokens.acquire_refresh_lock("p", Some("b"), Duration::ZERO).unwrap();
        let mut decided = false;
        let got = update_token(&tokens, "p", Some("b"), &wait(), |_| {
            decided = true;
            (Change::Save(token("x", None)), ())
        });
        assert!(
            matches!(got, Err(UpdateError::Lock(Error::Store(ref e))) if e.kind == StoreErrorKind::Timeout)
        );
        assert!(!decided, "nothing is decided without the lock");
        assert!(tokens.get_token("p", Some("b")).unwrap().is_none(), "nothing written");
        let cancel = || true;
        let started = Instant::now();
        let wait = LockWait { limit: Duration::from_secs(20), cancelled: Some(&cancel) };
        let got = update_token(&tokens, "p", Some("b"), &wait, |_| (Change::Remove, ()));
        assert!(matches!(got, Err(UpdateError::Lock(_))));
        assert!(started.elapsed() < Duration::from_secs(2), "a cancelled wait ends within a slice or so");
        held.release().unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_panicking_decision_releases_the_lock_and_writes_nothing() {
        let (root, tokens) = store("panic");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ =
                update_token(&tokens, "p", None, &wait(), |_| -> (Change, ()) { panic!("decision failed") });
        }));
        assert!(result.is_err());
        assert!(tokens.get_token("p", None).unwrap().is_none());
        let lock = tokens.acquire_refresh_lock("p", None, Duration::ZERO).expect("the lock was released");
        lock.release().unwrap();
        std::fs::remove_dir_all(root).unwrap();
    }
}
