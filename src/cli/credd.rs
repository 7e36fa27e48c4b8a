/*!
`llxprt-credd`: parse the command line, set up the store, the scope, the
socket and the capability file, serve until SIGINT/SIGTERM, clean up.

The first thing `run` does is take the descriptors it inherited
(`--ready-fd`, `--capability-fd`, a socket-activation listener): before
the daemon opens anything, a number on the command line can only name
what the caller passed. That is the module's one `unsafe` block.
*/
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use super::lifecycle::{self, Readiness};
use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, string_value, usage};
use crate::error::{Error, Result};
use crate::log::{self, Level};
use crate::profile::{self, Scope};
use crate::secret::SecretString;
use crate::server::permit::Permits;
use crate::server::{self, Server, ServerConfig, socket};
use crate::store::{Backend, HostStore, resolve_backend};
use crate::sys::{self, UserId};

/// The help text (kept in step with the parser and the man page by tests).
pub const HELP: &str = "\
llxprt-credd - credential broker for llxprt-code sandboxes

Usage: llxprt-credd --profile NAME [OPTIONS] [-- COMMAND [ARGS...]]
       llxprt-credd -k [-s | -c]

Serves the profile's OAuth access tokens (never refresh tokens) and API keys
on a private Unix socket. Without -D or a COMMAND it goes to the background
once it listens and prints shell commands setting LLXPRT_CREDENTIAL_SOCKET
(like ssh-agent). With a COMMAND it runs the command with the socket in its
environment and exits with the command's status.

Options:
  --profile NAME          serve what llxprt-code profile NAME uses
  --allow PROVIDER[:BUCKET]
                          also serve this provider (all buckets) or bucket
  --allow-key NAME        also serve this API key
  --allow-uid UID         also accept connections from this uid (a POSIX ACL lets it reach the socket)
  --permit CLASS[,CLASS]  also let the sandbox refresh (refresh_token), log in
                          (oauth_*), write (save_token, remove_token) or change things on
                          GitHub (github-write); default: read only
  --github-repo OWNER/REPO  the github op serves only this repository (repeatable)
  --no-github             turn the github op off
  --inject                serve sentinels, never real tokens or keys; the real credential is
                          added on the host to each request sent through the proxy socket
  --proxy-socket PATH     inject mode's HTTP proxy socket (default: beside the socket,
                          NAME.proxy.sock)
  --reveal PROVIDER       inject mode: serve PROVIDER's real tokens (repeatable; logged)
  --proxy-max-body N      inject mode: request body limit in bytes (default 33554432)
  --allow-mcp             inject mode: let bodies name remote tool servers (mcp_servers,
                          tools of type mcp)
  --socket PATH           listen here (default: $XDG_RUNTIME_DIR/llxprt-cred/, else
                          $TMPDIR/llxprt-cred-UID/; file llxprt-cred-PID-NONCE.sock)
  --store auto|keyring|file
                          force a store backend (default: $LLXPRT_CREDD_STORE, else auto)
  --capability-file PATH  write the capability token to PATH as an env file
  --capability-fd N       write the capability token and a newline to descriptor N
  --no-capability         require no capability token (default: one is required; without
                          the two flags above it goes to $XDG_RUNTIME_DIR/llxprt-cred-capability/)
  --providers-file PATH   OAuth endpoints and clients from PATH (default: $LLXPRT_CREDD_PROVIDERS_FILE)
  --max-connections N     connection cap (default 64)
  --rate-limit N          requests per second per client process, 0 = off (default 60)
  --daemon-rate-limit N   requests per second for all clients together, 0 = off
                          (default 600)
  --log-level LEVEL       error, warn, info or debug (default: info)
  --log-file PATH         append log lines to PATH instead of stderr (with a COMMAND the
                          default is $XDG_STATE_HOME/llxprt-code/credd.log, off the terminal)
  --log-stderr            log to stderr even with a COMMAND
  --ready-fd N            when listening, write the socket path and a newline to descriptor N
  -D, --foreground        stay in the foreground
  -s                      print Bourne shell commands setting LLXPRT_CREDENTIAL_SOCKET
  -c                      print C shell commands setting LLXPRT_CREDENTIAL_SOCKET
  --print-socket          print the socket path only
  -k                      stop the daemon named by LLXPRT_CREDD_PID
  -h, --help              print this help
  -V, --version           print the version

