/*!
`llxprt-cred`'s command line: lexopt tokens → a typed [`Args`] with the
[`Command`] to run. Pure and unit-tested; usage errors are
[`Error::Usage`].
*/
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

use super::FLAGS;
use crate::cli::flags::known;
use crate::cli::{provider_bucket, string_value, usage};
use crate::error::{Error, Result};
use crate::log::Level;
use crate::oauth::FlowType;
use crate::store::Backend;

/// A parsed `llxprt-cred` command.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    /// `key set NAME`
    KeySet(String),
    /// `refresh P[:B]` through the daemon
    Refresh(String, Option<String>),
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
    /// `status`
    Status,
    /// `get P[:B]`
    Get(String, Option<String>),
    /// `get-key NAME`
    GetKey(String),
    /// `login P[:B]`
    Login(String, Option<String>),
    /// `logout P[:B]`
    Logout(String, Option<String>),
    /// `--help`, `help`, or `COMMAND --help` / `help COMMAND` (its part
    /// of the help)
    Help(Option<String>),
    /// `--version`
    Version,
}

/// Parsed command line.
#[derive(Debug, PartialEq)]
pub(crate) struct Args {
    /// What to do.
    pub command: Command,
    /// `--store`.
    pub store: Option<Backend>,
    /// `--log-level`.
    pub log_level: Level,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--capability-file`.
    pub capability_file: Option<PathBuf>,
    /// `--profile` (doctor).
    pub profile: Option<String>,
    /// `--flow` (login).
    pub flow: Option<FlowType>,
}

/// Parses `llxprt-cred`'s arguments (without the program name). The flags
/// are those of [`FLAGS`]; a short flag with a long name arrives as the
/// long name; the commands are those of [`COMMANDS`](super::COMMANDS).
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut words: Vec<String> = Vec::new();
    let mut store = None;
    let mut log_level = Level::Warn;
    let mut socket = None;
    let mut capability_file = None;
    let mut profile = None;
    let mut flow = None;
    let mut bucket: Option<String> = None;
    let mut early = None;
    while let Some(arg) = parser.next().map_err(usage)? {
        match known(FLAGS, arg)? {
            Long("help") => {
                early = Some(Command::Help(words.first().cloned()));
                break;
            }
            Long("version") => {
                early = Some(Command::Version);
                break;
            }
            Long("bucket") => bucket = Some(string_value(parser.value().map_err(usage)?, "--bucket")?),
            Long("flow") => {
                let v = string_value(parser.value().map_err(usage)?, "--flow")?;
                flow = Some(FlowType::parse(&v).ok_or_else(|| {
                    Error::Usage(format!(
                        "--flow must be pkce_redirect, device_code or browser_redirect, not {v:?}"
                    ))
                })?);
            }
            Long("profile") => profile = Some(string_value(parser.value().map_err(usage)?, "--profile")?),
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
            Value(v) => words.push(string_value(v, "argument")?),
            other => return Err(usage(other.unexpected())),
        }
    }
    if let Some(command) = early {
        return Ok(Args { command, store, log_level, socket, capability_file, profile, flow });
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
        ["status"] => Command::Status,
        ["get", spec] => {
            let (p, b) = pb(spec);
            Command::Get(p, b)
        }
        ["get-key", name] => Command::GetKey(name.to_string()),
        ["refresh", spec] => {
            let (p, b) = pb(spec);
            Command::Refresh(p, b)
        }
        ["help"] => Command::Help(None),
        ["help", topic, ..] => Command::Help(Some(topic.to_string())),
        ["login", spec] | ["logout", spec] => {
            let (p, b) = pb(spec);
            let b = match (b, bucket.take()) {
                (Some(b), Some(flag)) if b != flag => {
                    return Err(Error::Usage(format!("{spec} and --bucket {flag} name different buckets")));
                }
                (b, flag) => flag.or(b),
            };
            if w[0] == "login" { Command::Login(p, b) } else { Command::Logout(p, b) }
        }
        [] => return Err(Error::Usage("a command is needed (see --help)".into())),
        ["key"] => {
            return Err(Error::Usage("key needs a subcommand: set NAME, get NAME, list or rm NAME".into()));
        }
        ["key", sub @ ("set" | "get" | "rm")] => return Err(Error::Usage(format!("key {sub} needs NAME"))),
        ["token"] => {
            return Err(Error::Usage(
                "token needs a subcommand: list, show, import or rm PROVIDER[:BUCKET]".into(),
            ));
        }
        ["token", sub @ ("show" | "import" | "rm")] => {
            return Err(Error::Usage(format!("token {sub} needs PROVIDER[:BUCKET]")));
        }
        [cmd @ ("get" | "refresh" | "login" | "logout")] => {
            return Err(Error::Usage(format!("{cmd} needs PROVIDER[:BUCKET]")));
        }
        ["get-key"] => return Err(Error::Usage("get-key needs NAME".into())),
        _ => return Err(Error::Usage(format!("unknown command: {} (see --help)", words.join(" ")))),
    };
    if bucket.is_some() {
        return Err(Error::Usage("--bucket goes with login or logout".into()));
    }
    if flow.is_some() && !matches!(command, Command::Login(..)) {
        return Err(Error::Usage("--flow goes with login".into()));
    }
    if profile.is_some() && command != Command::Doctor {
        return Err(Error::Usage("--profile goes with doctor".into()));
    }
    Ok(Args { command, store, log_level, socket, capability_file, profile, flow })
}

#[cfg(test)]
mod tests {
    use super::super::COMMANDS;
    use super::*;
    use crate::cli::flags::{assert_parser_takes_the_table, sample};

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
                socket: None,
                capability_file: None,
                profile: None,
                flow: None,
            }
        );
        assert_eq!(
            p(&["token", "rm", "anthropic"]).unwrap().command,
            Command::TokenRm("anthropic".into(), None)
        );
        assert_eq!(p(&["doctor", "--log-level", "debug"]).unwrap().log_level, Level::Debug);
        assert_eq!(p(&["--help", "bogus"]).unwrap().command, Command::Help(None));
        assert_eq!(p(&["key", "--help"]).unwrap().command, Command::Help(Some("key".into())));
        assert_eq!(p(&["help", "token", "rm"]).unwrap().command, Command::Help(Some("token".into())));
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
    fn login_and_logout_parse() {
        let a = p(&["login", "codex", "--bucket", "work", "--flow", "device_code"]).unwrap();
        assert_eq!(
            (a.command, a.flow),
            (Command::Login("codex".into(), Some("work".into())), Some(FlowType::DeviceCode))
        );
        assert_eq!(
            p(&["login", "anthropic:w"]).unwrap().command,
            Command::Login("anthropic".into(), Some("w".into()))
        );
        assert_eq!(p(&["logout", "codex"]).unwrap().command, Command::Logout("codex".into(), None));
        assert_eq!(
            p(&["logout", "codex:a", "--bucket", "a"]).unwrap().command,
            Command::Logout("codex".into(), Some("a".into()))
        );
        for bad in [
            &["login"][..],
            &["login", "codex:a", "--bucket", "b"],
            &["login", "codex", "--flow", "magic"],
            &["logout", "codex", "--flow", "device_code"],
            &["status", "--bucket", "b"],
        ] {
            assert!(matches!(p(bad), Err(Error::Usage(_))), "{bad:?}");
        }
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for bad in [
            &[][..],
            &["key"],
            &["key", "set"],
            &["nope"],
            &["--store", "cloud", "doctor"],
            &["--bogus"],
            // the benchmarks and their flags live in `cargo bench --bench credd`
            &["bench", "store"],
            &["doctor", "--iterations", "5"],
            &["doctor", "--minutes", "1"],
        ] {
            assert!(matches!(p(bad), Err(Error::Usage(_))), "{bad:?}");
        }
    }

    /// The table's usage of a parsed command (none for help and version).
    /// The match has an arm for each command: a new one needs its line.
    fn usage_of(command: &Command) -> Option<&'static str> {
        Some(match command {
            Command::KeySet(_) => "key set NAME",
            Command::KeyGet(_) => "key get NAME",
            Command::KeyList => "key list",
            Command::KeyRm(_) => "key rm NAME",
            Command::TokenList => "token list",
            Command::TokenShow(..) => "token show PROVIDER[:BUCKET]",
            Command::TokenImport(..) => "token import PROVIDER[:BUCKET]",
            Command::TokenRm(..) => "token rm PROVIDER[:BUCKET]",
            Command::Doctor => "doctor [--profile NAME]",
            Command::Status => "status",
            Command::Get(..) => "get PROVIDER[:BUCKET]",
            Command::GetKey(_) => "get-key NAME",
            Command::Refresh(..) => "refresh PROVIDER[:BUCKET]",
            Command::Login(..) => "login PROVIDER[:BUCKET]",
            Command::Logout(..) => "logout PROVIDER[:BUCKET]",
            Command::Help(_) | Command::Version => return None,
        })
    }

    #[test]
    fn the_parser_takes_every_command_of_the_table_and_no_other() {
        let mut seen = std::collections::BTreeSet::new();
        for (_, commands) in COMMANDS {
            for c in *commands {
                // The words and the operands, without the optional
                // `[--flag VALUE]` groups.
                let mut optional = false;
                let mut line: Vec<&str> = Vec::new();
                for w in c.usage.split_whitespace() {
                    optional |= w.starts_with('[');
                    if !optional {
                        line.push(if w.starts_with(|c: char| c.is_ascii_uppercase()) {
                            sample(w)
                        } else {
                            w
                        });
                    }
                    optional &= !w.ends_with(']');
                }
                let parsed = p(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
                assert_eq!(usage_of(&parsed.command), Some(c.usage), "{line:?}");
                assert!(seen.insert(c.usage), "{} is in the table twice", c.usage);
            }
        }
        // usage_of names 15 commands: the table has each of them.
        assert_eq!(seen.len(), 15, "{seen:?}");
    }

    #[test]
    fn the_parser_takes_every_flag_of_the_table_and_no_other() {
        assert_parser_takes_the_table(FLAGS, |line| p(line).map(drop));
    }
}
