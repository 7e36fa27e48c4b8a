/*!
Command lines of the two binaries: lexopt tokens → a typed command, the
help text, and each binary's `main`, which hands the command to the code
that runs it (`crate::daemon` for `llxprt-credd`, `crate::commands` for
`llxprt-cred`) and maps errors to exit codes (0 success, 1 failure or
"not found", 2 usage). Parsing is pure and unit-tested; each binary's
flags are listed once in a table (`flags`) that its parser and its
`--help` share.
*/
#![forbid(unsafe_code)]

pub mod cred;
pub mod credd;
pub mod flags;

use std::ffi::OsString;

use crate::error::Error;

/// Exit code for success.
pub(crate) const EXIT_OK: i32 = 0;
/// Exit code for a failure or an absent item.
pub(crate) const EXIT_FAILURE: i32 = 1;
/// Exit code for a usage error.
pub(crate) const EXIT_USAGE: i32 = 2;

/// The exit code of what a binary ran; an error is said once on stderr,
/// after the program's name.
pub(crate) fn exit_code(program: &str, result: Result<i32, Error>) -> i32 {
    match result {
        Ok(code) => code,
        Err(Error::Usage(m)) => {
            eprintln!("{program}: {m}");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("{program}: {e}");
            EXIT_FAILURE
        }
    }
}

/// Turns a lexopt error into a usage error.
pub(crate) fn usage(e: lexopt::Error) -> Error {
    Error::Usage(e.to_string())
}

/// A value argument as UTF-8.
pub(crate) fn string_value(value: OsString, what: &str) -> Result<String, Error> {
    value.into_string().map_err(|_| Error::Usage(format!("{what} must be valid UTF-8")))
}

/// Splits `PROVIDER[:BUCKET]`.
pub(crate) fn provider_bucket(spec: &str) -> (String, Option<String>) {
    match spec.split_once(':') {
        Some((p, b)) => (p.to_owned(), Some(b.to_owned())),
        None => (spec.to_owned(), None),
    }
}