The sandbox is untrusted: by default it may only read what the profile
names; a capability token is required; a profile that names nothing is
refused. Signals: SIGINT/SIGTERM stop it (5 s grace, socket removed);
SIGHUP re-reads the profile and applies it only where it narrows the scope
(in exec mode all three go to the command instead).
Socket activation: with -D or a COMMAND, when LISTEN_PID is this process,
the listening socket on descriptor 3 (LISTEN_FDS) is served instead.
OAuth tokens are refreshed on the host (near expiry and before expiry;
on request with --permit refresh). Providers: claudecode (the Claude
subscription; anthropic for stores of older llxprt-code) and codex, then
the providers file, then LLXPRT_CREDD_<PROVIDER>_TOKEN_URL and
LLXPRT_CREDD_<PROVIDER>_CLIENT_ID. With --permit login, OAuth logins run on
the host for the sandbox (claudecode code-paste, Codex browser redirect and
device code) and may fill an empty bucket or renew the same account only;
login sessions last 10 minutes ($LLXPRT_OAUTH_SESSION_TIMEOUT_SECONDS).
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

/// Parses the arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
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
        match arg {
            Short('h') | Long("help") => a.help = true,
            Short('V') | Long("version") => a.version = true,
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
            Short('D') | Long("foreground") => a.foreground = true,
            Short('s') => a.announce = Announce::Sh,
            Short('c') => a.announce = Announce::Csh,
            Long("print-socket") => a.announce = Announce::Path,
            Short('k') => a.kill = true,
            Value(program) => {
                a.command.push(program);
                a.command.extend(parser.raw_args().map_err(usage)?);
            }
            _ => return Err(usage(arg.unexpected())),
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
    let result = if args.kill { kill(&args) } else { run(&args) };
    log::flush();
    match result {
        Ok(code) => code,
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

/// How long info lines (the audit) may wait to be written together:
/// [`LOG_FLUSH_MS`](crate::log::LOG_FLUSH_MS) by default,
/// `LLXPRT_CREDD_LOG_FLUSH_MS` when set (0: each line at once).
fn log_flush_interval() -> std::time::Duration {
    let ms = std::env::var("LLXPRT_CREDD_LOG_FLUSH_MS").ok().and_then(|v| v.parse::<u64>().ok());
    std::time::Duration::from_millis(ms.unwrap_or(log::LOG_FLUSH_MS).min(1000))
}

/// `-k`: stop the daemon named by the environment, print the unset commands.
fn kill(args: &Args) -> Result<i32> {
    let pid = lifecycle::kill_from_env()?;
    let csh = match args.announce {
        Announce::Csh => true,
        Announce::Sh => false,
        _ => shell_is_csh(),
    };
    print!("{}", lifecycle::unset_text(csh, pid));
    Ok(EXIT_OK)
}

/// Whether `$SHELL` is a C shell (ssh-agent's guess when neither -s nor -c
/// is given).
fn shell_is_csh() -> bool {
    std::env::var("SHELL").is_ok_and(|s| s.ends_with("csh"))
}

fn write_capability_file(path: &std::path::Path, token: &SecretString) -> Result<()> {
    let content = zeroize::Zeroizing::new(format!("LLXPRT_CAPABILITY_TOKEN={}\n", token.expose()));
    crate::store::secure::atomic_write(path, content.as_bytes())
        .map_err(|e| Error::io(format!("cannot write capability file {}", path.display()), e))
}

/// Writes the bare token and a newline (the content llxprt-code's client
/// reads from `LLXPRT_CAPABILITY_FD`) to descriptor `fd` and closes it.
fn write_capability_fd(mut file: File, fd: i32, token: &SecretString) -> Result<()> {
    let what = || format!("cannot write the capability token to descriptor {fd}");
    let line = zeroize::Zeroizing::new(format!("{}\n", token.expose()));
    file.write_all(line.as_bytes()).map_err(|e| Error::io(what(), e))
}

/// Where an exec-mode daemon logs by default:
/// `$XDG_STATE_HOME/llxprt-code/credd.log` (else under `~/.local/state`),
/// its directory made 0700 when missing.
fn exec_log_path() -> Result<PathBuf> {
    let dir = socket::state_dir("llxprt-code").ok_or_else(|| {
        Error::Usage("neither XDG_STATE_HOME nor HOME is set: use --log-file or --log-stderr".into())
    })??;
    Ok(dir.join("credd.log"))
}

/// Sends the log to `--log-file` ([`log::set_file_at`]: never through a
/// symbolic link, close-on-exec, mode 0600, rotated at 10 MiB).
fn open_log_file(path: &std::path::Path) -> Result<()> {
    log::set_file_at(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            Error::Usage(format!("--log-file {} is a symbolic link; name the file itself", path.display()))
        } else {
            Error::io(format!("cannot open log file {}", path.display()), e)
        }
    })
}

