/*!
The authorization-code steps: PKCE material and the `state`, the
authorization URL, the pasted `code#state`, and the code exchange at the
token endpoint.
*/
#![forbid(unsafe_code)]

use std::io;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::{FlowError, upstream};
use crate::oauth::http::{Http, UpstreamError, classify};
use crate::oauth::provider::Provider;
use crate::protocol::message::FlowFailure;
use crate::secret::SecretString;
use crate::token::{OAuthToken, now_unix_seconds};

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `n` random bytes, base64url without padding.
fn random_b64url(n: usize) -> io::Result<SecretString> {
    let mut buf = zeroize::Zeroizing::new(vec![0u8; n]);
    crate::random::fill(&mut buf)?;
    Ok(SecretString::new(b64url(&buf)))
}

/// A PKCE verifier and its S256 challenge (RFC 7636).
pub struct Pkce {
    /// The verifier: stays on the host.
    pub verifier: SecretString,
    /// base64url(SHA-256(verifier)): goes into the authorization URL.
    pub challenge: String,
}

impl Pkce {
    /// A verifier of `bytes` random bytes (32 for Anthropic, 64 for Codex).
    pub fn new(bytes: usize) -> io::Result<Pkce> {
        let verifier = random_b64url(bytes.clamp(32, 96))?;
        let challenge = b64url(&Sha256::digest(verifier.expose().as_bytes()));
        Ok(Pkce { verifier, challenge })
    }
}

/// A fresh OAuth `state`: 32 random bytes, base64url. Independent of the
/// verifier (llxprt-code reuses the verifier as the state, which puts the
/// verifier into the URL the sandbox sees; here it never leaves the host).
pub fn new_state() -> io::Result<SecretString> {
    random_b64url(32)
}

/// Percent-encodes a query component (RFC 3986 unreserved characters kept,
/// space as `%20`).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded query component (`+` is a space).
pub fn query_unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The authorization URL the user opens: the provider's authorize
/// endpoint with its extra parameters, the client, the redirect, the
/// scope, the S256 challenge and the state.
pub fn authorize_url(provider: &Provider, redirect_uri: &str, challenge: &str, state: &str) -> String {
    let login = &provider.login;
    let base = login.authorize_url.as_deref().unwrap_or_default();
    let mut params: Vec<(&str, &str)> = Vec::new();
    let (before, after): (Vec<_>, Vec<_>) = login.authorize_params.iter().partition(|(k, _)| k == "code");
    params.extend(before.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    params.extend([
        ("response_type", "code"),
        ("client_id", provider.client_id.as_str()),
        ("redirect_uri", redirect_uri),
        ("scope", login.scope.as_str()),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256"),
    ]);
    params.extend(after.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    params.push(("state", state));
    let query: Vec<String> = params
        .iter()
        .filter(|(k, v)| !(k == &"scope" && v.is_empty()))
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{}", query.join("&"))
}

/// Compares two secrets without an early exit.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter().zip(y.iter()).fold(0u8, |acc, (p, q)| acc | (p ^ q)) == 0
}

/// Splits what the user pasted in the code-paste flow: `code#state`.
/// Whitespace around it is ignored. A paste without `#state` is refused:
/// the state is what proves the code belongs to this login.
pub fn split_pasted_code(pasted: &str) -> Result<(&str, &str), FlowError> {
    let pasted = pasted.trim();
    match pasted.split_once('#') {
        Some((code, state)) if !code.is_empty() && !state.is_empty() => Ok((code, state)),
        _ => Err(FlowError::new(FlowFailure::BadPaste, "the pasted text is not code#state")),
    }
}

/// Exchanges an authorization code for a token at the provider's token
/// endpoint (RFC 6749 §4.1.3 with the PKCE verifier; `state` too when
/// given, as Anthropic's endpoint expects).
pub fn exchange_code(
    http: &Http,
    provider: &Provider,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
    state: Option<&str>,
    timeout: Duration,
) -> Result<OAuthToken, FlowError> {
    let mut fields: Vec<(&str, &str)> = vec![("grant_type", "authorization_code"), ("code", code)];
    if let Some(state) = state {
        fields.push(("state", state));
    }
    fields.extend([
        ("client_id", provider.client_id.as_str()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", verifier),
    ]);
    if let Some(secret) = &provider.client_secret {
        fields.push(("client_secret", secret.expose()));
    }
    let failed = |e: &UpstreamError| {
        upstream(FlowFailure::ExchangeFailed, "The provider refused the authorization code", e)
    };
    let answer = http
        .post(&provider.token_url, &fields, provider.login.exchange_encoding, timeout)
        .map_err(|e| failed(&e))?;
    let map = classify(answer.status, &answer.body).map_err(|e| failed(&e))?;
    provider.token_from_answer(&map, now_unix_seconds()).map_err(|bad| {
        FlowError::new(
            FlowFailure::ExchangeFailed,
            format!("The provider's token answer is unusable: {}", bad.0),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::provider::Providers;

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        let p = Pkce::new(32).unwrap();
        assert_eq!(p.verifier.expose().len(), 43);
        assert_eq!(p.challenge, b64url(&Sha256::digest(p.verifier.expose().as_bytes())));
        assert_eq!(Pkce::new(64).unwrap().verifier.expose().len(), 86);
        // RFC 7636 appendix B
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(b64url(&Sha256::digest(v.as_bytes())), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert_ne!(new_state().unwrap().expose(), new_state().unwrap().expose());
    }

    #[test]
    fn authorize_urls_carry_llxprt_codes_parameters() {
        let providers = Providers::builtin();
        let a = providers.get("anthropic").unwrap();
        let url = authorize_url(a, "https://console.anthropic.com/oauth/code/callback", "CH", "ST");
        assert_eq!(
            url,
            "https://claude.ai/oauth/authorize?code=true&response_type=code&client_id=9d1c250a-e61b-44d9-88ed-5944d1962f5e\
&redirect_uri=https%3A%2F%2Fconsole.anthropic.com%2Foauth%2Fcode%2Fcallback&scope=org%3Acreate_api_key%20user%3Aprofile%20user%3Ainference\
&code_challenge=CH&code_challenge_method=S256&state=ST"
        );
        let c = providers.get("codex").unwrap();
        let url = authorize_url(c, "http://localhost:1455/auth/callback", "CH", "ST");
        assert!(url.starts_with("https://auth.openai.com/oauth/authorize?response_type=code&client_id=app_EMoamEEZ73f0CkXaXp7hrann"));
        assert!(url.contains("&scope=openid%20profile%20email%20offline_access&"));
        assert!(url.contains(
            "&id_token_add_organizations=true&codex_cli_simplified_flow=true&originator=codex_cli_rs&state=ST"
        ));
    }

    #[test]
    fn query_escaping_round_trips() {
        for s in ["a b", "x/y?z=1&w#v", "ümlaut", "plain-_.~"] {
            assert_eq!(query_unescape(&query_escape(s)), s);
        }
        assert_eq!(query_unescape("a+b%2"), "a b%2");
        assert_eq!(query_unescape("%zz"), "%zz");
    }

    #[test]
    fn a_paste_needs_code_and_state() {
        assert_eq!(split_pasted_code("  abc#def \n").unwrap(), ("abc", "def"));
        for bad in ["abc", "abc#", "#def", ""] {
            assert_eq!(split_pasted_code(bad).unwrap_err().kind, FlowFailure::BadPaste, "{bad}");
        }
        assert!(same_secret("x", "x") && !same_secret("x", "y"));
    }
}
