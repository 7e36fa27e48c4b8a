/*!
Which endpoint URLs a provider may name: `https://`, or plain `http://` to a
loopback host only, so a secret never crosses a network in clear.
*/
#![forbid(unsafe_code)]

use crate::error::{Error, Result};

/// Whether `url` is acceptable as an endpoint: `https://`, or `http://` to
/// a loopback host.
pub(super) fn check_url(url: &str, what: &str) -> Result<()> {
    if url.starts_with("https://") && url.len() > "https://".len() {
        return Ok(());
    }
    if url.starts_with("http://") && crate::oauth::http::is_loopback_url(url) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{what}: {url:?} must be an https:// URL (plain http:// only to 127.0.0.1, ::1 or localhost)"
    )))
}
