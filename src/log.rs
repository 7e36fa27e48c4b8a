/*!
A small logger: one line per event on stderr or in a file, with a level
filter. Messages are built by the callers from known-safe text only; this
module never sees a token, key, code or verifier.

Line format: `{program}[{pid}]: {level}: {message}`. Every character of
the message outside printable ASCII is escaped ([`escape`]): values a
sandbox chose (an op name, a session id, a cancel target) cannot add a
line, hide text with terminal controls or reorder it with bidi controls.

A log file ([`set_file_at`]) is opened without following a symbolic link,
close-on-exec, mode 0600, and rotated at [`ROTATE_BYTES`]: the file
becomes `FILE.1` (replacing the old one) and a new file is started, so a
flood of audit lines cannot fill the disk.
*/
// The sandbox-side build (no `host` feature) writes warnings only.
#![cfg_attr(not(feature = "host"), allow(dead_code, unused_macros))]
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// A log file is rotated when it would grow past this (10 MiB; the
/// environment variable `LLXPRT_CREDD_LOG_ROTATE_BYTES` overrides it, for
/// tests).
pub const ROTATE_BYTES: u64 = 10 * 1024 * 1024;

/// How long the daemon lets info lines gather before writing them
/// ([`buffer_lines`]), in milliseconds.
pub const LOG_FLUSH_MS: u64 = 50;

/// Severity of a log line, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Something failed and needs attention.
    Error = 1,
    /// Something degraded (a fallback was taken, an entry was corrupt).
    Warn = 2,
    /// Normal operation: start, stop, one audit line per request.
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
}

impl Level {
    /// Parses `error|warn|info|debug`.
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);
static PROGRAM: OnceLock<&'static str> = OnceLock::new();
static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Where lines go when not to stderr.
struct Sink {
    file: File,
    /// Set for a file opened by path, which is then rotated.
    rotate: Option<Rotate>,
}

struct Rotate {
    path: PathBuf,
    written: u64,
    limit: u64,
}
/// Our pid, looked up once (0 = not yet); see [`forget_pid`].
static PID: AtomicU32 = AtomicU32::new(0);

/// Makes the next line look the pid up again (call in a forked child).
pub fn forget_pid() {
    PID.store(0, Ordering::Relaxed);
}

fn pid() -> u32 {
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// Names the program in every line (once, at start).
pub fn set_program(name: &'static str) {
    let _ = PROGRAM.set(name);
}

/// Sets the most verbose level that is written.
pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

/// Opens a log file for appending: never through a symbolic link (`ELOOP`
/// then), close-on-exec, mode 0600 (an existing file is narrowed to it).
pub fn open_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// Sends log lines to the file at `path` (opened with [`open_file`]),
/// rotated at [`ROTATE_BYTES`].
pub fn set_file_at(path: &Path) -> io::Result<()> {
    let file = open_file(path)?;
    let written = file.metadata()?.len();
    let limit = std::env::var(crate::env::LOG_ROTATE_BYTES)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROTATE_BYTES);
    let rotate = Some(Rotate { path: path.to_path_buf(), written, limit });
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink { file, rotate });
    Ok(())
}

impl Sink {
    /// Writes whole lines, rotating between lines so that no file grows
    /// past the limit (a single longer line is written whole).
    fn write_lines(&mut self, mut lines: &[u8]) {
        while !lines.is_empty() {
            let take = match &mut self.rotate {
                None => lines.len(),
                Some(r) => {
                    let room = r.limit.saturating_sub(r.written) as usize;
                    // the longest run of whole lines that fits, else one line
                    let fits =
                        lines[..room.min(lines.len())].iter().rposition(|&b| b == b'\n').map(|i| i + 1);
                    let first = lines.iter().position(|&b| b == b'\n').map_or(lines.len(), |i| i + 1);
                    match fits {
                        Some(n) => n,
                        None if r.written > 0 && self.rotate_now() => continue,
                        None => first,
                    }
                }
            };
            if let Some(r) = &mut self.rotate {
                r.written += take as u64;
            }
            let _ = self.file.write_all(&lines[..take]);
            lines = &lines[take..];
        }
    }