fn absolute(path: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(format!("bad path {}", path.display()), e))
}

/// Where the scope comes from: the profile and the `--allow`/`--allow-key`
/// flags. Read at start and again on SIGHUP.
struct ScopeSource {
    profile: Option<String>,
    allow: Vec<String>,
    keys: Vec<String>,
    profiles_dir: PathBuf,
}

impl ScopeSource {
    fn load(&self) -> Result<Scope> {
        let mut scope = match &self.profile {
            Some(name) => profile::load_scope(&self.profiles_dir, name)?,
            None => Scope::default(),
        };
        for spec in &self.allow {
            scope.allow(spec)?;
        }
        for key in &self.keys {
            scope.allow_key(key)?;
        }
        Ok(scope)
    }
}

/// Says so (on stderr as well when the log goes to a file) when another
/// daemon of this user serves the same profile file: both work, but one
/// was probably meant to be stopped.
fn warn_of_another_daemon(name: &str, logs_to_file: bool) {
    let Ok(paths) = crate::store::paths::Paths::from_env() else { return };
    let file = profile::profile_file(&paths.profiles_dir(), name);
    let Some(pid) = lifecycle::daemons_serving(&file).first().copied() else { return };
    let text = format!(
        "another llxprt-credd (pid {pid}) already serves profile {}; both work, but to keep one \
         stop the other: LLXPRT_CREDD_PID={pid} llxprt-credd -k",
        log::printable(name)
    );
    crate::log_warn!("{text}");
    if logs_to_file {
        eprintln!("llxprt-credd: warning: {text}");
    }
}

