/*!
The read cache of a [`super::SecureStore`]: decrypted values by key, and
how each is known to be current.

A fallback file changes behind the store's back when llxprt-code, another
daemon or `llxprt-cred` writes it. While the store's directory is watched
([`crate::sys::inotify`]), a cached value is current until an event names
one of its two files: a lookup costs one non-blocking `read` of the watch,
whatever the number of keys, and a change made before the lookup is always
seen (the kernel queues the event inside the call that makes the change).
Without a watch (the directory does not exist yet, went away, or is on a
file system whose changes need not reach this kernel's events, such as
NFS or FUSE) each lookup compares both files' identity (device, inode,
size, mtime, ctime) with what it was when the value was read, one `stat`
per file; a watch is tried again at most once a second. A watch follows
its directory, not the path: at most once a second the path is checked to
still name it (a parent renamed, a link re-pointed, a mount over it), else
the watch is dropped. A read that a write will be based on (the refresh
lock's read-modify-write) always checks the files' identity.

An event does not drop a value: it makes the value's files be checked by
identity again, so a value is decrypted again only when its file really
changed. A value filled while events arrived is not trusted to the watch
either (the event may have named it before it was inserted). A value
checked by identity and found unchanged while watched is trusted to the
watch again. A value that came from
the keyring is also trusted for at most `keyring_ttl`.
*/
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::secure::Source;
use crate::secret::SecretString;
use crate::sys::inotify::{DirWatch, Seen};

/// How often a missing watch is tried again.
const REARM_EVERY: Duration = Duration::from_secs(1);

/// Identity of a file at one moment (or its absence).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FileStamp(Option<(u64, u64, u64, i64, i64, i64, i64)>);

fn stamp(path: &Path) -> FileStamp {
    FileStamp(
        fs::metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())),
    )
}

/// The (device, inode) `dir` names now.
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

fn stamps(paths: &[PathBuf; 2]) -> [FileStamp; 2] {
    [stamp(&paths[0]), stamp(&paths[1])]
}

/// A value found (or found absent), with where it came from.
pub(super) type Found = Option<(SecretString, Source)>;

struct Entry {
    value: Found,
    fetched: Instant,
    stamps: [FileStamp; 2],
    names: [Option<OsString>; 2],
    /// Current until an event names one of `names`.
    watched: bool,
}

struct State {
    entries: HashMap<String, Entry>,
    watch: Option<DirWatch>,
    /// The watched directory's identity (device, inode) when it was armed.
    watched_dir: (u64, u64),
    /// When the path is next checked to still name the watched directory.
    next_dir_check: Instant,
    next_arm: Instant,
    /// Counts the polls that saw an event, so a fill can tell whether
    /// anything changed while it read.
    changes: u64,
}

/// The cache of one store directory.
pub(super) struct ReadCache {
    dir: PathBuf,
    keyring_ttl: Option<Duration>,
    state: Mutex<State>,
}

/// What a fill noted before it read: see [`ReadCache::begin_fill`].
pub(super) struct Ticket {
    stamps: [FileStamp; 2],
    changes: u64,
    watched: bool,
}

