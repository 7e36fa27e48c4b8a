/*!
Advisory lock files that interoperate with llxprt-code's owner-record locks.

A lock is a file holding a compact JSON owner record

```text
{"version":1,"ownerToken":"<uuid>","pid":N,"hostname":"<host>","startTimeMs":N,"startTimeSource":"approximate"}
```

published atomically: the record is written to a private temp file, fsynced
and hard-linked to the lock path (`EEXIST` = busy). Release unlinks the file
only when it still carries our owner token.

A busy lock is inspected. A holder proven dead (same host and `kill(pid, 0)`
says ESRCH, or a canonical start time that no longer matches the pid) is
taken over through a fence file (`{lock}.fence`), so that of many contenders
exactly one replaces the dead record. Anything else is waited for with
jittered exponential backoff until the caller's deadline. Two families
differ in what they do with records they cannot read:

- [`LockFamily::OAuth`] (refresh/auth locks, `{log}/oauth/locks`): legacy,
  malformed and newer-version records are never reclaimed automatically.
- [`LockFamily::Credential`] (per-item write locks,
  `{log}/secure-store/locks`): a malformed record is taken over through the
  fence; a newer-version record is an `Unavailable` error.

We write `startTimeSource: "approximate"`: llxprt-code then never treats our
live lock as a recycled pid, and still reclaims it once our pid is gone.
*/
#![forbid(unsafe_code)]
// The sandbox-side build (no `host` feature) holds no lock: only the type is used.
#![cfg_attr(not(feature = "host"), allow(dead_code))]

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{StoreError, StoreErrorKind, StoreResult};
use crate::sys::{self, Liveness, ProcessId};

/// Start times further apart than this mean a recycled pid.
const START_TIME_TOLERANCE_MS: f64 = 2000.0;

/// Which of llxprt-code's two lock families a lock belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockFamily {
    /// OAuth refresh and auth locks.
    OAuth,
    /// Per-credential write locks.
    Credential,
}

impl LockFamily {
    /// Backoff base, cap and jitter for this family (llxprt-code's values).
    fn backoff(self) -> (Duration, Duration, Duration) {
        match self {
            LockFamily::OAuth => {
                (Duration::from_millis(100), Duration::from_millis(2000), Duration::from_millis(50))
            }
            LockFamily::Credential => {
                (Duration::from_millis(50), Duration::from_millis(500), Duration::from_millis(30))
            }
        }
    }
}

/// How long a refresh lock is waited for by default.
pub const REFRESH_LOCK_WAIT: Duration = Duration::from_secs(10);
/// How long a credential write lock is waited for.
pub const CREDENTIAL_LOCK_WAIT: Duration = Duration::from_secs(5);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
struct OwnerRecord {
    version: u64,
    owner_token: String,
    pid: i64,
    hostname: String,
    start_time_ms: Option<f64>,
    start_time_source: String,
}

/// What an existing lock file holds.
enum Holder {
    Owner(OwnerRecord),
    NewerVersion,
    Unreadable,
}

fn classify(content: &[u8]) -> Holder {
    let Ok(value) = serde_json::from_slice::<Value>(content) else { return Holder::Unreadable };
    match value.get("version").and_then(Value::as_u64) {
        Some(1) => match serde_json::from_value::<OwnerRecord>(value) {
            Ok(rec) if !rec.owner_token.is_empty() => Holder::Owner(rec),
            _ => Holder::Unreadable,
        },
        Some(v) if v > 1 => Holder::NewerVersion,
        // legacy {pid, token} / {pid, timestamp} records and anything else
        _ => Holder::Unreadable,
    }
}

