/*!
`llxprt-cred`: the host-side companion. This file holds its parser, the
host-store commands (`key ...`, `token ...`, `doctor`), and the
daemon commands (`status`, `get`, `get-key`), which go through the same
client library a sandboxed program uses, and `login` / `logout`, which run
through a daemon when one is named and directly on the host otherwise.
*/
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lexopt::prelude::*;
use serde_json::Value;

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE, provider_bucket, string_value, usage};
use crate::client::{
    self, LoginDriver, LoginPoll, LoginStart, ProxyOAuthAdapter, ProxyProviderKeyStorage, ProxySocketClient,
    ProxyTokenStore, capability,
};
use crate::error::{Error, Result};
use crate::log::{self, Level};
use crate::oauth::{FlowType, LoginError, Logins, Owner};
use crate::store::keyring::KeyringStatus;
use crate::store::lock::REFRESH_LOCK_WAIT;
use crate::store::names::{DEFAULT_BUCKET, check_bucket, check_provider};
use crate::store::{
    Backend, Change, HostStore, KeyStore, LockWait, TokenStore, resolve_backend, update_token,
};
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
  doctor [--profile NAME]      report the live backend, persistence, machine secret, locks,
                               the scope of profile NAME, and what to do about each problem

Daemon commands (ask the running llxprt-credd, as the sandbox does):
  status                       show the socket, the protocol version, and what the daemon serves
  get PROVIDER[:BUCKET]        print the token the daemon serves (it never has a refresh_token)
  get-key NAME                 print the API key the daemon serves
  refresh PROVIDER[:BUCKET]    ask the daemon to refresh a token that has expired or is about
                               to, on the host, and print it (the daemon must permit refresh)

Login (through the daemon when --socket or $LLXPRT_CREDENTIAL_SOCKET names one,
else directly on the host):
  login PROVIDER[:BUCKET]      log in: shows the URL to open (and the code to type), then
                               waits, or reads the pasted code#state (anthropic)
  logout PROVIDER[:BUCKET]     delete the stored token