/// Inject mode's settings and its bound proxy socket: `--proxy-socket`,
/// else `NAME.proxy.sock` beside the credential socket (one directory
/// mount gives a container both). The test overrides of upstream origins
/// must be loopback, or the daemon does not start.
fn inject_config(
    args: &Args,
    socket_path: &std::path::Path,
    routes: &[crate::oauth::provider::RouteEntry],
    cleanup: &mut Cleanup,
) -> Result<(Option<crate::inject::InjectConfig>, Option<std::os::unix::net::UnixListener>)> {
    if !args.inject {
        return Ok((None, None));
    }
    let path = match &args.proxy_socket {
        Some(p) => absolute(p)?,
        None => {
            let stem = socket_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            socket_path.with_file_name(format!("{stem}.proxy.sock"))
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        socket::ensure_private_dir(dir)?;
    }
    crate::inject::routes::install(routes);
    for route in routes {
        crate::log_info!(
            "inject: route {} ({} API{}) for the keys of {}",
            route.host,
            route.api,
            route.prefix,
            route.providers.join(", ")
        );
    }
    let overrides =
        crate::inject::InjectConfig::overrides_from(|name| std::env::var(name).ok()).map_err(Error::Usage)?;
    for (host, origin) in &overrides {
        crate::log_warn!(
            "inject: requests for {host} go to http://{}:{} (a test override)",
            origin.host,
            origin.port
        );
    }
    for provider in &args.reveal {
        crate::log_warn!("inject: --reveal {provider}: the sandbox gets {provider}'s real access tokens");
    }
    let listener = socket::bind(&path)?;
    cleanup.proxy_socket = Some(path.clone());
    if !args.allow_uids.is_empty() {
        let uids: Vec<UserId> = args.allow_uids.iter().map(|&u| UserId(u)).collect();
        socket::admit_uids(&path, &uids)?;
    }
    crate::log_info!("inject mode: sentinels only; proxy socket {}", path.display());
    let config = crate::inject::InjectConfig {
        proxy_socket: path,
        max_body: args.proxy_max_body,
        allow_mcp: args.allow_mcp,
        reveal: args.reveal.iter().cloned().collect(),
        overrides,
    };
    Ok((Some(config), Some(listener)))
}

/// Background mode: fork before any thread exists. The parent waits until
/// the child says it is ready (or dies) and exits; the child goes on in a
/// new session. Returns the readiness pipe in the child, or the exit code
/// in the parent.
fn daemonize() -> Result<std::result::Result<File, i32>> {
    let (mut reader, writer) = sys::pipe().map_err(|e| Error::io("cannot create a pipe", e))?;
    match sys::fork().map_err(|e| Error::io("cannot fork", e))? {
        sys::Forked::Parent(child) => {
            drop(writer);
            let mut line = Vec::new();
            let _ = reader.read_to_end(&mut line);
            if line.ends_with(b"\n") {
                return Ok(Err(EXIT_OK));
            }
            // The child failed before it was ready and has said why on stderr.
            let code = sys::wait_child(child).map_err(|e| Error::io("cannot wait for the daemon", e))?;
            Ok(Err(if code == EXIT_OK { EXIT_FAILURE } else { code }))
        }
        sys::Forked::Child => {
            log::forget_pid();
            drop(reader);
            sys::setsid().map_err(|e| Error::io("cannot start a session", e))?;
            Ok(Ok(writer))
        }
    }
}

/// The GitHub broker's settings: bodies go to a private directory beside
/// the capability file's (never the tmpdir or the socket's directory, which
/// a sandbox may see).
fn github_config(args: &Args, cwd: PathBuf, cleanup: &mut Cleanup) -> Result<crate::github::GithubConfig> {
    let mut config = crate::github::GithubConfig {
        enabled: !args.no_github,
        repos: args.github_repos.clone(),
        cwd,
        ..Default::default()
    };
    if !config.enabled {
        return Ok(config);
    }
    match socket::default_capability_dir() {
        Ok(dir) => {
            if dir.temporary {
                cleanup.dirs.push(dir.path.clone());
            }
            config.body_dir = Some(dir.path);
        }
        Err(e) => {
            crate::log_warn!("github: no private directory for body files ({e}); operations with a body fail")
        }
    }
    if let Some(ms) = std::env::var("LLXPRT_CREDD_GH_TIMEOUT_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        config.call_timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(scale) = std::env::var(crate::oauth::TIME_SCALE_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
    {
        config.time_scale = scale;
    }
    Ok(config)
}

/// Descriptors inherited from whoever started the daemon.
struct Inherited {
    activated: Option<socket::Activated>,
    ready: Option<File>,
    capability: Option<File>,
}

/// Checks that `fd` (named by `flag`) is an open descriptor the daemon can
/// write a line to: a pipe, a socket or a regular file, open for writing.
fn check_inherited(flag: &str, fd: i32) -> Result<()> {
    let info = sys::fd_info(fd).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBADF) {
            Error::Usage(format!("{flag} {fd}: no descriptor {fd} was passed in (e.g. {flag} {fd} {fd}>&1)"))
        } else {
            Error::io(format!("{flag} {fd}"), e)
        }
    })?;
    if ![libc::S_IFIFO, libc::S_IFSOCK, libc::S_IFREG].contains(&info.file_type) {
        return Err(Error::Usage(format!(
            "{flag} {fd}: descriptor {fd} is {}; pass a pipe, a socket or a file",
            info.type_name()
        )));
    }
    if !info.writable {
        return Err(Error::Usage(format!("{flag} {fd}: descriptor {fd} is not open for writing")));
    }
    Ok(())
}

