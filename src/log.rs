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
#![forbid(unsafe_code)]

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// A log file is rotated when it would grow past this (10 MiB; the
/// environment variable `LLXPRT_CREDD_LOG_ROTATE_BYTES` overrides it, for
/// tests).
pub const ROTATE_BYTES: u64 = 10 * 1024 * 1024;

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

/// Sends log lines to `file` (appending) instead of stderr; never rotated.
pub fn set_file(file: File) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink { file, rotate: None });
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
    let limit = std::env::var("LLXPRT_CREDD_LOG_ROTATE_BYTES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROTATE_BYTES);
    let rotate = Some(Rotate { path: path.to_path_buf(), written, limit });
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sink { file, rotate });
    Ok(())
}

impl Sink {
    fn write_line(&mut self, line: &[u8]) {
        if let Some(r) = &mut self.rotate {
            if r.written > 0 && r.written + line.len() as u64 > r.limit {
                let mut old = r.path.clone().into_os_string();
                old.push(".1");
                // The old file is replaced; a failed rotation keeps writing
                // where it was rather than losing lines.
                if let Some(file) = std::fs::rename(&r.path, &old).ok().and_then(|()| open_file(&r.path).ok())
                {
                    self.file = file;
                    r.written = 0;
                }
            }
            r.written += line.len() as u64;
        }
        let _ = self.file.write_all(line);
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

/// Writes one line. Use the `log_*!` macros instead of calling this.
pub fn write(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let program = PROGRAM.get().copied().unwrap_or("llxprt-credd");
    let message = args.to_string();
    let line = format!("{program}[{}]: {}: {}\n", pid(), level.name(), escape(&message));
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    match sink.as_mut() {
        Some(sink) => sink.write_line(line.as_bytes()),
        None => {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

/// Logs at error level.
#[macro_export]
macro_rules! log_error { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Error, format_args!($($t)*)) } }
/// Logs at warning level.
#[macro_export]
macro_rules! log_warn { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Warn, format_args!($($t)*)) } }
/// Logs at info level.
#[macro_export]
macro_rules! log_info { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)*)) } }
/// Logs at debug level.
#[macro_export]
macro_rules! log_debug { ($($t:tt)*) => { $crate::log::write($crate::log::Level::Debug, format_args!($($t)*)) } }

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