Options:
  --store auto|keyring|file    force a backend (default: $LLXPRT_CREDD_STORE, else auto)
  --socket PATH                daemon commands: the daemon's socket
                               (default: $LLXPRT_CREDENTIAL_SOCKET)
  --capability-file PATH       daemon commands: the daemon's capability file (default:
                               $LLXPRT_CAPABILITY_TOKEN, else $LLXPRT_CAPABILITY_FILE,
                               else fd $LLXPRT_CAPABILITY_FD)
  --profile NAME               doctor: show the scope llxprt-credd --profile NAME serves
  --log-level LEVEL            error, warn, info or debug (default: warn)
  --bucket B                   login/logout: the bucket (default: the one in PROVIDER:BUCKET,
                               else default)
  --flow FLOW                  login: pkce_redirect, device_code or browser_redirect (default:
                               the provider's first; codex: browser_redirect)
  help, -h, --help             print this help
  -V, --version                print the version
";

/// A parsed `llxprt-cred` command.
#[derive(Debug, PartialEq)]
pub enum Command {
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
pub struct Args {
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

/// Parses `llxprt-cred`'s arguments (without the program name).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Args> {
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
        match arg {
            Short('h') | Long("help") => {
                early = Some(Command::Help(words.first().cloned()));
                break;
            }
            Short('V') | Long("version") => {
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
            _ => return Err(usage(arg.unexpected())),
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

/// Prints `text` and a newline on stdout. Each line goes through
/// [`crate::log::printable`]: names and fields from the store or the
/// socket (which a sandbox may have written) cannot put terminal controls,
/// line separators or bidi controls on the user's screen.
fn out(text: impl AsRef<str>) -> Result<()> {
    let mut shown = String::with_capacity(text.as_ref().len());
    for (i, line) in text.as_ref().split('\n').enumerate() {
        if i > 0 {
            shown.push('\n');
        }
        shown.push_str(&crate::log::printable(line));
    }
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{shown}") {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error::io("stdout", e)),
    }
}

/// Pretty JSON in ASCII only: every other character (and DEL) as a JSON
/// `\\uXXXX` escape, so the text stays valid JSON and prints safely.
fn json_ascii(value: &Value) -> String {
    let pretty = serde_json::to_string_pretty(value).expect("JSON serialises");
    let mut ascii = String::with_capacity(pretty.len());
    for c in pretty.chars() {
        if c.is_ascii() && c != '\u{7f}' {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    ascii
}

/// The help, or for a command word its lines of the help (with their
/// continuation lines) and where the options are; the whole help for a
/// word that is not a command.
fn help_for(topic: Option<&str>) -> String {
    let Some(topic) = topic else { return HELP.to_owned() };
    let mut lines = Vec::new();
    let mut in_entry = false;
    for line in HELP.lines() {
        let entry = line.strip_prefix("  ").filter(|l| !l.starts_with(' '));
        match entry {
            Some(e) => {
                in_entry = e.split_whitespace().next() == Some(topic) && !e.starts_with('-');
                if in_entry {
                    lines.push(line);
                }
            }
            None if in_entry && line.starts_with("    ") => lines.push(line),
            None => in_entry = false,
        }
    }
    if lines.is_empty() {
        return HELP.to_owned();
    }
    format!(
        "Usage: llxprt-cred [OPTIONS] {topic} ...\n\n{}\n\nOptions: llxprt-cred --help; all of it: man llxprt-cred\n",
        lines.join("\n")
    )
}

fn run(args: &Args) -> Result<i32> {
    match &args.command {
        Command::Help(topic) => {
            print!("{}", help_for(topic.as_deref()));
            return Ok(EXIT_OK);
        }
        Command::Version => {
            out(format!("llxprt-cred {}", env!("CARGO_PKG_VERSION")))?;
            return Ok(EXIT_OK);
        }
        Command::Status => return status(args),
        Command::Get(p, b) => return daemon_get(args, p, b.as_deref()),
        Command::GetKey(name) => return daemon_get_key(args, name),
        Command::Refresh(p, b) => return daemon_refresh(args, p, b.as_deref()),
        Command::Login(p, b) => return login(args, p, b.as_deref()),
        Command::Logout(p, b) => return logout(args, p, b.as_deref()),
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
            None => return Ok(not_stored(&host, format!("no API key named {name}"))),
        },
        Command::KeyList => {
            for name in host.keys.list_keys()? {
                out(name)?;
            }
        }
        Command::KeyRm(name) => {
            if !host.keys.delete_key(name)? {
                return Ok(not_stored(&host, format!("no API key named {name}")));
            }
        }
        Command::TokenList => token_list(&host)?,
        Command::TokenShow(p, b) => match host.tokens.get_token(p, b.as_deref())? {
            Some(token) => out(json_ascii(&Value::Object(token.sanitize().into_map())))?,
            None => {
                return Ok(not_stored(
                    &host,
                    format!("no token for {p}:{}", b.as_deref().unwrap_or(DEFAULT_BUCKET)),
                ));
            }
        },
        Command::TokenImport(p, b) => token_import(&host, p, b.as_deref())?,
        Command::TokenRm(p, b) => {
            // like key rm: a missing token is a failure the user hears about
            if host.tokens.get_token(p, b.as_deref())?.is_none() {
                return Ok(not_stored(
                    &host,
                    format!("no token for {p}:{}", b.as_deref().unwrap_or(DEFAULT_BUCKET)),
                ));
            }
            host.tokens.remove_token(p, b.as_deref())?
        }
        Command::Doctor => return doctor(&host, args.profile.as_deref()),
        Command::Help(_)
        | Command::Version
        | Command::Status
        | Command::Get(..)
        | Command::GetKey(_)
        | Command::Refresh(..)
        | Command::Login(..)
        | Command::Logout(..) => {
            unreachable!("handled above")
        }
    }
    Ok(EXIT_OK)
}

/// Whether a daemon is named (`--socket` or `LLXPRT_CREDENTIAL_SOCKET`).
fn daemon_named(args: &Args) -> bool {
    args.socket.is_some() || client::socket_from(&client::process_env).is_some()
}

/// Logins run in this process, on the host store.
struct HostLogins {
    logins: Logins,
}

fn host_error(e: LoginError) -> Error {
    let code = crate::server::wire::login_code(&e);
    Error::Remote { code: code.as_str().to_owned(), message: e.to_string() }
}

impl LoginDriver for HostLogins {
    fn initiate(&self, provider: &str, bucket: Option<&str>, flow: Option<FlowType>) -> Result<LoginStart> {
        check_provider(provider)?;
        if let Some(b) = bucket {
            check_bucket(b)?;
        }
        let i = self.logins.initiate(Owner::local(), provider, bucket, flow).map_err(host_error)?;
        Ok(LoginStart::from(&i))
    }

    fn exchange(&self, session_id: &str, code: &str) -> Result<serde_json::Map<String, Value>> {
        let token = self.logins.exchange(Owner::local(), session_id, code).map_err(host_error)?;
        Ok(token.sanitize().into_map())
    }

    fn poll(&self, session_id: &str) -> Result<LoginPoll> {
        LoginPoll::from_host(self.logins.poll(Owner::local(), session_id).map_err(host_error)?)
    }

    fn cancel(&self, session_id: &str) -> Result<()> {
        self.logins.cancel(Owner::local(), session_id).map_err(host_error)
    }
}

/// `login`: through the daemon when one is named, else on the host.
fn login(args: &Args, provider: &str, bucket: Option<&str>) -> Result<i32> {
    let target = format!("{provider}:{}", bucket.unwrap_or(DEFAULT_BUCKET));
    let token = if daemon_named(args) {
        let adapter = ProxyOAuthAdapter::new(Arc::new(daemon_client(args)?));
        run_login(&adapter, provider, bucket, args.flow)?
    } else {
        let host = HostStore::open(resolve_backend(args.store)?)?;
        let mut config = crate::oauth::OAuthConfig::load(None)?;
        config.login_origin = crate::oauth::LoginOrigin::Host;
        let driver = HostLogins { logins: config.logins(host.tokens.clone())? };
        run_login(&driver, provider, bucket, args.flow)?
    };
    let expiry = token.get("expiry").and_then(Value::as_f64).unwrap_or(0.0);
    let left = ((expiry - now_unix_seconds()) / 60.0).floor().max(0.0);
    out(format!("Logged in: {target} (access token valid for {left} min)"))?;
    Ok(EXIT_OK)
}

/// Shows what the user must do, then completes the login: reads the
/// pasted code (code-paste flow) or polls, with a waiting indicator on a
/// terminal.
fn run_login(
    driver: &dyn LoginDriver,
    provider: &str,
    bucket: Option<&str>,
    flow: Option<FlowType>,
) -> Result<serde_json::Map<String, Value>> {
    let start = driver.initiate(provider, bucket, flow)?;
    out("Open this URL in a browser and sign in:")?;
    out(format!("  {}", start.auth_url))?;
    if let Some(code) = &start.user_code {
        out(format!("and enter the code: {code}"))?;
    }
    if start.flow == FlowType::PkceRedirect {
        if crate::sys::stdin_is_tty() {
            eprint!("Paste the code shown after you sign in: ");
        } else {
            out("Paste the code shown after you sign in:")?;
        }
        let mut line = String::new();
        io::stdin().read_line(&mut line).map_err(|e| Error::io("reading the pasted code", e))?;
        return driver.exchange(&start.session_id, line.trim());
    }
    let _ = io::stdout().flush();
    let live = io::stderr().is_terminal();
    let frames = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    let result = driver.wait(&start, &mut |spent| {
        if live {
            tick += 1;
            eprint!(
                "\r{} waiting for the login to finish ({} s) ",
                frames[tick % frames.len()],
                spent.as_secs()
            );
        }
        true
    });
    if live {
        eprintln!();
    }
    result
}

/// `logout`: through the daemon when one is named (which removes under
/// the refresh lock), else on the host under the same lock.
fn logout(args: &Args, provider: &str, bucket: Option<&str>) -> Result<i32> {
    let target = format!("{provider}:{}", bucket.unwrap_or(DEFAULT_BUCKET));
    if daemon_named(args) {
        ProxyTokenStore::new(Arc::new(daemon_client(args)?)).remove_token(provider, bucket)?;
    } else {
        let host = HostStore::open(resolve_backend(args.store)?)?;
        let wait = LockWait::up_to(REFRESH_LOCK_WAIT);
        update_token(host.tokens.as_ref(), provider, bucket, &wait, |_| (Change::Remove, ()))?;
    }
    out(format!("Logged out: {target}"))?;
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
            out(json_ascii(&Value::Object(token.sanitize().into_map())))?;
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

/// `refresh PROVIDER[:BUCKET]`: the daemon's `refresh_token` (a token that
/// has expired or is about to is refreshed on the host; a fresh one is
/// returned as stored); printed like `get` prints one.
fn daemon_refresh(args: &Args, provider: &str, bucket: Option<&str>) -> Result<i32> {
    use crate::protocol::answer::Answer;
    use crate::protocol::message::Op;
    crate::store::names::check_provider(provider)?;
    if let Some(b) = bucket {
        crate::store::names::check_bucket(b)?;
    }
    let client = daemon_client(args)?;
    let op = Op::RefreshToken { provider: provider.to_owned(), bucket: bucket.map(str::to_owned) };
    match client.request(op.name(), Value::Object(op.payload()))? {
        client::socket::Response::Err { code, .. } if code == "NOT_FOUND" => {
            eprintln!(
                "llxprt-cred: the daemon has no token for {provider}:{}",
                bucket.unwrap_or(DEFAULT_BUCKET)
            );
            Ok(EXIT_FAILURE)
        }
        response => match Answer::decode(op.name(), response.into_data()?) {
            Ok(Answer::Token(t)) => {
                let shown = OAuthToken::from_map(t)?.sanitize().into_map();
                out(json_ascii(&Value::Object(shown)))?;
                Ok(EXIT_OK)
            }
            _ => Err(Error::Connection("Malformed refresh_token response from proxy".into())),
        },
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
    let wait = LockWait::up_to(REFRESH_LOCK_WAIT);
    update_token(host.tokens.as_ref(), provider, bucket, &wait, |stored| match stored.get() {
        Ok(Some(stored)) => (Change::Save(OAuthToken::merge(&stored, &incoming)), Ok(())),
        Ok(None) => (Change::Save(incoming.clone()), Ok(())),
        Err(e) => (Change::Keep, Err(e)),
    })?
}

/// What `doctor` found: problems count toward the exit status; every
/// problem and note comes with what to do about it.
struct Findings {
    problems: usize,
}

impl Findings {
    fn line(&self, text: impl AsRef<str>) -> Result<()> {
        out(text)
    }

    fn problem(&mut self, text: impl AsRef<str>, fix: impl AsRef<str>) -> Result<()> {
        self.problems += 1;
        out(format!("{}\n  fix: {}", text.as_ref(), fix.as_ref()))
    }

    fn note(&self, text: impl AsRef<str>, advice: impl AsRef<str>) -> Result<()> {
        out(format!("{}\n  note: {}", text.as_ref(), advice.as_ref()))
    }
}

/// Says that a credential is not stored, and, when a keyring that could
/// not be reached left only the encrypted files to search, that it may
/// well be stored after all. Returns the exit code.
fn not_stored(host: &HostStore, what: String) -> i32 {
    eprintln!("llxprt-cred: {what}");
    if let Some(why) = unsearched_keyring(host) {
        eprintln!("llxprt-cred: {why}");
    }
    EXIT_FAILURE
}

/// Why "not stored" may be wrong: in `auto`, a keyring that could not be
/// reached (or answered LOCKED) leaves only the encrypted files searched.
fn unsearched_keyring(host: &HostStore) -> Option<String> {
    match host.keyring.as_ref()?.status() {
        KeyringStatus::Ready => None,
        KeyringStatus::Unavailable(why) | KeyringStatus::Latched(why) => Some(format!(
            "the keyring could not be reached ({why}), so only the encrypted files in {} were searched; \
             if llxprt-code keeps it in your keyring, run where that keyring is reachable and unlocked \
             (llxprt-cred doctor shows the live backend) instead of storing it again",
            host.paths.data.display()
        )),
    }
}

/// The daemon named by `LLXPRT_CREDENTIAL_SOCKET`, the sockets left in the
/// default socket directory, and the daemons running.
fn doctor_sockets(f: &mut Findings) -> Result<()> {
    use std::os::unix::net::UnixStream;
    /// Whether a daemon listens at `path`, or why not.
    fn probe(path: &std::path::Path) -> std::result::Result<(), io::Error> {
        UnixStream::connect(path).map(drop)
    }
    match std::env::var_os(crate::client::SOCKET_ENV).filter(|v| !v.is_empty()) {
        None => f.line(format!("{}: not set", crate::client::SOCKET_ENV))?,
        Some(raw) => {
            let path = PathBuf::from(&raw);
            let name = format!("{}={}", crate::client::SOCKET_ENV, path.display());
            match probe(&path) {
                Ok(()) => f.line(format!("{name}: a daemon listens there"))?,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => f.problem(
                    format!("{name}: stale: no daemon listens there any more"),
                    format!(
                        "unset {} (or start a daemon: eval \"$(llxprt-credd --profile NAME)\"), and remove \
                         the leftover file: rm {}",
                        crate::client::SOCKET_ENV,
                        path.display()
                    ),
                )?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => f.problem(
                    format!("{name}: no socket there"),
                    format!(
                        "unset {} or start a daemon and use the socket it names",
                        crate::client::SOCKET_ENV
                    ),
                )?,
                Err(e) => f.problem(
                    format!("{name}: cannot connect ({e})"),
                    "run as the daemon's user, or start the daemon with --allow-uid UID",
                )?,
            }
        }
    }
    if let Ok(dir) = crate::server::socket::default_socket_dir_path() {
        let mut stale: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .filter(|p| probe(p).is_err_and(|e| e.kind() == io::ErrorKind::ConnectionRefused))
            .collect();
        stale.sort();
        if stale.is_empty() {
            f.line(format!("socket directory: {} (no stale sockets)", dir.display()))?;
        } else {
            let list: Vec<String> = stale.iter().map(|p| p.display().to_string()).collect();
            f.note(
                format!(
                    "socket directory: {}: stale sockets (no daemon listens): {}",
                    dir.display(),
                    list.join(" ")
                ),
                format!("remove them: rm {}", list.join(" ")),
            )?;
        }
    }
    let running = super::lifecycle::running_daemons();
    if running.is_empty() {
        f.line("daemons running: none")?;
    }
    for d in running {
        f.line(format!("daemon running: pid {}: {}", d.pid, d.command_line()))?;
    }
    Ok(())
}

fn doctor(host: &HostStore, profile: Option<&str>) -> Result<i32> {
    let mut f = Findings { problems: 0 };
    f.line(format!("backend setting: {}", host.backend.name()))?;
    let mut keyring_live = false;
    match &host.keyring {
        None => f.line("live backend: encrypted file (the keyring is not used)")?,
        Some(k) => match k.status() {
            KeyringStatus::Ready => {
                keyring_live = true;
                f.line(format!("live backend: OS keyring: {}", k.describe()))?
            }
            KeyringStatus::Unavailable(why) if host.backend == Backend::Keyring => f.problem(
                format!("live backend: none: the OS keyring is unavailable ({why})"),
                "start or unlock a Secret Service (gnome-keyring, KeePassXC) reachable on \
                 DBUS_SESSION_BUS_ADDRESS, or use --store file",
            )?,
            KeyringStatus::Unavailable(why) => f.note(
                format!("live backend: encrypted file (OS keyring unavailable: {why})"),
                "llxprt-code falls back the same way; if llxprt-code on this host uses a keyring, \
                 make the same Secret Service reachable here (DBUS_SESSION_BUS_ADDRESS)",
            )?,
            KeyringStatus::Latched(why) => f.note(
                format!("live backend: encrypted file ({why})"),
                "unlock the keyring's default collection (log in to the desktop session) and run again",
            )?,
        },
    }
    if keyring_live {
        f.line("persists: yes (default keyring collection)")?;
    } else {
        f.line(format!("persists: yes, in {}", host.paths.data.display()))?;
    }
    let encrypted_files = count_encrypted_files(host);
    match host.machine_secret.get() {
        Some((_, crate::store::machine_secret::SecretSource::Keyring)) => {
            f.line("machine secret: in the OS keyring")?
        }
        Some((_, crate::store::machine_secret::SecretSource::File)) => {
            f.line(format!("machine secret: {}", host.machine_secret.file().display()))?
        }
        None if encrypted_files > 0 => f.problem(
            format!(
                "machine secret: not found, but {encrypted_files} encrypted files exist (they may be \
                 unreadable)"
            ),
            format!(
                "if llxprt-code keeps its machine secret in your keyring, use --store auto with the \
                 keyring reachable; else restore {}",
                host.machine_secret.file().display()
            ),
        )?,
        None => f.line("machine secret: none yet (created on the first encrypted-file write)")?,
    }
    for (what, dir) in
        [("oauth locks", host.paths.oauth_lock_dir()), ("write locks", host.paths.credential_lock_dir())]
    {
        match lock_dir_report(&dir) {
            Ok(report) => f.line(format!("{what}: {} ({report})", dir.display()))?,
            Err((report, fix)) => f.problem(format!("{what}: {} ({report})", dir.display()), fix)?,
        }
    }
    legacy_claude_note(host, &f)?;
    match crate::github::run::host_gh() {
        crate::github::run::HostGh::Ready(v) => {
            f.line(format!("github: {v}, logged in (the github op can serve)"))?
        }
        crate::github::run::HostGh::LoggedOut(v) => f.note(
            format!("github: {v}, not logged in: the github op answers HOST_AUTH_REQUIRED"),
            "run on the host: gh auth login",
        )?,
        crate::github::run::HostGh::Missing => f.note(
            "github: gh is not on PATH: the github op answers HOST_GH_UNAVAILABLE",
            "install GitHub CLI (https://cli.github.com) to let sandboxes use llxprt-code's github tool",
        )?,
    }
    f.line(format!("oauth fallback dir: {}", host.tokens.secure_store().dir().display()))?;
    f.line(format!("api key fallback dir: {}", host.keys.secure_store().dir().display()))?;
    doctor_sockets(&mut f)?;
    if let Some(name) = profile {
        doctor_profile(host, name, &mut f)?;
    }
    if f.problems == 0 {
        f.line("no problems found")?;
        Ok(EXIT_OK)
    } else {
        f.line(format!("{} problem(s) found", f.problems))?;
        Ok(EXIT_FAILURE)
    }
}

/// A Claude subscription login stored only under the name older
/// llxprt-code releases used (`anthropic:*`): current llxprt-code asks for
/// `claudecode` and will not use it.
fn legacy_claude_note(host: &HostStore, f: &Findings) -> Result<()> {
    use crate::oauth::provider::{CLAUDE_SUBSCRIPTION, CLAUDE_SUBSCRIPTION_LEGACY};
    let providers = host.tokens.list_providers().unwrap_or_default();
    if providers.iter().any(|p| p == CLAUDE_SUBSCRIPTION)
        || !providers.iter().any(|p| p == CLAUDE_SUBSCRIPTION_LEGACY)
    {
        return Ok(());
    }
    let buckets = host.tokens.list_buckets(CLAUDE_SUBSCRIPTION_LEGACY).unwrap_or_default();
    let logins: Vec<String> = buckets.iter().map(|b| format!("{CLAUDE_SUBSCRIPTION_LEGACY}:{b}")).collect();
    f.note(
        format!(
            "Claude subscription login stored as {} only: llxprt-code releases since its July 2026 split \
             of Claude Code OAuth from Anthropic API access look for {CLAUDE_SUBSCRIPTION}:BUCKET and will \
             not use it (older releases still do)",
            logins.join(" ")
        ),
        format!("log in again for current llxprt-code: llxprt-cred login {CLAUDE_SUBSCRIPTION} (add --bucket NAME for a named bucket)"),
    )
}

fn count_encrypted_files(host: &HostStore) -> usize {
    [host.tokens.secure_store().dir(), host.keys.secure_store().dir()]
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flat_map(|entries| entries.flatten())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".enc"))
        .count()
}

/// The scope `llxprt-credd --profile NAME` would serve, and whether each
/// of its credentials is there to be served.
fn doctor_profile(host: &HostStore, name: &str, f: &mut Findings) -> Result<()> {
    let dir = host.paths.profiles_dir();
    let scope = match crate::profile::load_scope(&dir, name) {
        Ok(scope) => scope,
        Err(e) => {
            return f.problem(
                format!("profile {name}: {e}"),
                format!("save the profile with llxprt-code (it keeps profiles in {})", dir.display()),
            );
        }
    };
    f.line(format!("profile {name}: {}", scope.describe()))?;
    f.line(format!(
        "profile {name}: a sandbox of llxprt-credd --profile {name} may read this scope only; \
         refresh_token, logins and save/remove need --permit refresh|login|write"
    ))?;
    if scope.oauth.is_empty() && scope.keys.is_empty() {
        f.problem(
            format!("profile {name}: serves nothing"),
            "give the profile OAuth auth or an auth-key-name, or start the daemon with --allow/--allow-key",
        )?;
    }
    let now = now_unix_seconds();
    for (provider, buckets) in &scope.oauth {
        let buckets: Vec<String> = match buckets {
            Some(set) => set.iter().cloned().collect(),
            None => host.tokens.list_buckets(provider)?,
        };
        for bucket in buckets {
            let login = format!(
                "log in to {provider} (bucket {bucket}) with llxprt-code, or run \
                 llxprt-cred login {provider} --bucket {bucket}"
            );
            match host.tokens.get_token(provider, Some(&bucket))? {
                None => f.problem(
                    format!("  token {provider}:{bucket}: not stored"),
                    unsearched_keyring(host).unwrap_or(login),
                )?,
                Some(t) if t.expiry() <= now && t.refresh_token().is_none() => f.problem(
                    format!("  token {provider}:{bucket}: expired, and it has no refresh token"),
                    &login,
                )?,
                Some(t) => {
                    let left = t.expiry() - now;
                    let when = if left > 0.0 {
                        format!("expires in {}m", (left / 60.0).floor())
                    } else {
                        "expired".into()
                    };
                    let refresh = if t.refresh_token().is_some() {
                        "refreshed on the host"
                    } else {
                        "not refreshable: log in again when it expires"
                    };
                    f.line(format!("  token {provider}:{bucket}: stored, {when}, {refresh}"))?
                }
            }
        }
    }
    for key in &scope.keys {
        if host.keys.has_key(key)? {
            f.line(format!("  api key {key}: stored"))?;
        } else {
            f.problem(
                format!("  api key {key}: not stored"),
                unsearched_keyring(host).unwrap_or_else(|| format!("llxprt-cred key set {key}")),
            )?;
        }
    }
    Ok(())
}

/// The state of a lock directory: `Ok(report)`, or `Err((problem, fix))`.
fn lock_dir_report(dir: &std::path::Path) -> std::result::Result<String, (String, String)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok("not created yet".into()),
        Err(e) => {
            return Err((
                format!("cannot read it: {e}"),
                format!("make {} a directory you own (mode 0700)", dir.display()),
            ));
        }
    };
    let held: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    if held.is_empty() {
        return Ok("no lock held".into());
    }
    let age = |n: &String| {
        std::fs::metadata(dir.join(n)).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok())
    };
    let old: Vec<&String> =
        held.iter().filter(|n| age(n).is_some_and(|a| a > Duration::from_secs(300))).collect();
    if old.is_empty() {
        Ok(format!("{} held now", held.len()))
    } else {
        Err((
            format!(
                "held for over 5 minutes: {}",
                old.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ),
            "if no llxprt-code or llxprt-credd process is running, delete them".into(),
        ))
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
            "status",
            "get PROVIDER",
            "get-key",
            "login PROVIDER",
            "logout PROVIDER",
            "--bucket",
            "--flow",
            "--store",
            "--socket",
            "--capability-file",
            "--log-level",
            "--help",
            "--version",
        ] {
            assert!(HELP.contains(word), "{word} is in the help");
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
}