/// Whether the holder of a record is proven dead.
fn is_dead(rec: &OwnerRecord) -> bool {
    if rec.hostname != sys::hostname() || rec.pid <= 0 || rec.pid > i64::from(i32::MAX) {
        return false;
    }
    let pid = ProcessId(rec.pid as libc::pid_t);
    match sys::process_liveness(pid) {
        Liveness::Dead => true,
        Liveness::Unknown => false,
        Liveness::Alive => {
            if rec.start_time_source != "canonical" {
                return false;
            }
            match (rec.start_time_ms, sys::process_start_time_ms(pid)) {
                (Some(recorded), Some(actual)) => (recorded - actual as f64).abs() > START_TIME_TOLERANCE_MS,
                _ => false,
            }
        }
    }
}

fn our_record(token: &str) -> Vec<u8> {
    let me = sys::current_pid();
    let start = sys::process_start_time_ms(me)
        .map(|s| s as f64)
        .unwrap_or_else(|| (crate::token::now_unix_seconds() * 1000.0).floor());
    let rec = OwnerRecord {
        version: 1,
        owner_token: token.to_owned(),
        pid: i64::from(me.0),
        hostname: sys::hostname(),
        start_time_ms: Some(start),
        start_time_source: "approximate".to_owned(),
    };
    serde_json::to_vec(&rec).expect("owner record serialises")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Publishes `content` at `path` atomically. `Ok(false)` when the path
/// already exists.
fn publish(path: &Path, content: &[u8], token: &str) -> io::Result<bool> {
    let tmp = with_suffix(path, &format!(".{token}.{}.tmp", crate::random::hex(4)?));
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()
    })();
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Unlinks `path` if it still holds a record with `token`.
fn remove_if_owned(path: &Path, token: &str) -> io::Result<()> {
    match fs::read(path) {
        Ok(content) => {
            if matches!(classify(&content), Holder::Owner(rec) if rec.owner_token == token) {
                return match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// A held lock. Dropping it releases the lock (errors are ignored there;
/// call [`OwnerLock::release`] to see them).
#[derive(Debug)]
pub struct OwnerLock {
    path: PathBuf,
    token: String,
    released: bool,
}

impl OwnerLock {
    /// Acquires the lock at `path`, waiting up to `wait` for a live holder.
    /// At least one attempt is made even when `wait` is zero.
    pub fn acquire(path: &Path, family: LockFamily, wait: Duration) -> StoreResult<OwnerLock> {
        let io_err = |e: io::Error| StoreError::io(format!("lock {}", path.display()), &e);
        if let Some(dir) = path.parent() {
            super::paths::create_private_dir(dir)?;
        }
        let token = crate::random::uuid_v4().map_err(io_err)?;
        let record = our_record(&token);
        let deadline = Instant::now() + wait;
        let (base, cap, jitter) = family.backoff();
        let mut attempt: u32 = 0;
        loop {
            if publish(path, &record, &token).map_err(io_err)? {
                return Ok(OwnerLock { path: path.to_owned(), token, released: false });
            }
            match fs::read(path) {
                Ok(content) => {
                    let takeover = match classify(&content) {
                        Holder::Owner(rec) => is_dead(&rec).then_some(true),
                        Holder::NewerVersion if family == LockFamily::Credential => {
                            return Err(StoreError::new(
                                StoreErrorKind::Unavailable,
                                format!(
                                    "lock {} has a newer record version; not touching it",
                                    path.display()
                                ),
                            ));
                        }
                        Holder::NewerVersion => None,
                        Holder::Unreadable if family == LockFamily::Credential => Some(false),
                        Holder::Unreadable => None,
                    };
                    if let Some(check_dead) = takeover {
                        if take_over(path, &content, check_dead, &record, &token).map_err(io_err)? {
                            return Ok(OwnerLock { path: path.to_owned(), token, released: false });
                        }
                    }
                }
                // released between our attempt and the read: try again at once
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if Instant::now() < deadline {
                        continue;
                    }
                }
                Err(e) => return Err(io_err(e)),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StoreError::new(
                    StoreErrorKind::Timeout,
                    format!("timed out after {} ms waiting for lock {}", wait.as_millis(), path.display()),
                ));
            }
            let exp = base.saturating_mul(1u32 << attempt.min(16));
            let delay = exp.min(cap.saturating_sub(jitter))
                + Duration::from_millis(crate::random::below(jitter.as_millis() as u64));
            std::thread::sleep(delay.min(deadline - now));
            attempt += 1;
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Releases the lock, reporting I/O errors.
    pub fn release(mut self) -> io::Result<()> {
        self.released = true;
        remove_if_owned(&self.path, &self.token)
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        if !self.released {
            let _ = remove_if_owned(&self.path, &self.token);
        }
    }
}

/// Replaces the record we inspected (`inspected`) with ours, through the
/// fence. Returns whether we now hold the lock.
fn take_over(
    path: &Path,
    inspected: &[u8],
    check_dead: bool,
    record: &[u8],
    token: &str,
) -> io::Result<bool> {
    let fence = with_suffix(path, ".fence");
    if !publish(&fence, record, token)? {
        // Another contender is taking over. Clear its fence only if it died
        // mid-takeover, and let the next round decide.
        if let Ok(content) = fs::read(&fence) {
            if let Holder::Owner(rec) = classify(&content) {
                if is_dead(&rec) {
                    remove_if_owned(&fence, &rec.owner_token)?;
                }
            }
        }
        return Ok(false);
    }
    let outcome = (|| {
        match fs::read(path) {
            Ok(now) if now == inspected => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return publish(path, record, token),
            Err(e) => return Err(e),
        }
        if check_dead {
            match classify(inspected) {
                Holder::Owner(rec) if is_dead(&rec) => {}
                _ => return Ok(false),
            }
        }
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        publish(path, record, token)
    })();
    let fence_cleanup = remove_if_owned(&fence, token);
    let won = outcome?;
    fence_cleanup?;
    Ok(won)
}

/// Path of an OAuth refresh lock (llxprt-code's naming: the default bucket
/// is left out of the name).
pub fn refresh_lock_path(dir: &Path, provider: &str, bucket: &str) -> PathBuf {
    oauth_lock_path(dir, provider, bucket, "refresh")
}

/// Path of an OAuth auth (login) lock.
pub fn auth_lock_path(dir: &Path, provider: &str, bucket: &str) -> PathBuf {
    oauth_lock_path(dir, provider, bucket, "auth")
}

fn oauth_lock_path(dir: &Path, provider: &str, bucket: &str, kind: &str) -> PathBuf {
    if bucket == super::names::DEFAULT_BUCKET {
        dir.join(format!("{provider}-{kind}.lock"))
    } else {
        dir.join(format!("{provider}-{bucket}-{kind}.lock"))
    }
}

/// Percent-encoding for credential lock names: `* < > : " / \ | ? @ %`,
/// control characters, DEL and everything above `~` become `%XX` per UTF-8
/// byte.
fn escape_lock_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let plain = (' '..='~').contains(&c) && !"*<>:\"/\\|?@%".contains(c);
        if plain {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Longest credential lock file name llxprt-code accepts.
const MAX_LOCK_NAME_CHARS: usize = 220;

/// Path of the credential write lock for `service`/`account`.
pub fn credential_lock_path(dir: &Path, service: &str, account: &str) -> StoreResult<PathBuf> {
    let name = format!("cred-{}@{}.lock", escape_lock_component(service), escape_lock_component(account));
    if name.len() > MAX_LOCK_NAME_CHARS {
        return Err(StoreError::new(StoreErrorKind::Corrupt, "credential lock name is too long"));
    }
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("credd-lock-{tag}-{}", crate::random::hex(6).unwrap()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn names_match_llxprt_code() {
        let d = Path::new("/l");
        assert_eq!(refresh_lock_path(d, "anthropic", "default"), Path::new("/l/anthropic-refresh.lock"));
        assert_eq!(refresh_lock_path(d, "codex", "work"), Path::new("/l/codex-work-refresh.lock"));
        assert_eq!(auth_lock_path(d, "codex", "default"), Path::new("/l/codex-auth.lock"));
        assert_eq!(
            credential_lock_path(d, "llxprt-code-oauth", "anthropic:default").unwrap(),
            Path::new("/l/cred-llxprt-code-oauth@anthropic%3Adefault.lock")
        );
        assert_eq!(escape_lock_component("a@b%c\u{7f}é"), "a%40b%25c%7F%C3%A9");
        assert!(credential_lock_path(d, "s", &"x".repeat(300)).is_err());
    }

    #[test]
    fn second_acquire_waits_then_times_out_and_release_frees() {
        let d = tmpdir("busy");
        let p = d.join("x.lock");
        let held = OwnerLock::acquire(&p, LockFamily::OAuth, Duration::ZERO).unwrap();
        let rec: Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(rec["version"], 1);
        assert_eq!(rec["pid"], std::process::id());
        let t = Instant::now();
        let err = OwnerLock::acquire(&p, LockFamily::OAuth, Duration::from_millis(300)).unwrap_err();
        assert_eq!(err.kind, StoreErrorKind::Timeout);
        assert!(t.elapsed() >= Duration::from_millis(300));
        held.release().unwrap();
        assert!(!p.exists());
        let again = OwnerLock::acquire(&p, LockFamily::OAuth, Duration::ZERO).unwrap();
        drop(again);
        assert!(!p.exists());
        let leftovers: Vec<_> = fs::read_dir(&d).unwrap().collect();
        assert!(leftovers.is_empty(), "no temp or fence files remain");
    }

    #[test]
    fn dead_owner_is_taken_over_but_unreadable_oauth_lock_is_not() {
        let d = tmpdir("dead");
        let p = d.join("y.lock");
        // a pid that cannot exist on Linux (above pid_max) yet is a valid i32
        let dead = format!(
            r#"{{"version":1,"ownerToken":"t","pid":2147483000,"hostname":{:?},"startTimeMs":1,"startTimeSource":"canonical"}}"#,
            sys::hostname()
        );
        fs::write(&p, &dead).unwrap();
        let got = OwnerLock::acquire(&p, LockFamily::OAuth, Duration::from_secs(2)).unwrap();
        drop(got);
        fs::write(&p, r#"{"pid":1,"token":"legacy"}"#).unwrap();
        assert!(OwnerLock::acquire(&p, LockFamily::OAuth, Duration::from_millis(200)).is_err());
        assert!(p.exists(), "a legacy OAuth lock is never reclaimed");
        let got = OwnerLock::acquire(&p, LockFamily::Credential, Duration::from_millis(500)).unwrap();
        drop(got);
        fs::write(&p, r#"{"version":2,"ownerToken":"t"}"#).unwrap();
        let err = OwnerLock::acquire(&p, LockFamily::Credential, Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind, StoreErrorKind::Unavailable);
    }

    #[test]
    fn live_owner_on_another_host_is_never_stolen() {
        let d = tmpdir("foreign");
        let p = d.join("z.lock");
        let other = r#"{"version":1,"ownerToken":"t","pid":2147483000,"hostname":"elsewhere.invalid","startTimeMs":1,"startTimeSource":"canonical"}"#;
        fs::write(&p, other).unwrap();
        assert!(OwnerLock::acquire(&p, LockFamily::OAuth, Duration::from_millis(150)).is_err());
        assert_eq!(fs::read_to_string(&p).unwrap(), other);
    }

    #[test]
    fn threads_serialise() {
        let d = tmpdir("threads");
        let p = d.join("t.lock");
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (p, counter) = (p.clone(), counter.clone());
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        let g =
                            OwnerLock::acquire(&p, LockFamily::Credential, Duration::from_secs(10)).unwrap();
                        assert_eq!(counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                        std::thread::sleep(Duration::from_millis(2));
                        counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        g.release().unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    }
}
