/*!
A small logger: one line per event on stderr or in a file, with a level
filter. Messages are built by the callers from known-safe text only; this
module never sees a token, key, code or verifier.

Line format: `{program}[{pid}]: {level}: {message}`.
*/
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

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
static SINK: Mutex<Option<File>> = Mutex::new(None);
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

/// Sends log lines to `file` (appending) instead of stderr.
pub fn set_file(file: File) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
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
    let line = format!("{program}[{}]: {}: {args}\n", pid(), level.name());
    let mut sink = SINK.lock().unwrap_or_else(|e| e.into_inner());
    match sink.as_mut() {
        Some(file) => {
            let _ = file.write_all(line.as_bytes());
        }
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