impl ReadCache {
    /// A cache for the files in `dir`; `keyring_ttl` when values may come
    /// from the keyring.
    pub(super) fn new(dir: PathBuf, keyring_ttl: Option<Duration>) -> Self {
        let now = Instant::now();
        let state = State {
            entries: HashMap::new(),
            watch: None,
            watched_dir: (0, 0),
            next_dir_check: now,
            next_arm: now,
            changes: 0,
        };
        ReadCache { dir, keyring_ttl, state: Mutex::new(state) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached value of `key` (whose files are `paths`), if current.
    /// `checked`: trust only the files' identity, never the watch alone
    /// (a read that a write will be based on).
    pub(super) fn get(
        &self,
        key: &str,
        checked: bool,
        paths: impl FnOnce() -> [PathBuf; 2],
    ) -> Option<Found> {
        let mut state = self.lock();
        let watching = self.poll(&mut state);
        let ttl = self.keyring_ttl;
        let entry = state.entries.get_mut(key)?;
        if ttl.is_some_and(|ttl| entry.fetched.elapsed() >= ttl) {
            return None;
        }
        if checked || !(watching && entry.watched) {
            if entry.stamps != stamps(&paths()) {
                return None;
            }
            // unchanged now, and any later change is queued for the watch
            entry.watched = watching;
        }
        Some(entry.value.clone())
    }

    /// Notes, before a value is read from its files, what a later
    /// [`finish_fill`](Self::finish_fill) needs to know.
    pub(super) fn begin_fill(&self, paths: &[PathBuf; 2]) -> Ticket {
        let mut state = self.lock();
        let watched = self.poll(&mut state);
        Ticket { stamps: stamps(paths), changes: state.changes, watched }
    }

    /// Caches a value read after `ticket` was taken.
    pub(super) fn finish_fill(&self, key: &str, paths: &[PathBuf; 2], ticket: Ticket, value: Found) {
        let mut state = self.lock();
        let watching = self.poll(&mut state);
        let watched = ticket.watched && watching && state.changes == ticket.changes;
        state.entries.insert(key.to_owned(), entry(paths, value, ticket.stamps, watched));
    }

    /// Caches what this store just wrote (its own events are drained first).
    pub(super) fn put(&self, key: &str, paths: &[PathBuf; 2], value: Found) {
        let mut state = self.lock();
        let watched = self.poll(&mut state);
        state.entries.insert(key.to_owned(), entry(paths, value, stamps(paths), watched));
    }

    /// Forgets `key`.
    pub(super) fn remove(&self, key: &str) {
        self.lock().entries.remove(key);
    }

    /// Drains the watch and forgets what it names; whether the directory
    /// is watched. Without a watch, one is tried (at most once a second).
    fn poll(&self, state: &mut State) -> bool {
        let now = Instant::now();
        let Some(watch) = &state.watch else {
            if now < state.next_arm {
                return false;
            }
            state.next_arm = now + REARM_EVERY;
            // the directory's identity is taken before and after the watch
            // is set: equal, the watch is on what the path names
            let before = dir_identity(&self.dir);
            state.watch = before.and_then(|_| DirWatch::new(&self.dir).ok());
            match (state.watch.is_some(), before, dir_identity(&self.dir)) {
                (true, Some(a), Some(b)) if a == b => {
                    state.watched_dir = a;
                    state.next_dir_check = now + REARM_EVERY;
                    return true;
                }
                _ => {
                    state.watch = None;
                    return false;
                }
            }
        };
        // A watch follows the directory it was set on, not the path: a
        // parent renamed, a symbolic link re-pointed or a mount over it goes
        // unseen. So the path is checked to still name that directory, at
        // most once a second.
        let moved = now >= state.next_dir_check && {
            state.next_dir_check = now + REARM_EVERY;
            dir_identity(&self.dir) != Some(state.watched_dir)
        };
        let seen = match watch.poll() {
            Ok(_) if moved => Seen::Gone,
            Ok(None) => return true,
            Ok(Some(seen)) => seen,
            Err(e) => {
                crate::log_debug!(
                    "{}: the directory watch failed ({e}); checking files instead",
                    self.dir.display()
                );
                Seen::Gone
            }
        };
        state.changes += 1;
        // a named (or possibly changed) file's value is checked by its
        // identity from now on: re-read only if the file really changed
        let watching = !matches!(seen, Seen::Gone);
        for e in state.entries.values_mut() {
            let named = match &seen {
                Seen::Names(names) => e.names.iter().flatten().any(|n| names.contains(n)),
                Seen::Everything | Seen::Gone => true,
            };
            if named {
                e.watched = false;
            }
        }
        if !watching {
            state.watch = None;
        }
        watching
    }
}

fn entry(paths: &[PathBuf; 2], value: Found, stamps: [FileStamp; 2], watched: bool) -> Entry {
    let names = [paths[0].file_name().map(OsString::from), paths[1].file_name().map(OsString::from)];
    Entry { value, fetched: Instant::now(), stamps, names, watched }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl ReadCache {
        fn watched(&self, key: &str) -> Option<bool> {
            self.lock().entries.get(key).map(|e| e.watched)
        }
    }

    fn value(text: &str) -> Found {
        Some((SecretString::from(text), Source::File))
    }

    fn fill(cache: &ReadCache, key: &str, paths: &[PathBuf; 2], text: &str) {
        let ticket = cache.begin_fill(paths);
        cache.finish_fill(key, paths, ticket, value(text));
    }

    #[test]
    fn a_watched_value_stays_until_its_file_changes_and_others_are_untouched() {
        let dir = std::env::temp_dir().join(format!("credd-cache-{}", crate::random::hex(6).unwrap()));
        fs::create_dir_all(&dir).unwrap();
        let cache = ReadCache::new(dir.clone(), None);
        let (a, b) =
            ([dir.join("a.enc"), dir.join("a-legacy.enc")], [dir.join("b.enc"), dir.join("b-legacy.enc")]);
        fs::write(&a[0], "1").unwrap();
        fs::write(&b[0], "1").unwrap();
        fill(&cache, "a", &a, "one");
        fill(&cache, "b", &b, "uno");
        assert_eq!(cache.watched("a"), Some(true), "the directory is watched");
        let get =
            |key: &str, paths: &[PathBuf; 2]| cache.get(key, false, || paths.clone()).map(|f| f.unwrap().0);
        assert_eq!(get("a", &a).unwrap().expose(), "one");
        fs::write(&a[1], "legacy").unwrap();
        assert_eq!(get("a", &a), None, "a change to either file is seen at once");
        assert_eq!(get("b", &b).unwrap().expose(), "uno", "another key's value stays");
        assert_eq!(cache.watched("b"), Some(true));
        // an event naming another file leaves the value trusted to the watch
        fs::write(dir.join("c.enc"), "x").unwrap();
        assert_eq!(get("b", &b).unwrap().expose(), "uno");
        assert_eq!(cache.watched("b"), Some(true));
        // a fill while events arrive is checked by identity, not trusted
        let ticket = cache.begin_fill(&a);
        fs::write(&a[0], "2").unwrap();
        cache.finish_fill("a", &a, ticket, value("stale"));
        assert_eq!(cache.watched("a"), Some(false), "an event came in during the fill");
        assert_eq!(get("a", &a), None, "the identity taken before the read no longer matches");
        // our own write does not invalidate what we cached
        fs::write(&a[0], "3").unwrap();
        cache.put("a", &a, value("three"));
        assert_eq!(cache.watched("a"), Some(true));
        assert_eq!(get("a", &a).unwrap().expose(), "three");
        // the directory goes: identity checks from then on
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(get("a", &a), None, "the file is gone");
        assert_eq!(get("b", &b), None);
    }

    #[test]
    fn a_directory_swapped_under_the_path_is_noticed_and_a_read_for_an_update_checks_the_files() {
        let base = std::env::temp_dir().join(format!("credd-cache-swap-{}", crate::random::hex(6).unwrap()));
        let dir = base.join("store");
        fs::create_dir_all(&dir).unwrap();
        let cache = ReadCache::new(dir.clone(), None);
        let a = [dir.join("a.enc"), dir.join("a-legacy.enc")];
        fs::write(&a[0], "1").unwrap();
        fill(&cache, "a", &a, "one");
        assert_eq!(cache.watched("a"), Some(true));
        // the whole directory is replaced by another (a restore from a
        // backup): the watch is on the old one and sees nothing
        fs::rename(&dir, base.join("store.old")).unwrap();
        fs::create_dir_all(&dir).unwrap();
        fs::write(&a[0], "22").unwrap();
        let get = |checked: bool| cache.get("a", checked, || a.clone()).map(|f| f.unwrap().0);
        assert_eq!(get(true), None, "a read for an update compares the files, whatever the watch says");
        // within a second a plain read may still trust the watch; once the
        // second is up the path is checked to name the watched directory
        cache.lock().next_dir_check = Instant::now();
        assert_eq!(get(false), None, "the swapped directory is noticed");
        assert_eq!(cache.watched("a"), Some(false));
        fs::remove_dir_all(&base).unwrap();
    }
}