    /// The file becomes `FILE.1` (replacing the old one) and a new one is
    /// started; whether that worked. A failed rotation keeps writing where
    /// it was rather than losing lines (one line at a time, each trying
    /// again).
    fn rotate_now(&mut self) -> bool {
        let Some(r) = &mut self.rotate else { return false };
        let mut old = r.path.clone().into_os_string();
        old.push(".1");
        match std::fs::rename(&r.path, &old).ok().and_then(|()| open_file(&r.path).ok()) {
            Some(file) => {
                self.file = file;
                r.written = 0;
                true
            }
            None => false,
        }
    }
}

/// `text` with every character outside printable ASCII (and the
/// backslash) escaped as `\n`, `\t`, `\\` or `\u{HEX}`: one line, no
/// terminal controls, no invisible or reordering characters.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    escape_with(text, true)
}

/// [`escape`] for a terminal: backslashes and tabs are left alone (so JSON
/// that is already ASCII prints unchanged, and columns stay columns).
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    escape_with(text, false)
}

fn escape_with(text: &str, backslash: bool) -> std::borrow::Cow<'_, str> {
    if text.bytes().all(|b| (0x20..0x7f).contains(&b) && !(backslash && b == b'\\')) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' if backslash => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' if backslash => out.push_str("\\t"),
            '\t' => out.push('\t'),
            ' '..='~' => out.push(c),
            other => {
                let _ = write!(out, "\\u{{{:x}}}", other as u32);
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Whether a line at `level` would be written.
pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// Info and debug lines waiting for the flusher (see [`buffer_lines`]).
struct Pending {
    bytes: Vec<u8>,
    /// Zero: every line is written at once.
    every: Duration,
    flusher: bool,
}

static PENDING: Mutex<Pending> =
    Mutex::new(Pending { bytes: Vec::new(), every: Duration::ZERO, flusher: false });
static WAKE: Condvar = Condvar::new();
/// Pending lines are written at once when they grow past this.
const PENDING_MAX: usize = 64 * 1024;

thread_local! {
    /// Each thread formats its messages here, so a line costs no allocation.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// From now on info and debug lines are gathered and written together at
/// most `every` later (by a thread of the logger's own, started with the
/// first such line), so a request does not wait for a write; an error or
/// warning line writes everything gathered before it and itself at once,
/// and [`finish`] (on every exit path of the daemon) writes what is left.
/// Call after any fork: a line gathered before one would be written twice.
pub fn buffer_lines(every: Duration) {
    PENDING.lock().unwrap_or_else(|e| e.into_inner()).every = every;
}

/// At exit: writes every gathered line, and from now on each line at once
/// (a thread still running past this point loses nothing either).
pub fn finish() {
    PENDING.lock().unwrap_or_else(|e| e.into_inner()).every = Duration::ZERO;
    flush();
}

/// Installs a panic hook that, after the standard report, writes the
/// gathered lines: a panic aborts the daemon, and the lines before it are
/// the ones that matter. A lock another thread holds is not waited for.
pub fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let mut sink = match SINK.try_lock() {
            Ok(sink) => sink,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        let gathered = match PENDING.try_lock() {
            Ok(mut p) => std::mem::take(&mut p.bytes),
            Err(std::sync::TryLockError::Poisoned(p)) => std::mem::take(&mut p.into_inner().bytes),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        match sink.as_mut() {
            Some(sink) => sink.write_lines(&gathered),
            None => {
                let _ = std::io::stderr().write_all(&gathered);
            }
        }
    }));
}

/// Writes every gathered line.
pub fn flush() {
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    write_out(&mut sink, &[]);
}

