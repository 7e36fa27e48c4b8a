/*!
`llxprt-credd`: parse the command line, set up the store, the scope, the
socket and the capability file, serve until SIGINT/SIGTERM, clean up.
*/
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, string_value, usage};
use crate::error::{Error, Result};
use crate::log::{self, Level};
use crate::profile::{self, Scope};
use crate::secret::SecretString;
use crate::server::{self, Server, ServerConfig, socket};
use crate::store::{Backend, HostStore, resolve_backend};
use crate::sys::{self, UserId};

/// The help text (kept in step with the parser and the man page by tests).
pub const HELP: &str = "\
llxprt-credd - credential broker for llxprt-code sandboxes

Usage: llxprt-credd --profile NAME -D [OPTIONS]

Serves the profile's OAuth access tokens (never refresh tokens) and API keys
on a private Unix socket.

Options:
  --profile NAME          serve what llxprt-code profile NAME uses
  --allow PROVIDER[:BUCKET]
                          also serve this provider (all buckets) or bucket
  --allow-key NAME        also serve this API key
  --allow-uid UID         also accept connections from this uid
  --socket PATH           listen here (default: $TMPDIR/llxprt-cred-UID/llxprt-cred-PID-NONCE.sock)
  --store auto|keyring|file
                          force a store backend (default: $LLXPRT_CREDD_STORE, else auto)
  --capability-file PATH  require a capability token; write it to PATH as an env file
  --max-connections N     connection cap (default 64)
  --rate-limit N          requests per second per connection, 0 = off (default 60)
  --log-level LEVEL       error, warn, info or debug (default: info)
  --log-file PATH         append log lines to PATH instead of stderr
  -D, --foreground        stay in the foreground
  -s                      print Bourne shell commands setting LLXPRT_CREDENTIAL_SOCKET
  -c                      print C shell commands setting LLXPRT_CREDENTIAL_SOCKET
  --print-socket          print the socket path only
  -h, --help              print this help
  -V, --version           print the version

Not yet in this build: background mode (without -D), -k, --ready-fd, exec mode
(-- COMMAND), SIGHUP reload, host-side refresh and OAuth login.
";

/// How to announce the socket on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announce {
    /// Nothing.
    None,
    /// Bourne shell.
    Sh,
    /// C shell.
    Csh,
    /// The path only.
    Path,
}

/// Parsed `llxprt-credd` command line.
#[derive(Debug, PartialEq)]
pub struct Args {
    /// `--profile`.
    pub profile: Option<String>,
    /// `--allow`.
    pub allow: Vec<String>,
    /// `--allow-key`.
    pub allow_keys: Vec<String>,
    /// `--allow-uid`.
    pub allow_uids: Vec<u32>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--store`.
    pub store: Option<Backend>,
    /// `--capability-file`.
    pub capability_file: Option<PathBuf>,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--rate-limit` (0 = off).
    pub rate_limit: u32,
    /// `--log-level`.
    pub log_level: Level,
    /// `--log-file`.
    pub log_file: Option<PathBuf>,
    /// `-D`.
    pub foreground: bool,
    /// `-s`, `-c`, `--print-socket`.
    pub announce: Announce,
    /// `--help`.
    pub help: bool,
    /// `--version`.
    pub version: bool,
}

fn number<T: std::str::FromStr>(parser: &mut lexopt::Parser, flag: &str) -> Result<T> {
    let v = string_value(parser.value().map_err(usage)?, flag)?;
    v.parse().map_err(|_| Error::Usage(format!("{flag} needs a number, not {v:?}")))
}

