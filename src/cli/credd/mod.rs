/*!
`llxprt-credd`'s command line and `main`: its flags ([`FLAGS`]) and help
text ([`help`]); `main` parses (`parse`), answers `--help` and
`--version`, runs the daemon (or `-k`) in `crate::daemon`, flushes the
log, and maps the result to an exit code.
*/
#![forbid(unsafe_code)]

mod args;

use std::ffi::OsString;

pub(crate) use args::{Announce, Args, parse};

use super::flags::{Flag, option_lines};
use super::{EXIT_OK, EXIT_USAGE, exit_code};
use crate::log;

/// The help's text before the option lines.
const HELP_HEAD: &str = "\
llxprt-credd - credential broker for llxprt-code sandboxes

Usage: llxprt-credd --profile NAME [OPTIONS] [-- COMMAND [ARGS...]]
       llxprt-credd -k [-s | -c]

Serves the profile's OAuth access tokens (never refresh tokens) and API keys
on a private Unix socket. Without -D or a COMMAND it goes to the background
once it listens and prints shell commands setting LLXPRT_CREDENTIAL_SOCKET
(like ssh-agent). With a COMMAND it runs the command with the socket in its
environment and exits with the command's status.

Options:
";

/// The help's text after the option lines.
const HELP_TAIL: &str = "
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

/// Width of the flag column of the option lines.
const FLAG_COLUMN_WIDTH: usize = 24;

/// Every flag of `llxprt-credd`, in the order `--help` shows them: the
/// parser accepts these and no other, and the man page is checked against
/// them.
pub const FLAGS: &[Flag] = &[
    Flag::long("profile").value("NAME").help("serve what llxprt-code profile NAME uses"),
    Flag::long("allow").value("PROVIDER[:BUCKET]").help("also serve this provider (all buckets) or bucket"),
    Flag::long("allow-key").value("NAME").help("also serve this API key"),
    Flag::long("allow-uid")
        .value("UID")
        .help("also accept connections from this uid (a POSIX ACL lets it reach the socket)"),
    Flag::long("permit").value("CLASS[,CLASS]").help(
        "also let the sandbox refresh (refresh_token), log in\n\
         (oauth_*), write (save_token, remove_token) or change things on\n\
         GitHub (github-write); default: read only",
    ),
    Flag::long("github-repo")
        .value("OWNER/REPO")
        .help("the github op serves only this repository (repeatable)"),
    Flag::long("no-github").help("turn the github op off"),
    Flag::long("inject").help(
        "serve sentinels, never real tokens or keys; the real credential is\n\
         added on the host to each request sent through the proxy socket",
    ),
    Flag::long("proxy-socket").value("PATH").help(
        "inject mode's HTTP proxy socket (default: beside the socket,\n\
         NAME.proxy.sock)",
    ),
    Flag::long("reveal")
        .value("PROVIDER")
        .help("inject mode: serve PROVIDER's real tokens (repeatable; logged)"),
    Flag::long("proxy-max-body")
        .value("N")
        .help("inject mode: request body limit in bytes (default 33554432)"),
    Flag::long("allow-mcp").help(
        "inject mode: let bodies name remote tool servers (mcp_servers,\n\
         tools of type mcp)",
    ),
    Flag::long("socket").value("PATH").help(
        "listen here (default: $XDG_RUNTIME_DIR/llxprt-cred/, else\n\
         $TMPDIR/llxprt-cred-UID/; file llxprt-cred-PID-NONCE.sock)",
    ),
    Flag::long("store")
        .value("auto|keyring|file")
        .help("force a store backend (default: $LLXPRT_CREDD_STORE, else auto)"),
    Flag::long("capability-file").value("PATH").help("write the capability token to PATH as an env file"),
    Flag::long("capability-fd").value("N").help("write the capability token and a newline to descriptor N"),
    Flag::long("no-capability").help(
        "require no capability token (default: one is required; without\n\
         the two flags above it goes to $XDG_RUNTIME_DIR/llxprt-cred-capability/)",
    ),
    Flag::long("providers-file")
        .value("PATH")
        .help("OAuth endpoints and clients from PATH (default: $LLXPRT_CREDD_PROVIDERS_FILE)"),
    Flag::long("max-connections").value("N").help("connection cap (default 64)"),
    Flag::long("rate-limit").value("N").help("requests per second per client process, 0 = off (default 60)"),
    Flag::long("daemon-rate-limit").value("N").help(
        "requests per second for all clients together, 0 = off\n\
         (default 600)",
    ),
    Flag::long("log-level").value("LEVEL").help("error, warn, info or debug (default: info)"),
    Flag::long("log-file").value("PATH").help(
        "append log lines to PATH instead of stderr (with a COMMAND the\n\
         default is $XDG_STATE_HOME/llxprt-code/credd.log, off the terminal)",
    ),
    Flag::long("log-stderr").help("log to stderr even with a COMMAND"),
    Flag::long("ready-fd")
        .value("N")
        .help("when listening, write the socket path and a newline to descriptor N"),
    Flag::long("foreground").short('D').help("stay in the foreground"),
    Flag::letter('s').help("print Bourne shell commands setting LLXPRT_CREDENTIAL_SOCKET"),
    Flag::letter('c').help("print C shell commands setting LLXPRT_CREDENTIAL_SOCKET"),
    Flag::long("print-socket").help("print the socket path only"),
    Flag::letter('k').help("stop the daemon named by LLXPRT_CREDD_PID"),
    Flag::long("help").short('h').help("print this help"),
    Flag::long("version").short('V').help("print the version"),
];

/// The help text: its option lines come from [`FLAGS`].
pub fn help() -> String {
    format!("{HELP_HEAD}{}{HELP_TAIL}", option_lines(FLAGS, FLAG_COLUMN_WIDTH))
}

/// Runs the daemon and returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    log::set_program("llxprt-credd");
    log::flush_on_panic();
    let args = match parse(args.into_iter().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("llxprt-credd: {e}");
            return EXIT_USAGE;
        }
    };
    if args.help {
        print!("{}", help());
        return EXIT_OK;
    }
    if args.version {
        println!("llxprt-credd {}", env!("CARGO_PKG_VERSION"));
        return EXIT_OK;
    }
    let result = if args.kill { crate::daemon::kill(&args) } else { crate::daemon::run(&args) };
    log::finish();
    exit_code("llxprt-credd", result)
}
