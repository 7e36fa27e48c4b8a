/*!
`llxprt-credd`'s command line and `main`: parse ([`parse`]), answer
`--help` and `--version`, run the daemon (or `-k`) in `crate::daemon`,
flush the log, map the result to an exit code.
*/
#![forbid(unsafe_code)]

mod args;

use std::ffi::OsString;

pub use args::{Announce, Args, parse};

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::error::Error;
use crate::log;

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
    let result = if args.kill { crate::daemon::kill(&args) } else { crate::daemon::run(&args) };
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