/// Takes the inherited descriptors. Runs first in [`run`], before the
/// daemon opens a descriptor of its own (the log file, the store, a
/// socket) and before any thread starts: a number that was not passed in
/// is refused rather than later naming one of ours. Socket activation in
/// background mode is refused (the fork would leave the socket with a
/// process that exits at once).
#[allow(unsafe_code)]
fn claim_inherited(args: &Args, background: bool) -> Result<Inherited> {
    let activation = socket::activation_fd_count_from_env();
    if let Some(count) = activation {
        if background {
            return Err(Error::Usage("socket activation (LISTEN_FDS) needs -D or a COMMAND".into()));
        }
        let passed = socket::LISTEN_FDS_START..socket::LISTEN_FDS_START.saturating_add(count);
        for (flag, fd) in [("--ready-fd", args.ready_fd), ("--capability-fd", args.capability_fd)] {
            if let Some(fd) = fd.filter(|fd| passed.contains(fd)) {
                return Err(Error::Usage(format!("{flag} {fd} is a socket passed by the service manager")));
            }
        }
    }
    for (flag, fd) in [("--ready-fd", args.ready_fd), ("--capability-fd", args.capability_fd)] {
        if let Some(fd) = fd {
            check_inherited(flag, fd)?;
        }
    }
    let take = |flag: &str, fd: i32| -> Result<File> {
        // SAFETY: `run` calls this before the process opens any descriptor,
        // so `fd` is one the caller passed in; `parse` refused 0-2 and equal
        // numbers and the check above refused the activation range, so each
        // number is taken once, here, and nothing else owns it.
        unsafe { sys::adopt_fd(fd) }.map_err(|e| Error::io(format!("{flag} {fd}"), e))
    };
    let ready = args.ready_fd.map(|fd| take("--ready-fd", fd)).transpose()?;
    let capability = args.capability_fd.map(|fd| take("--capability-fd", fd)).transpose()?;
    let activated = match activation {
        None => None,
        Some(count) => {
            let first = socket::LISTEN_FDS_START;
            let what = || format!("socket activation: descriptor {first}");
            // SAFETY: as above: the service manager passed descriptors
            // 3..3+count for this process, and nothing in it has opened
            // or taken them yet.
            let listener =
                unsafe { sys::adopt_listening_unix_socket(first) }.map_err(|e| Error::io(what(), e))?;
            for extra in first + 1..first.saturating_add(count) {
                crate::log_warn!("socket activation: descriptor {extra} is not used; closing it");
                // SAFETY: as above; each extra number is taken once, here.
                drop(unsafe { sys::adopt_fd(extra) });
            }
            Some(socket::activated(listener)?)
        }
    };
    Ok(Inherited { activated, ready, capability })
}

