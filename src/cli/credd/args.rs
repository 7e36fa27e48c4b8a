/*!
`llxprt-credd`'s command line: lexopt tokens → a typed [`Args`], with the
checks of which flags go together. Pure and unit-tested; usage errors are
[`Error::Usage`].
*/
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::prelude::*;

use super::FLAGS;
use crate::cli::flags::known;
use crate::cli::{string_value, usage};
use crate::error::{Error, Result};
use crate::log::Level;
use crate::server;
use crate::server::permit::Permits;
use crate::store::Backend;

/// How to announce the socket on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Announce {
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
pub(crate) struct Args {
    /// `--profile`.
    pub profile: Option<String>,
    /// `--allow`.
    pub allow: Vec<String>,
    /// `--allow-key`.
    pub allow_keys: Vec<String>,
    /// `--allow-uid`.
    pub allow_uids: Vec<u32>,
    /// `--permit`.
    pub permits: Permits,
    /// `--no-capability`.
    pub no_capability: bool,
    /// `--github-repo` (repeatable).
    pub github_repos: Vec<String>,
    /// `--no-github`.
    pub no_github: bool,
    /// `--inject`.
    pub inject: bool,
    /// `--proxy-socket`.
    pub proxy_socket: Option<PathBuf>,
    /// `--reveal` (repeatable).
    pub reveal: Vec<String>,
    /// `--proxy-max-body`.
    pub proxy_max_body: usize,
    /// `--allow-mcp`.
    pub allow_mcp: bool,
    /// `--providers-file`.
    pub providers_file: Option<PathBuf>,
    /// `--socket`.
    pub socket: Option<PathBuf>,
    /// `--store`.
    pub store: Option<Backend>,
    /// `--capability-file`.
    pub capability_file: Option<PathBuf>,
    /// `--capability-fd`.
    pub capability_fd: Option<i32>,
    /// `--ready-fd`.
    pub ready_fd: Option<i32>,
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--rate-limit` (0 = off).
    pub rate_limit: u32,
    /// `--daemon-rate-limit` (0 = off).
    pub daemon_rate_limit: u32,
    /// `--log-level`.
    pub log_level: Level,
    /// `--log-file`.
    pub log_file: Option<PathBuf>,
    /// `--log-stderr`.
    pub log_stderr: bool,
    /// `-D`.
    pub foreground: bool,
    /// `-s`, `-c`, `--print-socket`.
    pub announce: Announce,
    /// `-k`.
    pub kill: bool,
    /// Exec mode's command (everything after `--` or the first operand).
    pub command: Vec<OsString>,
    /// `--help`.
    pub help: bool,
    /// `--version`.
    pub version: bool,
}

fn number<T: std::str::FromStr>(parser: &mut lexopt::Parser, flag: &str) -> Result<T> {
    let v = string_value(parser.value().map_err(usage)?, flag)?;
    v.parse().map_err(|_| Error::Usage(format!("{flag} needs a number, not {v:?}")))
}

/// Parses the arguments (without the program name). The flags are those
/// of [`FLAGS`]; a short flag with a long name arrives as the long name.
pub(crate) fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
    let mut a = Args {
        profile: None,
        allow: vec![],
        allow_keys: vec![],
        allow_uids: vec![],
        permits: Permits::read_only(),
        no_capability: false,
        github_repos: vec![],
        no_github: false,
        inject: false,
        proxy_socket: None,
        reveal: vec![],
        proxy_max_body: crate::inject::proxy::DEFAULT_MAX_BODY,
        allow_mcp: false,
        providers_file: None,
        socket: None,
        store: None,
        capability_file: None,
        capability_fd: None,
        ready_fd: None,
        max_connections: server::DEFAULT_MAX_CONNECTIONS,
        rate_limit: server::DEFAULT_RATE_LIMIT_PER_SECOND,
        daemon_rate_limit: server::DEFAULT_DAEMON_RATE_PER_SECOND,
        log_level: Level::Info,
        log_file: None,
        log_stderr: false,
        foreground: false,
        announce: Announce::None,
        kill: false,
        command: vec![],
        help: false,
        version: false,
    };
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(usage)? {
        match known(FLAGS, arg)? {
            Long("help") => a.help = true,
            Long("version") => a.version = true,
            Long("profile") => a.profile = Some(string_value(parser.value().map_err(usage)?, "--profile")?),
            Long("allow") => a.allow.push(string_value(parser.value().map_err(usage)?, "--allow")?),
            Long("allow-key") => {
                a.allow_keys.push(string_value(parser.value().map_err(usage)?, "--allow-key")?)
            }
            Long("allow-uid") => a.allow_uids.push(number(&mut parser, "--allow-uid")?),
            Long("permit") => a.permits.add(&string_value(parser.value().map_err(usage)?, "--permit")?)?,
            Long("no-capability") => a.no_capability = true,
            Long("no-github") => a.no_github = true,
            Long("github-repo") => {
                let repo = string_value(parser.value().map_err(usage)?, "--github-repo")?;
                let valid = crate::protocol::github::validate(
                    crate::protocol::github::spec("label.list").expect("in the catalogue"),
                    serde_json::json!({ "repo": repo }).as_object().expect("an object"),
                );
                if valid.is_err() {
                    return Err(Error::Usage(format!("--github-repo {repo:?}: not OWNER/REPO")));
                }
                a.github_repos.push(repo);
            }
            Long("providers-file") => a.providers_file = Some(parser.value().map_err(usage)?.into()),
            Long("socket") => a.socket = Some(parser.value().map_err(usage)?.into()),
            Long("store") => {
                let v = string_value(parser.value().map_err(usage)?, "--store")?;
                a.store = Some(Backend::parse(&v).ok_or_else(|| {
                    Error::Usage(format!("--store must be auto, keyring or file, not {v:?}"))
                })?);
            }
            Long("capability-file") => a.capability_file = Some(parser.value().map_err(usage)?.into()),
            Long("capability-fd") => a.capability_fd = Some(number(&mut parser, "--capability-fd")?),
            Long("ready-fd") => a.ready_fd = Some(number(&mut parser, "--ready-fd")?),
            Long("max-connections") => a.max_connections = number(&mut parser, "--max-connections")?,
            Long("rate-limit") => a.rate_limit = number(&mut parser, "--rate-limit")?,
            Long("daemon-rate-limit") => a.daemon_rate_limit = number(&mut parser, "--daemon-rate-limit")?,
            Long("log-level") => {
                let v = string_value(parser.value().map_err(usage)?, "--log-level")?;
                a.log_level =
                    Level::parse(&v).ok_or_else(|| Error::Usage(format!("unknown log level {v:?}")))?;
            }
            Long("log-file") => a.log_file = Some(parser.value().map_err(usage)?.into()),
            Long("log-stderr") => a.log_stderr = true,
            Long("inject") => a.inject = true,
            Long("proxy-socket") => a.proxy_socket = Some(parser.value().map_err(usage)?.into()),
            Long("reveal") => {
                let v = string_value(parser.value().map_err(usage)?, "--reveal")?;
                if !crate::store::names::is_valid_provider_name(&v) {
                    return Err(Error::Usage(format!("--reveal needs a provider name, not {v:?}")));
                }
                a.reveal.push(v);
            }
            Long("proxy-max-body") => a.proxy_max_body = number(&mut parser, "--proxy-max-body")?,
            Long("allow-mcp") => a.allow_mcp = true,
            Long("foreground") => a.foreground = true,
            Short('s') => a.announce = Announce::Sh,
            Short('c') => a.announce = Announce::Csh,
            Long("print-socket") => a.announce = Announce::Path,
            Short('k') => a.kill = true,
            Value(program) => {
                a.command.push(program);
                a.command.extend(parser.raw_args().map_err(usage)?);
            }
            other => return Err(usage(other.unexpected())),
        }
    }
    if a.help || a.version {
        return Ok(a);
    }
    if a.kill {
        if a.profile.is_some() || !a.command.is_empty() || a.announce == Announce::Path {
            return Err(Error::Usage("-k takes only -s or -c".into()));
        }
        return Ok(a);
    }
    if !a.command.is_empty() && a.announce != Announce::None {
        return Err(Error::Usage("-s, -c and --print-socket do not mix with a COMMAND".into()));
    }
    if a.profile.is_none() && a.allow.is_empty() && a.allow_keys.is_empty() {
        return Err(Error::Usage("--profile NAME is required (or --allow/--allow-key)".into()));
    }
    if !a.inject && (a.proxy_socket.is_some() || !a.reveal.is_empty() || a.allow_mcp) {
        return Err(Error::Usage("--proxy-socket, --reveal and --allow-mcp go with --inject".into()));
    }
    if a.no_capability && (a.capability_file.is_some() || a.capability_fd.is_some()) {
        return Err(Error::Usage(
            "--no-capability does not mix with --capability-file or --capability-fd".into(),
        ));
    }
    for (flag, fd) in [("--ready-fd", a.ready_fd), ("--capability-fd", a.capability_fd)] {
        if fd.is_some_and(|fd| fd <= 2) {
            return Err(Error::Usage(format!(
                "{flag}: descriptors 0, 1 and 2 cannot be used; pass another (e.g. {flag} 3 3>&1)"
            )));
        }
    }
    if a.ready_fd.is_some() && a.ready_fd == a.capability_fd {
        return Err(Error::Usage(
            "--ready-fd and --capability-fd name the same descriptor; the readiness reader would \
             receive the capability token"
                .into(),
        ));
    }
    if a.no_github
        && (!a.github_repos.is_empty() || a.permits.allows(crate::protocol::message::OpClass::GithubWrite))
    {
        return Err(Error::Usage(
            "--no-github does not mix with --github-repo or --permit github-write".into(),
        ));
    }
    if a.log_stderr && a.log_file.is_some() {
        return Err(Error::Usage("--log-stderr does not mix with --log-file".into()));
    }
    if a.max_connections == 0 {
        return Err(Error::Usage("--max-connections must be at least 1".into()));
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::credd::help;
    use crate::cli::flags::assert_parser_takes_the_table;

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
        assert!(p(&["--profile", "x", "-D", "--max-connections", "zero"]).is_err());
        assert!(p(&["--help"]).unwrap().help);
        assert_eq!(p(&["--allow-key", "K", "-D", "-c"]).unwrap().announce, Announce::Csh);
        let a = p(&["--allow-key", "K", "--ready-fd", "5", "--capability-fd", "6", "--", "sh", "-c", "x"])
            .unwrap();
        assert_eq!((a.ready_fd, a.capability_fd), (Some(5), Some(6)));
        assert_eq!(a.command, ["sh", "-c", "x"].map(OsString::from));
        assert_eq!(
            p(&["--allow-key", "K", "true", "--profile"]).unwrap().command.len(),
            2,
            "all after the command is its"
        );
        assert!(p(&["-k"]).unwrap().kill);
        assert!(p(&["-k", "--profile", "x"]).is_err());
        assert!(p(&["--allow-key", "K", "-s", "--", "true"]).is_err());
        for flag in
            ["--ready-fd", "--capability-fd", "-k", "--print-socket", "-D", "--log-file", "--allow-uid"]
        {
            assert!(help().contains(flag), "{flag} in --help");
        }
        assert_eq!(p(&["--allow-key", "K", "-D", "--print-socket"]).unwrap().announce, Announce::Path);
    }

    #[test]
    fn the_parser_takes_every_flag_of_the_table_and_no_other() {
        assert_parser_takes_the_table(FLAGS, |line| p(line).map(drop));
    }
}