/// Parses the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
    let mut a = Args {
        profile: None,
        allow: vec![],
        allow_keys: vec![],
        allow_uids: vec![],
        socket: None,
        store: None,
        capability_file: None,
        max_connections: server::DEFAULT_MAX_CONNECTIONS,
        rate_limit: server::DEFAULT_RATE_LIMIT_PER_SECOND,
        log_level: Level::Info,
        log_file: None,
        foreground: false,
        announce: Announce::None,
        help: false,
        version: false,
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => a.help = true,
            Short('V') | Long("version") => a.version = true,
            Long("profile") => a.profile = Some(string_value(parser.value().map_err(usage)?, "--profile")?),
            Long("allow") => a.allow.push(string_value(parser.value().map_err(usage)?, "--allow")?),
            Long("allow-key") => {
                a.allow_keys.push(string_value(parser.value().map_err(usage)?, "--allow-key")?)
            }
            Long("allow-uid") => a.allow_uids.push(number(&mut parser, "--allow-uid")?),
            Long("socket") => a.socket = Some(parser.value().map_err(usage)?.into()),
            Long("store") => {
                let v = string_value(parser.value().map_err(usage)?, "--store")?;
                a.store = Some(Backend::parse(&v).ok_or_else(|| {
                    Error::Usage(format!("--store must be auto, keyring or file, not {v:?}"))
                })?);
            }
            Long("capability-file") => a.capability_file = Some(parser.value().map_err(usage)?.into()),
            Long("max-connections") => a.max_connections = number(&mut parser, "--max-connections")?,
            Long("rate-limit") => a.rate_limit = number(&mut parser, "--rate-limit")?,
            Long("log-level") => {
                let v = string_value(parser.value().map_err(usage)?, "--log-level")?;
                a.log_level =
                    Level::parse(&v).ok_or_else(|| Error::Usage(format!("unknown log level {v:?}")))?;
            }
            Long("log-file") => a.log_file = Some(parser.value().map_err(usage)?.into()),
            Short('D') | Long("foreground") => a.foreground = true,
            Short('s') => a.announce = Announce::Sh,
            Short('c') => a.announce = Announce::Csh,
            Long("print-socket") => a.announce = Announce::Path,
            _ => return Err(usage(arg.unexpected())),
        }
    }
    if a.help || a.version {
        return Ok(a);
    }
    if a.profile.is_none() && a.allow.is_empty() && a.allow_keys.is_empty() {
        return Err(Error::Usage("--profile NAME is required (or --allow/--allow-key)".into()));
    }
    if a.max_connections == 0 {
        return Err(Error::Usage("--max-connections must be at least 1".into()));
    }
    if !a.foreground {
        return Err(Error::Usage("background mode is not built yet: run with -D (--foreground)".into()));
    }
    Ok(a)
}

/// Runs the daemon and returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    log::set_program("llxprt-credd");
    let args = match parse(args.into_iter().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("llxprt-credd: {e}");
            return EXIT_USAGE;
        }
    };
    if args.help {
        print!("{HELP}");
        return EXIT_OK;
    }
    if args.version {
        println!("llxprt-credd {}", env!("CARGO_PKG_VERSION"));
        return EXIT_OK;
    }
    match run(&args) {
        Ok(()) => EXIT_OK,
        Err(Error::Usage(m)) => {
            eprintln!("llxprt-credd: {m}");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("llxprt-credd: {e}");
            EXIT_FAILURE
        }
    }
}

fn write_capability_file(path: &std::path::Path) -> Result<SecretString> {
    let token = SecretString::new(crate::random::hex(32).map_err(|e| Error::io("random", e))?);
    let content = zeroize::Zeroizing::new(format!("LLXPRT_CAPABILITY_TOKEN={}\n", token.expose()));
    crate::store::secure::atomic_write(path, content.as_bytes())
        .map_err(|e| Error::io(format!("cannot write capability file {}", path.display()), e))?;
    Ok(token)
}

fn run(args: &Args) -> Result<()> {
    log::set_max_level(args.log_level);
    if let Some(path) = &args.log_file {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("cannot open log file {}", path.display()), e))?;
        log::set_file(file);
    }
    sys::harden_process().map_err(|e| Error::io("cannot disable core dumps", e))?;
    let signals = sys::SignalSet::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP])
        .map_err(|e| Error::io("cannot block signals", e))?;
    let store = HostStore::open(resolve_backend(args.store)?)?;
    let mut scope = match &args.profile {
        Some(name) => profile::load_scope(&store.paths.profiles_dir(), name)?,
        None => Scope::default(),
    };
    for spec in &args.allow {
        scope.allow(spec)?;
    }
    for key in &args.allow_keys {
        scope.allow_key(key)?;
    }
    let socket_path = match &args.socket {
        Some(p) => p.clone(),
        None => socket::default_socket_path()?,
    };
    let listener = socket::bind(&socket_path)?;
    let cleanup = Cleanup { socket: socket_path.clone(), capability: args.capability_file.clone() };
    let capability_token = match &args.capability_file {
        Some(path) => Some(write_capability_file(path)?),
        None => None,
    };
    crate::log_info!(
        "listening on {} (store {}, scope {}{})",
        socket_path.display(),
        store.backend.name(),
        scope.describe(),
        if capability_token.is_some() { ", capability token required" } else { "" }
    );
    let config = ServerConfig {
        socket_path: socket_path.clone(),
        max_connections: args.max_connections,
        rate_limit: (args.rate_limit > 0).then_some(args.rate_limit),
        allow_uids: args.allow_uids.iter().map(|&u| UserId(u)).collect(),
        capability_token,
        scope,
        idle_timeout: idle_timeout(),
    };
    let server = Server::new(listener, config, store);
    let stopper = server.stopper();
    announce(args.announce, &socket_path, args.capability_file.as_deref())?;
    // Readiness: we listen already; closing stdout tells whoever reads it.
    sys::detach_stdout().map_err(|e| Error::io("cannot detach stdout", e))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            loop {
                match signals.wait() {
                    Ok(libc::SIGHUP) => crate::log_warn!("SIGHUP: profile reload is not built yet; ignored"),
                    Ok(sig) => {
                        crate::log_info!("signal {sig}: shutting down");
                        stopper.stop();
                        return;
                    }
                    Err(e) => {
                        crate::log_error!("sigwait failed: {e}");
                        return;
                    }
                }
            }
        })
        .map_err(|e| Error::io("cannot start the signal thread", e))?;
    server.run();
    drop(cleanup);
    crate::log_info!("stopped");
    Ok(())
}