fn run(args: &Args) -> Result<i32> {
    let exec_mode = !args.command.is_empty();
    let background = !args.foreground && !exec_mode;
    let Inherited { activated, ready, capability: capability_file } = claim_inherited(args, background)?;
    // gh runs where the daemon was started (the project checkout), even
    // after a background daemon has moved to /.
    let start_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    log::set_max_level(args.log_level);
    let logs_to_file = args.log_file.is_some() || (exec_mode && !args.log_stderr && !args.foreground);
    if let Some(path) = &args.log_file {
        open_log_file(path)?;
    } else if logs_to_file {
        // The command owns the terminal (an interactive llxprt-code screen):
        // the daemon's lines go to a file. Start-up errors still reach
        // stderr through main.
        open_log_file(&exec_log_path()?)?;
    }
    let mut readiness = Readiness { close_stdout: !exec_mode, fds: ready.into_iter().collect() };
    let announce_how = match args.announce {
        Announce::None if background && shell_is_csh() => Announce::Csh,
        Announce::None if background => Announce::Sh,
        other => other,
    };
    if let Some(name) = &args.profile {
        warn_of_another_daemon(name, logs_to_file);
    }
    if background {
        match daemonize()? {
            Ok(pipe) => readiness.fds.push(pipe),
            Err(code) => return Ok(code),
        }
    }
    sys::harden_process().map_err(|e| Error::io("cannot disable core dumps", e))?;
    sys::tune_allocator();
    let mut watched = vec![libc::SIGINT, libc::SIGTERM, libc::SIGHUP];
    if exec_mode {
        watched.push(libc::SIGCHLD);
    }
    let signals = sys::SignalSet::block(&watched).map_err(|e| Error::io("cannot block signals", e))?;
    // after the fork and the signal mask: the logger's thread inherits it
    log::buffer_lines(log_flush_interval());
    let mut cleanup = Cleanup::default();
    let socket_path = match (&activated, &args.socket) {
        (Some(a), Some(flag)) if absolute(flag)? != a.path => {
            return Err(Error::Usage(format!(
                "--socket {} but the socket passed by the service manager is {}",
                flag.display(),
                a.path.display()
            )));
        }
        (Some(a), _) => a.path.clone(),
        (None, Some(p)) => absolute(p)?,
        (None, None) => {
            let dir = socket::default_socket_dir()?;
            if dir.temporary {
                cleanup.dirs.push(dir.path.clone());
            }
            socket::socket_path_in(&dir.path)?
        }
    };
    let capability_path = match (&args.capability_file, args.capability_fd, args.no_capability) {
        (Some(file), _, _) => Some(absolute(file)?),
        (None, Some(_), _) | (None, None, true) => None,
        (None, None, false) => {
            let dir = socket::default_capability_dir()?;
            if dir.temporary {
                cleanup.dirs.push(dir.path.clone());
            }
            let name = socket_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Some(dir.path.join(format!("{name}.env")))
        }
    };
    let store = HostStore::open(resolve_backend(args.store)?)?;
    let scope_source = ScopeSource {
        profile: args.profile.clone(),
        allow: args.allow.clone(),
        keys: args.allow_keys.clone(),
        profiles_dir: store.paths.profiles_dir(),
    };
    let scope = scope_source.load()?;
    if scope.is_empty() {
        return Err(Error::Usage(format!(
            "profile {:?} names nothing this daemon can serve (no auth of type oauth, no \
             ephemeralSettings auth-key-name); log in with OAuth or store a key (llxprt-cred key set NAME) \
             and name it in the profile, or start with --allow PROVIDER[:BUCKET] / --allow-key NAME",
            args.profile.as_deref().unwrap_or_default()
        )));
    }
    let unread = store.paths.config.join(crate::oauth::provider::PROVIDERS_FILE_NAME);
    if unread.exists() && args.providers_file.as_deref() != Some(unread.as_path()) {
        crate::log_warn!(
            "{} is not read: llxprt-code's config directory can be written by a sandbox; \
             name a providers file with --providers-file if you meant it",
            unread.display()
        );
    }
    let oauth = crate::oauth::OAuthConfig::load(args.providers_file.as_deref())?;
    let github = github_config(args, start_dir, &mut cleanup)?;
    let allow_uids: Vec<UserId> = args.allow_uids.iter().map(|&u| UserId(u)).collect();
    // A socket passed by the service manager is its to keep: never removed.
    let listener = match activated {
        Some(a) => a.listener,
        None => {
            let listener = socket::bind(&socket_path)?;
            cleanup.socket = Some(socket_path.clone());
            if !allow_uids.is_empty() {
                socket::admit_uids(&socket_path, &allow_uids)?;
            }
            listener
        }
    };
    cleanup.capability = capability_path.clone();
    let capability_token = if args.no_capability {
        None
    } else {
        let token = SecretString::new(crate::random::hex(32).map_err(|e| Error::io("random", e))?);
        if let Some(path) = &capability_path {
            write_capability_file(path, &token)?;
        }
        if let (Some(file), Some(fd)) = (capability_file, args.capability_fd) {
            write_capability_fd(file, fd, &token)?;
        }
        Some(token)
    };
    let (inject, proxy_listener) = inject_config(args, &socket_path, &oauth.providers.routes, &mut cleanup)?;
    crate::log_info!(
        "listening on {} (store {}, scope {}, sandbox may {}{})",
        socket_path.display(),
        store.backend.name(),
        scope.describe(),
        args.permits.describe(),
        if capability_token.is_some() { ", capability token required" } else { ", no capability token" }
    );
    let config = ServerConfig {
        socket_path: socket_path.clone(),
        max_connections: args.max_connections,
        rate_limit: (args.rate_limit > 0).then_some(args.rate_limit),
        daemon_rate_limit: (args.daemon_rate_limit > 0).then_some(args.daemon_rate_limit),
        allow_uids,
        capability_token,
        scope,
        idle_timeout: idle_timeout(),
        write_timeout: write_timeout(),
        oauth,
        permits: args.permits.clone(),
        github,
        inject,
    };
    let server = Server::new(listener, config, store)?;
    if let Some(listener) = proxy_listener {
        server.serve_proxy(listener)?;
    }
    let handle = server.handle();
    announce(announce_how, &socket_path, capability_path.as_deref())?;
    readiness.ready(&socket_path);
    if background {
        // Logs go to --log-file or nowhere: a terminal or a pipe held open
        // by a daemon would hang whoever waits for it to close.
        let _ = sys::detach_stderr();
        let _ = std::env::set_current_dir("/");
    }
    let child = if exec_mode {
        match lifecycle::spawn_command(&args.command, &socket_path, capability_path.as_deref()) {
            Ok(child) => Some(child),
            Err(e) => {
                let name = args.command[0].to_string_lossy();
                crate::log_error!("cannot run {name}: {e}");
                eprintln!("llxprt-credd: cannot run {}: {e}", crate::log::printable(&name));
                return Ok(lifecycle::spawn_failure_code(&e));
            }
        }
    } else {
        None
    };
    let watcher = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || watch_signals(&signals, &handle, child, &scope_source))
        .map_err(|e| Error::io("cannot start the signal thread", e))?;
    server.run();
    let _ = lifecycle::sd_notify("STOPPING=1");
    drop(cleanup);
    let code = watcher.join().unwrap_or(EXIT_FAILURE);
    crate::log_info!("stopped");
    Ok(code)
}

