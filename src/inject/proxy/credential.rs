/*!
The real credential behind a sentinel, looked up at the time of the
request, and the headers sent upstream with it in place of the client's.
*/
#![forbid(unsafe_code)]

use serde_json::Value;
use zeroize::Zeroizing;

use crate::inject::request::Head;
use crate::inject::routes::{Api, Route};
use crate::inject::sentinel::Credential;
use crate::server::Shared;
use crate::store::{KeyStore, TokenStore};

/// The real credential of `credential`, looked up now (a token refreshed
/// on read as `get_token` does): `(header name, value, extra headers)`.
pub(super) struct Real {
    headers: Vec<(String, Vec<u8>)>,
    /// The real credential, to scrub out of the response.
    pub(super) secret: Zeroizing<Vec<u8>>,
    /// The OAuth access token used (for the 401 retry), if an OAuth one.
    pub(super) access_token: Option<Zeroizing<String>>,
}

/// Why the real credential could not be had.
pub(super) enum NoCredential {
    /// Out of scope now, or not stored: the sentinel no longer stands for
    /// anything.
    Gone,
    /// The login is revoked or has no refresh token: log in on the host.
    Reauth,
    /// The store or the refresh failed.
    Failed,
}

pub(super) fn real_credential(
    shared: &Shared,
    route: &Route,
    credential: &Credential,
) -> Result<Real, NoCredential> {
    let scope = shared.scope();
    match credential {
        Credential::Key { name } => {
            if !scope.allows_key(name) {
                return Err(NoCredential::Gone);
            }
            let key = shared
                .store
                .keys
                .get_key(name)
                .map_err(|_| NoCredential::Failed)?
                .ok_or(NoCredential::Gone)?;
            let value = key.expose().as_bytes().to_vec();
            let secret = Zeroizing::new(value.clone());
            let header = match route.api {
                Api::Anthropic => ("x-api-key".to_owned(), value),
                Api::Gemini => ("x-goog-api-key".to_owned(), value),
                _ => ("authorization".to_owned(), [b"Bearer ".as_slice(), &value].concat()),
            };
            Ok(Real { headers: vec![header], secret, access_token: None })
        }
        Credential::Token { provider, bucket } => {
            if !scope.allows_token(provider, Some(bucket)) {
                return Err(NoCredential::Gone);
            }
            let stored = shared
                .store
                .tokens
                .get_token(provider, Some(bucket))
                .map_err(|_| NoCredential::Failed)?
                .ok_or(NoCredential::Gone)?;
            let token = shared.oauth.serve(provider, Some(bucket), stored).map_err(refresh_failure)?;
            Ok(token_headers(route, &token))
        }
    }
}

pub(super) fn refresh_failure(e: crate::oauth::RefreshError) -> NoCredential {
    use crate::oauth::RefreshError as R;
    match e {
        R::Revoked { .. } | R::NoRefreshToken => NoCredential::Reauth,
        R::NotFound => NoCredential::Gone,
        _ => NoCredential::Failed,
    }
}

pub(super) fn token_headers(route: &Route, token: &crate::token::OAuthToken) -> Real {
    let access = Zeroizing::new(token.access_token().to_owned());
    let mut headers = vec![("authorization".to_owned(), format!("Bearer {}", access.as_str()).into_bytes())];
    if route.api == Api::Codex {
        if let Some(account) = token.fields().get("account_id").and_then(Value::as_str) {
            headers.push(("chatgpt-account-id".to_owned(), account.as_bytes().to_vec()));
        }
    }
    Real { headers, secret: Zeroizing::new(access.as_bytes().to_vec()), access_token: Some(access) }
}

/// Hop-by-hop headers and the ones the proxy sets itself.
const DROPPED: [&str; 21] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "expect",
    "accept-encoding",
    "forwarded",
    "via",
    // headers some servers obey to change the method or path after the
    // allow-list has looked at them
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-original-method",
    "x-real-ip",
];
/// Every credential header: all are removed, one real one is added.
const CREDENTIAL_HEADERS: [&str; 6] =
    ["authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "chatgpt-account-id"];

/// The headers sent upstream: the client's, minus hop-by-hop and every
/// credential header, plus the real credential.
pub(super) fn upstream_headers(head: &Head, route: &Route, real: &Real) -> Vec<(String, Vec<u8>)> {
    let named_by_connection: Vec<String> = head
        .headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| {
            v.split(|&b| b == b',').map(|t| String::from_utf8_lossy(t.trim_ascii()).to_ascii_lowercase())
        })
        .collect();
    let mut out: Vec<(String, Vec<u8>)> = head
        .headers
        .iter()
        .filter(|(n, _)| {
            !DROPPED.contains(&n.as_str())
                && !CREDENTIAL_HEADERS.contains(&n.as_str())
                && !named_by_connection.contains(n)
                && !n.starts_with("x-forwarded-")
        })
        .cloned()
        .collect();
    if route.api == Api::Anthropic && real.access_token.is_some() {
        // The API refuses a subscription bearer token without this flag.
        const FLAG: &[u8] = b"oauth-2025-04-20";
        match out.iter_mut().find(|(n, _)| n == "anthropic-beta") {
            Some((_, v)) if v.split(|&b| b == b',').any(|t| t.trim_ascii() == FLAG) => {}
            Some((_, v)) => {
                v.extend_from_slice(b",");
                v.extend_from_slice(FLAG);
            }
            None => out.push(("anthropic-beta".to_owned(), FLAG.to_vec())),
        }
    }
    out.extend(real.headers.iter().cloned());
    out
}
