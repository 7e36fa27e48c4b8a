/*!
Sentinels: what the credential socket serves in inject mode instead of a
real token or key. Each is 64 bytes from the OS generator behind a fixed
prefix in the shape llxprt-code's own checks accept for that provider (a
Claude subscription sentinel starts `sk-ant-oat`, an Anthropic key's must
not). One per (provider, bucket) or key name, made when first served,
stable for the daemon's life, kept only in memory and wiped on drop; it is
valid only on its credential's route.
*/
#![forbid(unsafe_code)]

use std::sync::Mutex;

use base64::Engine;
use zeroize::Zeroizing;

use super::routes::{self, Route};

/// The credential a sentinel stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credential {
    /// An OAuth token.
    Token { provider: String, bucket: String },
    /// An API key.
    Key { name: String },
}

struct Entry {
    credential: Credential,
    route: &'static Route,
    value: Zeroizing<String>,
}

/// The daemon's sentinels.
#[derive(Default)]
pub struct Sentinels {
    table: Mutex<Vec<Entry>>,
}

/// What went wrong making a sentinel.
#[derive(Debug, PartialEq, Eq)]
pub enum NoSentinel {
    /// The credential has no route (a provider that cannot use a base URL,
    /// or a key no profile ties to a provider).
    NoRoute,
    /// The OS random generator failed.
    Random,
}

impl Sentinels {
    /// The sentinel of OAuth token `provider:bucket`.
    pub fn for_token(&self, provider: &str, bucket: &str) -> Result<String, NoSentinel> {
        let route = routes::token_route(provider).ok_or(NoSentinel::NoRoute)?;
        let prefix =
            if route.api == routes::Api::Codex { "llxprtcredd-codex-" } else { "sk-ant-oat01-llxprtcredd-" };
        let credential = Credential::Token { provider: provider.to_owned(), bucket: bucket.to_owned() };
        self.get_or_make(credential, route, || base64url(prefix))
    }

    /// The sentinel of API key `name`, whose profile's provider is
    /// `provider`.
    pub fn for_key(&self, name: &str, provider: Option<&str>) -> Result<String, NoSentinel> {
        let route = provider.and_then(routes::key_route).ok_or(NoSentinel::NoRoute)?;
        let credential = Credential::Key { name: name.to_owned() };
        self.get_or_make(credential, route, || match route.api {
            routes::Api::Anthropic => base64url("sk-ant-api03-llxprtcredd-"),
            routes::Api::Gemini => base64url("AIzaLLXPRTCREDD-"),
            _ => base62("sk-llxprtcredd"),
        })
    }

    fn get_or_make(
        &self,
        credential: Credential,
        route: &'static Route,
        make: impl FnOnce() -> Option<String>,
    ) -> Result<String, NoSentinel> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = table.iter().find(|e| e.credential == credential) {
            return Ok(e.value.to_string());
        }
        let value = Zeroizing::new(make().ok_or(NoSentinel::Random)?);
        let out = value.to_string();
        table.push(Entry { credential, route, value });
        Ok(out)
    }

    /// The credential and route of sentinel `value`, comparing against
    /// every entry in constant time.
    pub fn lookup(&self, value: &str) -> Option<(Credential, &'static Route)> {
        let table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = None;
        for e in table.iter() {
            if crate::secret::constant_time_eq(e.value.as_bytes(), value.as_bytes()) {
                found = Some((e.credential.clone(), e.route));
            }
        }
        found
    }

    /// Whether `value` is one of this daemon's sentinels.
    pub fn is_sentinel(&self, value: &str) -> bool {
        self.lookup(value).is_some()
    }
}

fn random(n: usize) -> Option<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(vec![0u8; n]);
    crate::random::fill(&mut buf).ok()?;
    Some(buf)
}

/// `prefix` and 64 random bytes in base64url (86 characters).
fn base64url(prefix: &str) -> Option<String> {
    let bytes = random(64)?;
    Some(format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..])))
}

/// `prefix` and 86 random letters and digits (about 512 bits).
fn base62(prefix: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(prefix.len() + 86);
    out.push_str(prefix);
    while out.len() < prefix.len() + 86 {
        for b in random(64)?.iter() {
            // 248 = 4 × 62: rejecting the rest keeps each letter equally likely
            if *b < 248 && out.len() < prefix.len() + 86 {
                out.push(ALPHABET[(*b % 62) as usize] as char);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_stability_and_routes() {
        let s = Sentinels::default();
        let oat = s.for_token("claudecode", "default").unwrap();
        assert!(oat.starts_with("sk-ant-oat01-llxprtcredd-") && oat.len() == 25 + 86, "{oat}");
        assert_eq!(s.for_token("claudecode", "default").unwrap(), oat, "stable");
        assert_ne!(s.for_token("claudecode", "work").unwrap(), oat, "one per bucket");
        let codex = s.for_token("codex", "default").unwrap();
        assert!(codex.starts_with("llxprtcredd-codex-"));
        let openai = s.for_key("OPENAI", Some("openai")).unwrap();
        assert!(
            openai.starts_with("sk-llxprtcredd") && openai[14..].chars().all(|c| c.is_ascii_alphanumeric())
        );
        assert_eq!(openai.len(), 14 + 86);
        assert!(s.for_key("A", Some("anthropic")).unwrap().starts_with("sk-ant-api03-llxprtcredd-"));
        assert!(s.for_key("G", Some("gemini")).unwrap().starts_with("AIzaLLXPRTCREDD-"));
        assert_eq!(s.for_key("X", None), Err(NoSentinel::NoRoute));
        assert_eq!(s.for_token("qwen", "default"), Err(NoSentinel::NoRoute));
        let (cred, route) = s.lookup(&codex).unwrap();
        assert_eq!(cred, Credential::Token { provider: "codex".into(), bucket: "default".into() });
        assert_eq!(route.host, "chatgpt.com");
        assert!(s.lookup("sk-ant-oat01-llxprtcredd-nope").is_none());
        let other = Sentinels::default();
        assert_ne!(other.for_token("claudecode", "default").unwrap(), oat, "two daemons never share one");
    }
}
