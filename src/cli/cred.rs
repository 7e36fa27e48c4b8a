/*!
`llxprt-cred`: the host-side companion. This file holds its parser and the
host-store commands (`key ...`, `token ...`, `doctor`, `bench`).
*/
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::time::Duration;

use lexopt::prelude::*;
use serde_json::Value;

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, provider_bucket, string_value, usage};
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

Options:
  --store auto|keyring|file    force a backend (default: $LLXPRT_CREDD_STORE, else auto)
  --log-level LEVEL            error, warn, info or debug (default: warn)
  --iterations N               bench: samples per measurement (default: 200)
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
}

/// Parses `llxprt-cred`'s arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut words: Vec<String> = Vec::new();
    let mut store = None;
    let mut log_level = Level::Warn;
    let mut iterations = 200;
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Short('h') | Long("help") => {
                return Ok(Args { command: Command::Help, store, log_level, iterations });
            }
            Short('V') | Long("version") => {
                return Ok(Args { command: Command::Version, store, log_level, iterations });
            }
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
        [] => return Err(Error::Usage("a command is needed (see --help)".into())),
        _ => return Err(Error::Usage(format!("unknown command: {} (see --help)", words.join(" ")))),
    };
    Ok(Args { command, store, log_level, iterations })
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
        Command::Help | Command::Version => unreachable!("handled above"),
    }
    Ok(EXIT_OK)
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
                iterations: 200
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
    fn bad_command_lines_are_usage_errors() {
        for bad in
            [&[][..], &["key"], &["key", "set"], &["nope"], &["--store", "cloud", "doctor"], &["--bogus"]]
        {
            assert!(matches!(p(bad), Err(Error::Usage(_))), "{bad:?}");
        }
    }
}
