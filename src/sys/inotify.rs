/*!
inotify(7): a directory watch whose events are read without blocking, so a
cache can tell "nothing changed" with one cheap `read` instead of a `stat`
per file. The kernel queues an event inside the system call that changes
the directory, so a change made before a read of the watch is always seen
by it.
*/

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use super::cerr;

/// What a watched directory's events say.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Entries with these names changed (created, written, renamed,
    /// removed, or their attributes changed).
    Names(Vec<OsString>),
    /// Anything may have changed (the queue overflowed), and the watch
    /// goes on.
    Everything,
    /// The directory itself went away or moved: anything may have
    /// changed, and the watch is over.
    Gone,
}

/// A watch on one directory, read without blocking.
pub struct DirWatch {
    file: File,
}

/// The events that can change what a file in the directory holds.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

impl DirWatch {
    /// Watches `dir` (which must exist, be a directory, and be on a local
    /// file system: on NFS, FUSE and the like another machine's or
    /// process's changes need not reach this kernel's events).
    pub fn new(dir: &Path) -> io::Result<DirWatch> {
        let path = CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
        if !is_local(&path)? {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "not a local file system"));
        }
        // SAFETY: inotify_init1 takes flags only.
        let fd = cerr(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by inotify_init1 and is owned by
        // nobody else; the OwnedFd closes it on every path below.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
        cerr(unsafe { libc::inotify_add_watch(fd, path.as_ptr(), MASK) })?;
        Ok(DirWatch { file: File::from(owned) })
    }

    /// Drains the events queued since the last call; `None` when there
    /// were none.
    pub fn poll(&self) -> io::Result<Option<Seen>> {
        let mut seen: Option<Seen> = None;
        let mut buf = [0u8; 4096];
        loop {
            let n = match (&self.file).read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(seen),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(seen);
            }
            for event in parse(&buf[..n]) {
                seen = Some(merge(seen, event));
            }
        }
    }
}

/// The file systems whose every change passes through this kernel, so
/// that a watch sees it (`statfs(2)` magic numbers): ext2/3/4, XFS, Btrfs,
/// tmpfs, ramfs, F2FS, ZFS.
const LOCAL_FILE_SYSTEMS: [i64; 7] =
    [0xEF53, 0x5846_5342, 0x9123_683E, 0x0102_1994, 0x8584_58F6, 0xF2F5_2010, 0x2FC1_2FC1];

/// Whether `path` is on one of the [`LOCAL_FILE_SYSTEMS`].
fn is_local(path: &CString) -> io::Result<bool> {
    let mut fs = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and outlives the call; `fs` is valid
    // for writes of a whole `statfs`.
    cerr(unsafe { libc::statfs(path.as_ptr(), fs.as_mut_ptr()) })?;
    // SAFETY: statfs succeeded, so it filled `fs` in.
    let fs = unsafe { fs.assume_init() };
    #[allow(clippy::unnecessary_cast)] // `f_type`'s width differs between targets
    let kind = fs.f_type as i64;
    Ok(LOCAL_FILE_SYSTEMS.contains(&kind))
}

/// One event as the kernel wrote it.
fn parse(mut bytes: &[u8]) -> Vec<Seen> {
    const HEADER: usize = 16;
    let mut events = Vec::new();
    while bytes.len() >= HEADER {
        let word = |at: usize| u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let (mask, len) = (word(4), word(12) as usize);
        let end = (HEADER + len).min(bytes.len());
        let name = &bytes[HEADER..end];
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        events.push(
            if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED | libc::IN_UNMOUNT) != 0 {
                Seen::Gone
            } else if mask & libc::IN_Q_OVERFLOW != 0 || name.is_empty() {
                Seen::Everything
            } else {
                Seen::Names(vec![OsString::from_vec(name.to_vec())])
            },
        );
        bytes = &bytes[end..];
    }
    events
}

/// Two findings as one: the wider wins, names add up.
fn merge(old: Option<Seen>, new: Seen) -> Seen {
    match (old, new) {
        (Some(Seen::Gone), _) | (_, Seen::Gone) => Seen::Gone,
        (Some(Seen::Everything), _) | (_, Seen::Everything) => Seen::Everything,
        (Some(Seen::Names(mut a)), Seen::Names(b)) => {
            for name in b {
                if !a.contains(&name) {
                    a.push(name);
                }
            }
            Seen::Names(a)
        }
        (None, new) => new,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_writes_renames_removals_and_the_directory_going() {
        let dir = std::env::temp_dir().join(format!("credd-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let watch = DirWatch::new(&dir).unwrap();
        assert_eq!(watch.poll().unwrap(), None, "nothing happened yet");
        std::fs::write(dir.join("a"), "1").unwrap();
        assert_eq!(watch.poll().unwrap(), Some(Seen::Names(vec!["a".into()])), "seen at once");
        assert_eq!(watch.poll().unwrap(), None, "drained");
        std::fs::write(dir.join("tmp"), "2").unwrap();
        std::fs::rename(dir.join("tmp"), dir.join("b")).unwrap();
        assert_eq!(watch.poll().unwrap(), Some(Seen::Names(vec!["tmp".into(), "b".into()])));
        std::fs::remove_file(dir.join("a")).unwrap();
        assert_eq!(watch.poll().unwrap(), Some(Seen::Names(vec!["a".into()])));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(watch.poll().unwrap(), Some(Seen::Gone), "the directory went away");
        assert!(DirWatch::new(&dir).is_err(), "a missing directory cannot be watched");
    }

    #[test]
    fn only_local_file_systems_are_watched() {
        let local = CString::new(std::env::temp_dir().as_os_str().as_bytes()).unwrap();
        assert!(is_local(&local).unwrap(), "the temporary directory is on a local file system here");
        // /proc changes without this kernel's file events: never watched
        let err = DirWatch::new(Path::new("/proc")).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    }
}
