/*!
`llxprt-cred`: the host-side companion. This file holds its parser, the
host-store commands (`key ...`, `token ...`, `doctor`, `bench`), and the
daemon commands (`status`, `get`, `get-key`), which go through the same
client library a sandboxed program uses.
*/
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lexopt::prelude::*;
use serde_json::Value;

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, provider_bucket, string_value, usage};
use crate::client::{self, ProxyProviderKeyStorage, ProxySocketClient, ProxyTokenStore, capability};
use crate::error::{Error, Result};
use crate::log::{self, Level};
use crate::store::keyring::KeyringStatus;
use crate::store::lock::REFRESH_LOCK_WAIT;
use crate::store::names::DEFAULT_BUCKET;
use crate::store::{Backend, HostStore, KeyStore, TokenStore, resolve_backend};
use crate::token::{OAuthToken, now_unix_seconds};

/// The help text (kept in step with the parser and the man page by tests).
pub const HELP: &str = "\
llxprt-cred - host-side companion of llxprt-credd

Usage: llxprt-cred [OPTIONS] COMMAND [ARGS]

Host store commands (run on the host, never in the sandbox):
  key set NAME                 store an API key (value from stdin, or typed at a hidden prompt)
  key get NAME                 print an API key
  key list                     list API key names
  key rm NAME                  delete an API key
  token list                   list stored OAuth tokens (provider:bucket, expiry, refreshable)
  token show PROVIDER[:BUCKET] print a token without its refresh_token
  token import PROVIDER[:BUCKET]
                               merge a token read as JSON from stdin into the stored one
  token rm PROVIDER[:BUCKET]   delete a token
  doctor                       report the live backend, persistence, machine secret, locks
  bench store                  measure store reads and writes
  bench daemon                 measure the daemon: readiness, memory, get_token round trips
  bench refresh                measure a refresh storm: 256 clients on one expired token

Daemon commands (ask the running llxprt-credd, as the sandbox does):
  status                       show the socket, the protocol version, and what the daemon serves
  get PROVIDER[:BUCKET]        print the token the daemon serves (it never has a refresh_token)
  get-key NAME                 print the API key the daemon serves

Options:
  --store auto|keyring|file    force a backend (default: $LLXPRT_CREDD_STORE, else auto)
  --socket PATH                daemon commands: the daemon's socket
                               (default: $LLXPRT_CREDENTIAL_SOCKET)
  --capability-file PATH       daemon commands: the daemon's capability file (default:
                               $LLXPRT_CAPABILITY_TOKEN, else $LLXPRT_CAPABILITY_FILE,
                               else fd $LLXPRT_CAPABILITY_FD)
  --log-level LEVEL            error, warn, info or debug (default: warn)
  --iterations N               bench: samples per measurement (default: 200; bench daemon
                               takes 50 times as many round trips per connection)
  -h, --help                   print this help
  -V, --version                print the version
";

/// A parsed `llxprt-cred` command.
#[derive(Debug, PartialEq)]
pub enum Command {
    /// `key set NAME`
    KeySet(String),
    /// `key get NAME`
    KeyGet(String),
    /// `key list`
    KeyList,
    /// `key rm NAME`
    KeyRm(String),
    /// `token list`
    TokenList,
    /// `token show P[:B]`
    TokenShow(String, Option<String>),
    /// `token import P[:B]`
    TokenImport(String, Option<String>),
    /// `token rm P[:B]`
    TokenRm(String, Option<String>),
    /// `doctor`
    Doctor,
    /// `bench store`
    BenchStore,
    /// `bench daemon`
    BenchDaemon,
    /// `bench refresh`
    BenchRefresh,
    /// `status`
    Status,
    /// `get P[:B]`
    Get(String, Option<String>),
    /// `get-key NAME`
    GetKey(String),
    /// `--help`
    Help,
    /// `--version`
    Version,
}

