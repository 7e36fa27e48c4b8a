/*!
`llxprt-cred`: the host-side companion. This module holds its help text
and its `main`: parse (`args`), answer `--help` and `--version`, run the
command (`crate::commands`), map the result to an exit code.
*/
#![forbid(unsafe_code)]

mod args;

use std::ffi::OsString;

pub use args::{Args, Command, parse};

use super::{EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::error::Error;
use crate::log;

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
    let result = match &args.command {
        Command::Help(topic) => {
            print!("{}", help_for(topic.as_deref()));
            Ok(EXIT_OK)
        }
        Command::Version => {
            crate::commands::out(format!("llxprt-cred {}", env!("CARGO_PKG_VERSION"))).map(|()| EXIT_OK)
        }
        _ => crate::commands::run(&args),
    };
    match result {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