/// The signal thread: stop on SIGINT/SIGTERM, reload on SIGHUP; in exec
/// mode forward all three to the child and stop when it exits. Returns the
/// daemon's exit code.
fn watch_signals(
    signals: &sys::SignalSet,
    handle: &server::Handle,
    mut child: Option<std::process::Child>,
    reload: &ScopeSource,
) -> i32 {
    loop {
        let sig = match signals.wait() {
            Ok(sig) => sig,
            Err(e) => {
                crate::log_error!("sigwait failed: {e}");
                handle.stop();
                return EXIT_FAILURE;
            }
        };
        match (&mut child, sig) {
            (Some(c), libc::SIGCHLD) => match c.try_wait() {
                Ok(Some(status)) => {
                    let code = lifecycle::exit_code(status);
                    crate::log_info!("command exited with status {code}: shutting down");
                    handle.stop();
                    return code;
                }
                Ok(None) => {}
                Err(e) => crate::log_warn!("cannot check the command: {e}"),
            },
            (Some(c), sig) => {
                crate::log_info!("signal {sig}: passed to the command");
                if let Err(e) = sys::send_signal(sys::ProcessId(c.id() as i32), sig) {
                    crate::log_warn!("cannot pass signal {sig} to the command: {e}");
                }
            }
            (None, libc::SIGHUP) => {
                // SPEC §11.4: a re-read profile may only narrow; a broken
                // one narrows to nothing.
                let reread = reload.load().unwrap_or_else(|e| {
                    crate::log_error!("SIGHUP: cannot read the profile ({e}): serving nothing until it is fixed and the daemon restarted");
                    Scope::default()
                });
                let (now, wider) = handle.narrow_scope(&reread);
                if wider {
                    crate::log_warn!(
                        "SIGHUP: the profile now names more than at start ({}); what was added is ignored until a restart",
                        reread.describe()
                    );
                }
                crate::log_info!("SIGHUP: scope now {}", now.describe());
            }
            (None, sig) => {
                crate::log_info!("signal {sig}: shutting down");
                handle.stop();
                return EXIT_OK;
            }
        }
    }
}

/// The idle timeout; `LLXPRT_CREDD_IDLE_TIMEOUT_SECS` overrides it (tests).
fn idle_timeout() -> Duration {
    std::env::var("LLXPRT_CREDD_IDLE_TIMEOUT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(server::IDLE_TIMEOUT)
}

/// The write timeout of a response; `LLXPRT_CREDD_WRITE_TIMEOUT_MS`
/// overrides it (tests: a client that never reads its responses).
fn write_timeout() -> Duration {
    std::env::var("LLXPRT_CREDD_WRITE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&ms: &u64| ms > 0)
        .map(Duration::from_millis)
        .unwrap_or(server::WRITE_TIMEOUT)
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

/// Removes the socket, the capability file and the private directories
/// made for them when the daemon ends.
#[derive(Default)]
struct Cleanup {
    socket: Option<PathBuf>,
    proxy_socket: Option<PathBuf>,
    capability: Option<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for s in [&self.socket, &self.proxy_socket].into_iter().flatten() {
            let _ = std::fs::remove_file(s);
        }
        if let Some(c) = &self.capability {
            let _ = std::fs::remove_file(c);
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
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
        assert!(p(&["--profile", "x", "-D", "--max-connections", "zero"]).is_err());
        assert!(p(&["--help"]).unwrap().help);
        assert_eq!(shell_quote("a'b"), "'a'\\''b'");
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
            assert!(HELP.contains(flag), "{flag} in --help");
        }
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