/// Parsed command line.
#[derive(Debug, PartialEq)]
pub struct Args {
    /// What to do.
    pub command: Command,
    /// `--store`.
    pub store: Option<Backend>,
    /// `--log-level`.
    pub log_level: Level,
    /// `--iterations`.
    pub iterations: usize,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--capability-file`.
    pub capability_file: Option<PathBuf>,
}

/// Parses `llxprt-cred`'s arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut words: Vec<String> = Vec::new();
    let mut store = None;
    let mut log_level = Level::Warn;
    let mut iterations = 200;
    let mut socket = None;
    let mut capability_file = None;
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => {
                let command = Command::Help;
                return Ok(Args { command, store, log_level, iterations, socket, capability_file });
            }
            Short('V') | Long("version") => {
                let command = Command::Version;
                return Ok(Args { command, store, log_level, iterations, socket, capability_file });
            }
            Long("socket") => socket = Some(PathBuf::from(parser.value().map_err(usage)?)),
            Long("capability-file") => capability_file = Some(PathBuf::from(parser.value().map_err(usage)?)),
            Long("store") => {
                let v = string_value(parser.value().map_err(usage)?, "--store")?;
                store = Some(Backend::parse(&v).ok_or_else(|| {
                    Error::Usage(format!("--store must be auto, keyring or file, not {v:?}"))
                })?);
            }
            Long("log-level") => {
                let v = string_value(parser.value().map_err(usage)?, "--log-level")?;
                log_level =
                    Level::parse(&v).ok_or_else(|| Error::Usage(format!("unknown log level {v:?}")))?;
            }
            Long("iterations") => {
                let v = string_value(parser.value().map_err(usage)?, "--iterations")?;
                iterations = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Error::Usage("--iterations needs a positive number".into()))?;
            }
            Value(v) => words.push(string_value(v, "argument")?),
            _ => return Err(usage(arg.unexpected())),
        }
    }
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let pb = |s: &str| provider_bucket(s);
    let command = match w.as_slice() {
        ["key", "set", name] => Command::KeySet(name.to_string()),
        ["key", "get", name] => Command::KeyGet(name.to_string()),
        ["key", "list"] => Command::KeyList,
        ["key", "rm", name] => Command::KeyRm(name.to_string()),
        ["token", "list"] => Command::TokenList,
        ["token", "show", spec] => {
            let (p, b) = pb(spec);
            Command::TokenShow(p, b)
        }
        ["token", "import", spec] => {
            let (p, b) = pb(spec);
            Command::TokenImport(p, b)
        }
        ["token", "rm", spec] => {
            let (p, b) = pb(spec);
            Command::TokenRm(p, b)
        }
        ["doctor"] => Command::Doctor,
        ["bench", "store"] => Command::BenchStore,
        ["bench", "daemon"] => Command::BenchDaemon,
        ["bench", "refresh"] => Command::BenchRefresh,
        ["status"] => Command::Status,
        ["get", spec] => {
            let (p, b) = pb(spec);
            Command::Get(p, b)
        }
        ["get-key", name] => Command::GetKey(name.to_string()),
        [] => return Err(Error::Usage("a command is needed (see --help)".into())),
        _ => return Err(Error::Usage(format!("unknown command: {} (see --help)", words.join(" ")))),
    };
    Ok(Args { command, store, log_level, iterations, socket, capability_file })
}

/// Runs `llxprt-cred` and returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    log::set_program("llxprt-cred");
    let args = match parse(args.into_iter().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("llxprt-cred: {e}");
            return EXIT_USAGE;
        }
    };
    log::set_max_level(args.log_level);
    match run(&args) {
        Ok(code) => code,
        Err(Error::Usage(m)) => {
            eprintln!("llxprt-cred: {m}");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("llxprt-cred: {e}");
            EXIT_FAILURE
        }
    }
}

fn out(text: impl AsRef<str>) -> Result<()> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{}", text.as_ref()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error::io("stdout", e)),
    }
}

fn run(args: &Args) -> Result<i32> {
    match &args.command {
        Command::Help => {
            print!("{HELP}");
            return Ok(EXIT_OK);
        }
        Command::Version => {
            out(format!("llxprt-cred {}", env!("CARGO_PKG_VERSION")))?;
            return Ok(EXIT_OK);
        }
        Command::Status => return status(args),
        Command::Get(p, b) => return daemon_get(args, p, b.as_deref()),
        Command::GetKey(name) => return daemon_get_key(args, name),
        Command::BenchDaemon => {
            super::bench_daemon::daemon(args.iterations * 50, None)?;
            return Ok(EXIT_OK);
        }
        Command::BenchRefresh => {
            super::bench_refresh::refresh(None)?;
            return Ok(EXIT_OK);
        }
        _ => {}
    }
    let backend = resolve_backend(args.store)?;
    let host = HostStore::open(backend)?;
    match &args.command {
        Command::KeySet(name) => {
            let value = read_secret_value(name)?;
            host.keys.save_key(name, &value)?;
            eprintln!("llxprt-cred: stored API key {name}");
        }
        Command::KeyGet(name) => match host.keys.get_key(name)? {
            Some(v) => out(v.expose())?,
            None => {
                eprintln!("llxprt-cred: no API key named {name}");
                return Ok(EXIT_FAILURE);
            }
        },
        Command::KeyList => {
            for name in host.keys.list_keys()? {
                out(name)?;
            }
        }
        Command::KeyRm(name) => {
            if !host.keys.delete_key(name)? {
                eprintln!("llxprt-cred: no API key named {name}");
                return Ok(EXIT_FAILURE);
            }
        }
        Command::TokenList => token_list(&host)?,
        Command::TokenShow(p, b) => match host.tokens.get_token(p, b.as_deref())? {
            Some(token) => {
                let shown = Value::Object(token.sanitize().into_map());
                out(serde_json::to_string_pretty(&shown).expect("JSON map serialises"))?;
            }
            None => {
                eprintln!("llxprt-cred: no token for {p}:{}", b.as_deref().unwrap_or(DEFAULT_BUCKET));
                return Ok(EXIT_FAILURE);
            }
        },
        Command::TokenImport(p, b) => token_import(&host, p, b.as_deref())?,
        Command::TokenRm(p, b) => host.tokens.remove_token(p, b.as_deref())?,
        Command::Doctor => return doctor(&host),
        Command::BenchStore => super::bench::store(&host, args.iterations)?,
        Command::Help
        | Command::Version
        | Command::Status
        | Command::Get(..)
        | Command::GetKey(_)
        | Command::BenchDaemon
        | Command::BenchRefresh => {
            unreachable!("handled above")
        }
    }
    Ok(EXIT_OK)
}

/// The client of the daemon named by `--socket` or the environment, with
/// the capability token from `--capability-file` or the environment.
fn daemon_client(args: &Args) -> Result<ProxySocketClient> {
    let socket = match &args.socket {
        Some(path) => path.clone(),
        None => client::socket_from(&client::process_env).ok_or_else(|| {
            Error::Connection(format!("no daemon named: set {} or pass --socket PATH", client::SOCKET_ENV))
        })?,
    };
    let token = match &args.capability_file {
        Some(file) => Some(capability::from_file(file)?),
        None => capability::from_lookup(&client::process_env)?,
    };
    Ok(ProxySocketClient::new(socket, token))
}

fn status(args: &Args) -> Result<i32> {
    let client = Arc::new(daemon_client(args)?);
    let version = client.connect()?;
    let tokens = ProxyTokenStore::new(client.clone());
    let keys = ProxyProviderKeyStorage::new(client.clone());
    out(format!("socket: {}", client.socket_path().display()))?;
    out(format!("protocol version: {version}"))?;
    let mut served = Vec::new();
    for provider in tokens.list_providers()? {
        for bucket in tokens.list_buckets(&provider)? {
            served.push(format!("{provider}:{bucket}"));
        }
    }
    out(format!("tokens: {}", listed(&served)))?;
    out(format!("api keys: {}", listed(&keys.list_keys()?)))?;
    client.close();
    Ok(EXIT_OK)
}

fn listed(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(" ") }
}

fn daemon_get(args: &Args, provider: &str, bucket: Option<&str>) -> Result<i32> {
    let tokens = ProxyTokenStore::new(Arc::new(daemon_client(args)?));
    match tokens.get_token(provider, bucket)? {
        Some(token) => {
            let shown = Value::Object(token.sanitize().into_map());
            out(serde_json::to_string_pretty(&shown).expect("JSON map serialises"))?;
            Ok(EXIT_OK)
        }
        None => {
            eprintln!(
                "llxprt-cred: the daemon has no token for {provider}:{}",
                bucket.unwrap_or(DEFAULT_BUCKET)
            );
            Ok(EXIT_FAILURE)
        }
    }
}

fn daemon_get_key(args: &Args, name: &str) -> Result<i32> {
    let keys = ProxyProviderKeyStorage::new(Arc::new(daemon_client(args)?));
    match keys.get_key(name)? {
        Some(key) => {
            out(key.expose())?;
            Ok(EXIT_OK)
        }
        None => {
            eprintln!("llxprt-cred: the daemon has no API key named {name}");
            Ok(EXIT_FAILURE)
        }
    }
}

fn read_secret_value(name: &str) -> Result<String> {
    if crate::sys::stdin_is_tty() {
        eprint!("Value for {name} (not shown): ");
        let line = crate::sys::read_line_without_echo().map_err(|e| Error::io("reading the terminal", e))?;
        eprintln!();
        return Ok(line);
    }
    let mut value = String::new();
    io::stdin().read_to_string(&mut value).map_err(|e| Error::io("reading stdin", e))?;
    Ok(value)
}

fn token_list(host: &HostStore) -> Result<()> {
    let now = now_unix_seconds();
    for provider in host.tokens.list_providers()? {
        for bucket in host.tokens.list_buckets(&provider)? {
            let line = match host.tokens.get_token(&provider, Some(&bucket))? {
                Some(t) => {
                    let left = t.expiry() - now;
                    let when = if left > 0.0 {
                        format!("expires in {}m", (left / 60.0).floor())
                    } else {
                        "expired".into()
                    };
                    let refresh = if t.refresh_token().is_some() { "refreshable" } else { "not refreshable" };
                    format!("{provider}:{bucket}\t{when}\t{refresh}")
                }
                None => format!("{provider}:{bucket}\tunreadable"),
            };
            out(line)?;
        }
    }
    Ok(())
}

/// Merges a token from stdin into the stored one under the refresh lock,
/// the same read-merge-save the daemon does, so concurrent imports never
/// lose each other's fields.
fn token_import(host: &HostStore, provider: &str, bucket: Option<&str>) -> Result<()> {
    let mut text = String::new();
    io::stdin().read_to_string(&mut text).map_err(|e| Error::io("reading stdin", e))?;
    let incoming = OAuthToken::from_json(&text)?;
    let lock = host.tokens.acquire_refresh_lock(provider, bucket, REFRESH_LOCK_WAIT)?;
    let merged = match host.tokens.get_token(provider, bucket)? {
        Some(stored) => OAuthToken::merge(&stored, &incoming),
        None => incoming,
    };
    host.tokens.save_token(provider, bucket, &merged)?;
    host.tokens.release_refresh_lock(lock)
}

fn doctor(host: &HostStore) -> Result<i32> {
    let mut problems = 0;
    out(format!("backend setting: {}", host.backend.name()))?;
    let live = match (&host.keyring, host.backend) {
        (None, _) => "encrypted file".to_owned(),
        (Some(k), _) => match k.status() {
            KeyringStatus::Ready => format!("OS keyring: {}", k.describe()),
            KeyringStatus::Unavailable(why) if host.backend == Backend::Keyring => {
                problems += 1;
                format!("none: the OS keyring is unavailable ({why}); fix it or use --store file")
            }
            KeyringStatus::Unavailable(why) => format!("encrypted file (OS keyring unavailable: {why})"),
            KeyringStatus::Latched(why) => format!("encrypted file ({why})"),
        },
    };
    out(format!("live backend: {live}"))?;
    let persists = if live.starts_with("OS keyring") {
        "yes (default keyring collection)".to_owned()
    } else {
        format!("yes, in {}", host.paths.data.display())
    };
    out(format!("persists: {persists}"))?;
    match host.machine_secret.get() {
        Some((_, crate::store::machine_secret::SecretSource::Keyring)) => {
            out("machine secret: in the OS keyring")?
        }
        Some((_, crate::store::machine_secret::SecretSource::File)) => {
            out(format!("machine secret: {}", host.machine_secret.file().display()))?
        }
        None => out("machine secret: none yet (created on the first fallback write)")?,
    }
    for (what, dir) in
        [("oauth locks", host.paths.oauth_lock_dir()), ("write locks", host.paths.credential_lock_dir())]
    {
        let report = lock_dir_report(&dir);
        if report.starts_with("problem") {
            problems += 1;
        }
        out(format!("{what}: {} ({report})", dir.display()))?;
    }
    out(format!("oauth fallback dir: {}", host.tokens.secure_store().dir().display()))?;
    out(format!("api key fallback dir: {}", host.keys.secure_store().dir().display()))?;
    Ok(if problems == 0 { EXIT_OK } else { EXIT_FAILURE })
}

fn lock_dir_report(dir: &std::path::Path) -> String {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return "not created yet".into(),
        Err(e) => return format!("problem: cannot read it: {e}"),
    };
    let held: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    if held.is_empty() {
        return "no lock held".into();
    }
    let age = |n: &String| {
        std::fs::metadata(dir.join(n)).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
    };
    let old: Vec<&String> =
        held.iter().filter(|n| age(n).is_some_and(|a| a > Duration::from_secs(300))).collect();
    if old.is_empty() {
        format!("{} held now", held.len())
    } else {
        format!(
            "problem: held for over 5 minutes: {}; if no llxprt process is running, delete them",
            old.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn commands_parse() {
        assert_eq!(p(&["key", "set", "K"]).unwrap().command, Command::KeySet("K".into()));
        assert_eq!(
            p(&["--store", "file", "token", "show", "codex:work"]).unwrap(),
            Args {
                command: Command::TokenShow("codex".into(), Some("work".into())),
                store: Some(Backend::File),
                log_level: Level::Warn,
                iterations: 200,
                socket: None,
                capability_file: None,
            }
        );
        assert_eq!(
            p(&["token", "rm", "anthropic"]).unwrap().command,
            Command::TokenRm("anthropic".into(), None)
        );
        assert_eq!(p(&["doctor", "--log-level", "debug"]).unwrap().log_level, Level::Debug);
        assert_eq!(p(&["--help", "bogus"]).unwrap().command, Command::Help);
    }

    #[test]
    fn daemon_commands_parse() {
        let a = p(&["--socket", "/s.sock", "--capability-file", "/c.env", "get", "codex:work"]).unwrap();
        assert_eq!(a.command, Command::Get("codex".into(), Some("work".into())));
        assert_eq!(a.socket, Some(PathBuf::from("/s.sock")));
        assert_eq!(a.capability_file, Some(PathBuf::from("/c.env")));
        assert_eq!(p(&["get", "anthropic"]).unwrap().command, Command::Get("anthropic".into(), None));
        assert_eq!(p(&["status"]).unwrap().command, Command::Status);
        assert_eq!(p(&["get-key", "OPENAI"]).unwrap().command, Command::GetKey("OPENAI".into()));
        for bad in [&["get"][..], &["get-key"], &["status", "x"], &["--socket"]] {
            assert!(matches!(p(bad), Err(Error::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn help_names_every_command_and_flag() {
        for word in [
            "key set",
            "key get",
            "key list",
            "key rm",
            "token list",
            "token show",
            "token import",
            "token rm",
            "doctor",
            "bench store",
            "bench daemon",
            "bench refresh",
            "status",
            "get PROVIDER",
            "get-key",
            "--store",
            "--socket",
            "--capability-file",
            "--log-level",
            "--iterations",
            "--help",
            "--version",
        ] {
            assert!(HELP.contains(word), "{word} is in the help");
        }
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for bad in
            [&[][..], &["key"], &["key", "set"], &["nope"], &["--store", "cloud", "doctor"], &["--bogus"]]
        {
            assert!(matches!(p(bad), Err(Error::Usage(_))), "{bad:?}");
        }
    }
}
