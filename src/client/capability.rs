/*!
Finding the capability token a daemon started with `--capability-file` or
`--capability-fd` requires in the handshake.

Looked up in this order, through a lookup function (normally the process
environment):

1. `LLXPRT_CAPABILITY_TOKEN`: the token itself (what `docker run
   --env-file` of the daemon's capability file sets);
2. `LLXPRT_CAPABILITY_FILE`: a file with a line
   `LLXPRT_CAPABILITY_TOKEN=<hex>` (the daemon's capability file, whose path
   `llxprt-credd -s/-c` and exec mode export);
3. `LLXPRT_CAPABILITY_FD`: llxprt-code's sandbox entrypoint transport; it
   must be `3`, and fd 3 must hold exactly the token and a newline (at most
   128 bytes).

Every token must be 64 lower-case hex characters.

The fd is read by opening `/dev/fd/3`, which needs no `unsafe` code. Unlike
llxprt-code, we neither close fd 3 nor remove `LLXPRT_CAPABILITY_FD` from
the environment afterwards (both would need libc or `unsafe`); the token is
read once per process and cached, so a second client in the same process
gets the same token.
*/
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::secret::SecretString;

/// Environment variable carrying the token itself.
pub const TOKEN_ENV: &str = crate::env::CAPABILITY_TOKEN;
/// Environment variable naming a capability file.
pub const FILE_ENV: &str = crate::env::CAPABILITY_FILE;
/// Environment variable naming the descriptor that holds the token.
pub const FD_ENV: &str = crate::env::CAPABILITY_FD;
/// The only descriptor llxprt-code's entrypoint uses (and we accept).
pub const CAPABILITY_FD: &str = "3";
/// Most bytes read from the capability descriptor.
pub const MAX_FD_BYTES: usize = 128;
/// Most bytes read from a capability file (an env file with a few lines).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Whether `s` has the token shape: 64 lower-case hex characters.
pub fn is_valid_token(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn checked(token: &str, source: &str) -> Result<SecretString> {
    if is_valid_token(token) {
        Ok(SecretString::from(token))
    } else {
        Err(Error::Usage(format!("the capability token from {source} is not 64 lower-case hex characters")))
    }
}

/// The capability token from the variables seen through `lookup`, or
/// `None` when none of them is set (or all are empty).
pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<OsString>) -> Result<Option<SecretString>> {
    let set = |name: &str| lookup(name).filter(|v| !v.is_empty());
    if let Some(token) = set(TOKEN_ENV) {
        let token = Zeroizing::new(token.into_string().unwrap_or_default());
        return checked(&token, TOKEN_ENV).map(Some);
    }
    if let Some(file) = set(FILE_ENV) {
        return from_file(Path::new(&file)).map(Some);
    }
    if let Some(fd) = set(FD_ENV) {
        if fd != CAPABILITY_FD {
            return Err(Error::Usage(format!("{FD_ENV} must be {CAPABILITY_FD}")));
        }
        return from_fd().map(Some);
    }
    Ok(None)
}

/// Reads the token from an env file holding `LLXPRT_CAPABILITY_TOKEN=<hex>`.
pub fn from_file(path: &Path) -> Result<SecretString> {
    let what = || format!("cannot read the capability file {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| Error::io(what(), e))?;
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_FILE_BYTES).read_to_string(&mut text).map_err(|e| Error::io(what(), e))?;
    parse_env_file(&text, path)
}

fn parse_env_file(text: &str, path: &Path) -> Result<SecretString> {
    let prefix = format!("{TOKEN_ENV}=");
    let value = text
        .lines()
        .find_map(|line| line.trim_end_matches('\r').strip_prefix(&prefix))
        .ok_or_else(|| Error::Usage(format!("{} has no {TOKEN_ENV}= line", path.display())))?;
    checked(value, &path.display().to_string())
}

/// Reads fd 3 once per process (later calls get the cached outcome).
fn from_fd() -> Result<SecretString> {
    static CACHED: OnceLock<std::result::Result<SecretString, String>> = OnceLock::new();
    CACHED.get_or_init(read_fd).clone().map_err(Error::Usage)
}

fn read_fd() -> std::result::Result<SecretString, String> {
    let path = format!("/dev/fd/{CAPABILITY_FD}");
    let fail = |e: std::io::Error| format!("cannot read the capability token from fd {CAPABILITY_FD}: {e}");
    let file = std::fs::File::open(&path).map_err(fail)?;
    let mut bytes = Zeroizing::new(Vec::with_capacity(MAX_FD_BYTES + 1));
    // One byte past the limit tells an oversize input from one that fits.
    file.take(MAX_FD_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(fail)?;
    parse_fd_content(&bytes)
}

/// Checks the descriptor's content: exactly the token and one newline.
fn parse_fd_content(bytes: &[u8]) -> std::result::Result<SecretString, String> {
    let bad = || format!("fd {CAPABILITY_FD} must hold 64 lower-case hex characters and a newline");
    if bytes.len() > MAX_FD_BYTES {
        return Err(bad());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad())?;
    match text.strip_suffix('\n') {
        Some(token) if is_valid_token(token) => Ok(SecretString::from(token)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |name| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| OsString::from(v))
    }

    #[test]
    fn token_shape() {
        assert!(is_valid_token(HEX));
        assert!(!is_valid_token(&HEX.to_uppercase()));
        assert!(!is_valid_token(&HEX[1..]));
        assert!(!is_valid_token(&format!("{}g", &HEX[1..])));
    }

    #[test]
    fn the_token_variable_wins_and_is_validated() {
        let token = from_lookup(&vars(&[(TOKEN_ENV, HEX), (FILE_ENV, "/nonexistent")])).unwrap();
        assert_eq!(token.unwrap().expose(), HEX);
        assert!(matches!(from_lookup(&vars(&[(TOKEN_ENV, "abc")])), Err(Error::Usage(_))));
        assert!(from_lookup(&vars(&[])).unwrap().is_none());
        assert!(from_lookup(&vars(&[(TOKEN_ENV, "")])).unwrap().is_none());
        let e = from_lookup(&vars(&[(FD_ENV, "4")])).unwrap_err();
        assert_eq!(e.to_string(), "LLXPRT_CAPABILITY_FD must be 3");
    }

    #[test]
    fn env_file_lines() {
        let p = Path::new("cap.env");
        let text = format!("# comment\r\nOTHER=1\r\n{TOKEN_ENV}={HEX}\r\n");
        assert_eq!(parse_env_file(&text, p).unwrap().expose(), HEX);
        assert!(
            parse_env_file("OTHER=1\n", p).unwrap_err().to_string().contains("no LLXPRT_CAPABILITY_TOKEN")
        );
        assert!(parse_env_file(&format!("{TOKEN_ENV}={HEX}x\n"), p).is_err());
    }

    #[test]
    fn fd_content_is_exactly_token_and_newline() {
        assert_eq!(parse_fd_content(format!("{HEX}\n").as_bytes()).unwrap().expose(), HEX);
        for bad in [HEX.to_owned(), format!("{HEX}\n\n"), format!(" {HEX}\n"), "x".repeat(200)] {
            assert!(parse_fd_content(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_never_show_the_token() {
        let wrong = format!("{}G", &HEX[1..]);
        let e = checked(&wrong, TOKEN_ENV).unwrap_err().to_string();
        assert!(!e.contains(&HEX[1..]), "{e}");
    }
}
