/*!
Name rules, checked before any storage call so that a hostile name (`../x`,
an empty string, a 10 kB string) never reaches a path or a keyring query.
The rules and messages are llxprt-code's.
*/
#![forbid(unsafe_code)]

use super::error::{StoreError, StoreErrorKind, StoreResult};

pub use crate::protocol::names::{DEFAULT_BUCKET, is_valid_key_name, is_valid_provider_name};

/// Longest name shown in a message.
const NAME_MAX_CHARS: usize = 64;

/// Checks a provider name.
pub fn check_provider(name: &str) -> StoreResult<()> {
    check_oauth_name(name, "provider")
}

/// Checks a bucket name.
pub fn check_bucket(name: &str) -> StoreResult<()> {
    check_oauth_name(name, "bucket")
}

fn check_oauth_name(name: &str, what: &str) -> StoreResult<()> {
    if is_valid_provider_name(name) {
        return Ok(());
    }
    Err(StoreError::new(
        StoreErrorKind::InvalidName,
        format!(
            "Invalid {what} name: {}. Allowed: letters, numbers, dashes, underscores, dots, @ (1-64 chars).",
            shown(name)
        ),
    ))
}

/// Checks an API key name.
pub fn check_key_name(name: &str) -> StoreResult<()> {
    if is_valid_key_name(name) {
        return Ok(());
    }
    Err(StoreError::new(
        StoreErrorKind::InvalidName,
        format!(
            "Key name {} is invalid. Use only letters, numbers, dashes, underscores, and dots (1-64 chars).",
            shown(name)
        ),
    ))
}

/// A rejected name as it may appear in a message: quoted, escaped, and cut
/// short, so a hostile name cannot forge log lines or flood them.
pub fn shown(name: &str) -> String {
    let cut: String = name.chars().take(NAME_MAX_CHARS).collect();
    let mut out = format!("{cut:?}");
    if cut.len() < name.len() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names() {
        for ok in ["anthropic", "a", "codex@work", "x.y_z-1", &"a".repeat(64)] {
            assert!(is_valid_provider_name(ok), "{ok}");
        }
        for bad in ["", "../x", "a/b", "a:b", "a b", "é", "a\0", &"a".repeat(65)] {
            assert!(!is_valid_provider_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn key_names_have_no_at_sign() {
        assert!(is_valid_key_name("OPENAI_KEY.prod-1"));
        assert!(!is_valid_key_name("a@b"));
        assert!(!is_valid_key_name(".."[..0].as_ref()));
        assert!(check_key_name("../etc/passwd").unwrap_err().message.contains("\"../etc/passwd\""));
    }

    #[test]
    fn shown_names_are_escaped_and_bounded() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert!(shown(&"x".repeat(1000)).len() < 80);
    }
}
