/*!
The commands of `llxprt-cred`, run after [`crate::cli::cred`] parsed
them: the host-store commands (`key ...`, `token ...`, [`store_cmds`]) and
`doctor` ([`doctor`]); the daemon commands (`status`, `get`, `get-key`,
`refresh`, [`daemon_cmds`]), which go through the same client library a
sandboxed program uses; and `login` / `logout` ([`login`]), which run
through a daemon when one is named and directly on the host otherwise.
They print results on stdout, problems on stderr, and return the exit
code.
*/
#![forbid(unsafe_code)]

mod daemon_cmds;
mod doctor;
mod login;
mod store_cmds;

use std::io::{self, Write};

use serde_json::Value;

use crate::cli::cred::{Args, Command};
use crate::error::{Error, Result};
use crate::token::OAuthToken;

/// Runs a parsed command (not `--help` or `--version`, which
/// [`crate::cli::cred::main`] answers) and returns the exit code.
pub(crate) fn run(args: &Args) -> Result<i32> {
    match &args.command {
        Command::Status => daemon_cmds::status(args),
        Command::Get(p, b) => daemon_cmds::daemon_get(args, p, b.as_deref()),
        Command::GetKey(name) => daemon_cmds::daemon_get_key(args, name),
        Command::Refresh(p, b) => daemon_cmds::daemon_refresh(args, p, b.as_deref()),
        Command::Login(p, b) => login::login(args, p, b.as_deref()),
        Command::Logout(p, b) => login::logout(args, p, b.as_deref()),
        _ => store_cmds::run(args),
    }
}

/// Prints `text` and a newline on stdout. Each line goes through
/// [`crate::log::printable`]: names and fields from the store or the
/// socket (which a sandbox may have written) cannot put terminal controls,
/// line separators or bidi controls on the user's screen.
pub(crate) fn out(text: impl AsRef<str>) -> Result<()> {
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

/// When a stored token expires, as `token list` and `doctor` say it:
/// `expires in 12m` or `expired`.
fn expiry_text(token: &OAuthToken, now: f64) -> String {
    let left = token.expiry() - now;
    if left > 0.0 { format!("expires in {}m", (left / 60.0).floor()) } else { "expired".into() }
}
