/*!
`llxprt-cred`: the host-side companion. This module holds its command and
flag tables ([`COMMANDS`], [`FLAGS`]), the help made from them ([`help`],
and each command's part of it), and its `main`: parse (`args`), answer
`--help` and `--version`, run the command (`crate::commands`), map the
result to an exit code.
*/
#![forbid(unsafe_code)]

mod args;

use std::collections::BTreeSet;
use std::ffi::OsString;

pub(crate) use args::{Args, Command, parse};

use super::flags::{Flag, entry, option_lines};
use super::{EXIT_OK, EXIT_USAGE, exit_code};
use crate::log;

/// The help's text before the commands.
const HELP_HEAD: &str = "\
llxprt-cred - host-side companion of llxprt-credd

Usage: llxprt-cred [OPTIONS] COMMAND [ARGS]

";

/// Width of the first column of the command and option lines.
const COLUMN_WIDTH: usize = 29;

/// One command of `llxprt-cred` as the help shows it.
#[derive(Clone, Copy, Debug)]
pub struct CommandHelp {
    /// Its words and operands (`key set NAME`).
    pub usage: &'static str,
    /// What it does, one line of the help a line.
    pub help: &'static str,
}

const fn cmd(usage: &'static str, help: &'static str) -> CommandHelp {
    CommandHelp { usage, help }
}

/// Every command of `llxprt-cred`, in the groups and the order `--help`
/// shows them (a heading, then its commands): the parser accepts these
/// and no other, and the man page is checked against them.
pub const COMMANDS: &[(&str, &[CommandHelp])] = &[
    (
        "Host store commands (run on the host, never in the sandbox):",
        &[
            cmd("key set NAME", "store an API key (value from stdin, or typed at a hidden prompt)"),
            cmd("key get NAME", "print an API key"),
            cmd("key list", "list API key names"),
            cmd("key rm NAME", "delete an API key"),
            cmd("token list", "list stored OAuth tokens (provider:bucket, expiry, refreshable)"),
            cmd("token show PROVIDER[:BUCKET]", "print a token without its refresh_token"),
            cmd(
                "token import PROVIDER[:BUCKET]",
                "merge a token read as JSON from stdin into the stored one",
            ),
            cmd("token rm PROVIDER[:BUCKET]", "delete a token"),
            cmd(
                "doctor [--profile NAME]",
                "report the live backend, persistence, machine secret, locks,\n\
                 the scope of profile NAME, and what to do about each problem",
            ),
        ],
    ),
    (
        "Daemon commands (ask the running llxprt-credd, as the sandbox does):",
        &[
            cmd("status", "show the socket, the protocol version, and what the daemon serves"),
            cmd("get PROVIDER[:BUCKET]", "print the token the daemon serves (it never has a refresh_token)"),
            cmd("get-key NAME", "print the API key the daemon serves"),
            cmd(
                "refresh PROVIDER[:BUCKET]",
                "ask the daemon to refresh a token that has expired or is about\n\
                 to, on the host, and print it (the daemon must permit refresh)",
            ),
        ],
    ),
    (
        "Login (through the daemon when --socket or $LLXPRT_CREDENTIAL_SOCKET names one,\n\
         else directly on the host):",
        &[
            cmd(
                "login PROVIDER[:BUCKET]",
                "log in: shows the URL to open (and the code to type), then\n\
                 waits, or reads the pasted code#state (anthropic)",
            ),
            cmd("logout PROVIDER[:BUCKET]", "delete the stored token"),
        ],
    ),
];

/// Every flag of `llxprt-cred`, in the order `--help` shows them: the
/// parser accepts these and no other, and the man page is checked against
/// them.
pub const FLAGS: &[Flag] = &[
    Flag::long("store")
        .value("auto|keyring|file")
        .help("force a backend (default: $LLXPRT_CREDD_STORE, else auto)"),
    Flag::long("socket").value("PATH").help(
        "daemon commands: the daemon's socket\n\
         (default: $LLXPRT_CREDENTIAL_SOCKET)",
    ),
    Flag::long("capability-file").value("PATH").help(
        "daemon commands: the daemon's capability file (default:\n\
         $LLXPRT_CAPABILITY_TOKEN, else $LLXPRT_CAPABILITY_FILE,\n\
         else fd $LLXPRT_CAPABILITY_FD)",
    ),
    Flag::long("profile").value("NAME").help("doctor: show the scope llxprt-credd --profile NAME serves"),
    Flag::long("log-level").value("LEVEL").help("error, warn, info or debug (default: warn)"),
    Flag::long("bucket").value("B").help(
        "login/logout: the bucket (default: the one in PROVIDER:BUCKET,\n\
         else default)",
    ),
    Flag::long("flow").value("FLOW").help(
        "login: pkce_redirect, device_code or browser_redirect (default:\n\
         the provider's first; codex: browser_redirect)",
    ),
    Flag::long("help").short('h').word("help").help("print this help"),
    Flag::long("version").short('V').help("print the version"),
];

/// The help text: its command lines come from [`COMMANDS`], its option
/// lines from [`FLAGS`].
pub fn help() -> String {
    let mut text = HELP_HEAD.to_owned();
    for (heading, commands) in COMMANDS {
        text.push_str(heading);
        text.push('\n');
        for c in *commands {
            entry(&mut text, c.usage, c.help, COLUMN_WIDTH);
        }
        text.push('\n');
    }
    text.push_str("Options:\n");
    text.push_str(&option_lines(FLAGS, COLUMN_WIDTH));
    text
}

/// The command words (`key`, `set`, `get-key`, ...) of [`COMMANDS`], and
/// the ones [`FLAGS`] name (`help`).
pub fn command_words() -> BTreeSet<&'static str> {
    let usages = COMMANDS.iter().flat_map(|(_, commands)| commands.iter().map(|c| c.usage));
    let words =
        usages.flat_map(str::split_whitespace).filter(|w| w.starts_with(|c: char| c.is_ascii_lowercase()));
    words.chain(FLAGS.iter().filter_map(|f| f.word)).collect()
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
    exit_code("llxprt-cred", result)
}

/// The help, or for a command word its lines of the help (from
/// [`COMMANDS`]) and where the options are; the whole help for a word
/// that is not a command.
fn help_for(topic: Option<&str>) -> String {
    let Some(topic) = topic else { return help() };
    let mut lines = String::new();
    for c in COMMANDS.iter().flat_map(|(_, commands)| commands.iter()) {
        if c.usage.split_whitespace().next() == Some(topic) {
            entry(&mut lines, c.usage, c.help, COLUMN_WIDTH);
        }
    }
    if lines.is_empty() {
        return help();
    }
    format!(
        "Usage: llxprt-cred [OPTIONS] {topic} ...\n\n{lines}\nOptions: llxprt-cred --help; all of it: man llxprt-cred\n"
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
            assert!(help().contains(word), "{word} is in the help");
        }
        let words = command_words();
        for word in ["key", "set", "token", "import", "doctor", "get-key", "logout", "help"] {
            assert!(words.contains(word), "{word} is a command word");
        }
        assert!(
            !words.iter().any(|w| w.contains(['[', ']']) || w.starts_with(char::is_uppercase)),
            "{words:?}"
        );
    }
}