/// The idle timeout; `LLXPRT_CREDD_IDLE_TIMEOUT_SECS` overrides it (tests).
fn idle_timeout() -> Duration {
    std::env::var("LLXPRT_CREDD_IDLE_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(server::IDLE_TIMEOUT)
}

fn announce(how: Announce, socket: &std::path::Path, capability: Option<&std::path::Path>) -> Result<()> {
    let text = announce_text(how, socket, capability, sys::current_pid().0);
    if text.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| Error::io("stdout", e))
}

/// What `-s`, `-c` or `--print-socket` print (empty for none).
fn announce_text(
    how: Announce,
    socket: &std::path::Path,
    capability: Option<&std::path::Path>,
    pid: i32,
) -> String {
    let mut vars = vec![
        ("LLXPRT_CREDENTIAL_SOCKET", shell_quote(&socket.to_string_lossy())),
        ("LLXPRT_CREDD_PID", pid.to_string()),
    ];
    if let Some(cap) = capability {
        vars.push(("LLXPRT_CAPABILITY_FILE", shell_quote(&cap.to_string_lossy())));
    }
    match how {
        Announce::None => String::new(),
        Announce::Path => format!("{}\n", socket.display()),
        Announce::Sh => vars.iter().map(|(k, v)| format!("{k}={v}; export {k};\n")).collect(),
        Announce::Csh => vars.iter().map(|(k, v)| format!("setenv {k} {v};\n")).collect(),
    }
}

/// Single-quotes `s` for sh and csh.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Removes the socket and the capability file when the daemon ends.
struct Cleanup {
    socket: PathBuf,
    capability: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
        if let Some(c) = &self.capability {
            let _ = std::fs::remove_file(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn parses_flags() {
        let a = p(&[
            "--profile",
            "work",
            "-D",
            "--allow",
            "codex:x",
            "--allow-key",
            "K",
            "--rate-limit",
            "0",
            "-s",
        ])
        .unwrap();
        assert_eq!(a.profile.as_deref(), Some("work"));
        assert_eq!((a.allow.len(), a.allow_keys.len(), a.rate_limit, a.announce), (1, 1, 0, Announce::Sh));
        assert!(p(&["-D"]).is_err(), "a scope is required");
        assert!(p(&["--profile", "x"]).is_err(), "background mode is refused for now");
        assert!(p(&["--profile", "x", "-D", "--max-connections", "zero"]).is_err());
        assert!(p(&["--help"]).unwrap().help);
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
        assert_eq!(p(&["--allow-key", "K", "-D", "-c"]).unwrap().announce, Announce::Csh);
        assert_eq!(p(&["--allow-key", "K", "-D", "--print-socket"]).unwrap().announce, Announce::Path);
    }

    #[test]
    fn announcements() {
        let sock = std::path::Path::new("/t/s.sock");
        let cap = std::path::Path::new("/t/cap.env");
        assert_eq!(announce_text(Announce::None, sock, None, 7), "");
        assert_eq!(announce_text(Announce::Path, sock, None, 7), "/t/s.sock\n");
        assert_eq!(
            announce_text(Announce::Sh, sock, Some(cap), 7),
            "LLXPRT_CREDENTIAL_SOCKET='/t/s.sock'; export LLXPRT_CREDENTIAL_SOCKET;\n\
             LLXPRT_CREDD_PID=7; export LLXPRT_CREDD_PID;\n\
             LLXPRT_CAPABILITY_FILE='/t/cap.env'; export LLXPRT_CAPABILITY_FILE;\n"
        );
        assert_eq!(
            announce_text(Announce::Csh, sock, None, 7),
            "setenv LLXPRT_CREDENTIAL_SOCKET '/t/s.sock';\nsetenv LLXPRT_CREDD_PID 7;\n"
        );
    }
}