/// Writes the gathered lines, then `line`, under the sink's lock.
fn write_out(sink: &mut Option<Sink>, line: &[u8]) {
    let gathered = std::mem::take(&mut PENDING.lock().unwrap_or_else(|e| e.into_inner()).bytes);
    for bytes in [&gathered[..], line] {
        if bytes.is_empty() {
            continue;
        }
        match sink.as_mut() {
            Some(sink) => sink.write_lines(bytes),
            None => {
                let _ = std::io::stderr().lock().write_all(bytes);
            }
        }
    }
}

/// The flusher: waits for a first gathered line, lets more gather for
/// `every`, writes them all.
fn flusher() {
    loop {
        let every = {
            let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
            while pending.bytes.is_empty() {
                pending = WAKE.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            pending.every
        };
        std::thread::sleep(every);
        flush();
    }
}

/// Writes one line. Use the `log_*!` macros instead of calling this.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let program = PROGRAM.get().copied().unwrap_or("llxprt-credd");
    let scratched = SCRATCH.try_with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut message) => {
            emit(program, level, &mut message, args);
            if message.capacity() > 4096 {
                *message = String::new();
            }
        }
        // a line logged while formatting another (a Display impl that logs)
        Err(_) => emit(program, level, &mut String::new(), args),
    });
    if scratched.is_err() {
        // this thread's locals are being torn down: the line still goes out
        emit(program, level, &mut String::new(), args);
    }
}

/// Formats `args` into `message` and writes or gathers the line.
fn emit(program: &str, level: Level, message: &mut String, args: fmt::Arguments<'_>) {
    message.clear();
    let _ = message.write_fmt(args);
    if level <= Level::Warn || !gather(program, level, message) {
        let line = format!("{program}[{}]: {}: {}\n", pid(), level.name(), escape(message));
        write_out(&mut SINK.lock().unwrap_or_else(|e| e.into_inner()), line.as_bytes());
    }
}

/// Adds an info or debug line to the gathered ones, when lines are
/// gathered; whether it did.
fn gather(program: &str, level: Level, message: &str) -> bool {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if pending.every.is_zero() {
        return false;
    }
    let was_empty = pending.bytes.is_empty();
    let bytes = &mut pending.bytes;
    let _ = writeln!(Bytes(bytes), "{program}[{}]: {}: {}", pid(), level.name(), escape(message));
    let full = bytes.len() > PENDING_MAX;
    if !pending.flusher {
        pending.flusher =
            std::thread::Builder::new().name("log".into()).stack_size(64 * 1024).spawn(flusher).is_ok();
        if !pending.flusher {
            // no thread to write them later: each line is written at once
            pending.every = Duration::ZERO;
        }
    }
    if was_empty {
        WAKE.notify_one();
    }
    drop(pending);
    if full {
        flush();
    }
    true
}

/// `fmt::Write` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Logs at error level.
macro_rules! log_error { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) } }
/// Logs at warning level.
macro_rules! log_warn { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($t)*)) } }
/// Logs at info level.
macro_rules! log_info { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) } }
/// Logs at debug level.
macro_rules! log_debug { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($t)*)) } }
pub(crate) use {log_debug, log_error, log_info, log_warn};

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_everything_outside_printable_ascii() {
        assert_eq!(escape("op=get_token target=a:b"), "op=get_token target=a:b");
        assert_eq!(escape("a\nb\rc\td\\e"), "a\\nb\\rc\\td\\\\e");
        assert_eq!(escape("x\u{2028}y\u{202e}z\u{1b}[31m"), "x\\u{2028}y\\u{202e}z\\u{1b}[31m");
        assert_eq!(escape("caf\u{e9}"), "caf\\u{e9}");
        assert_eq!(super::printable("{\"a\":\"b\\\"c\"}\u{7f}"), "{\"a\":\"b\\\"c\"}\\u{7f}");
    }
}
