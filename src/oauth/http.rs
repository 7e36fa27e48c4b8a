/*!
The HTTP calls to providers: POST a form or JSON body ([`Http::post`]),
the refresh grant ([`Http::refresh`]), and sorting an answer into what the
retry loop needs to know ([`classify`]). Logins use the same client.

Blocking ureq with rustls and the OS trust store. Two agents: loopback
endpoints go direct (ureq would otherwise send even `127.0.0.1` through
`ALL_PROXY`/`HTTPS_PROXY`), everything else honours the proxy variables.
Redirects are not followed (a token endpoint that redirects is
misconfigured, and a redirect would replay the refresh token elsewhere).
HTTP error statuses are answers to read, not errors.

Nothing here ever puts an upstream body, a token or the request into an
error or a log line: an error carries a status, a fixed description, or an
OAuth error code that passed [`safe_error_code`].
*/
#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};
use ureq::Agent;
use ureq::tls::{RootCerts, TlsConfig};
use zeroize::Zeroize;

use super::provider::{Encoding, Provider};

/// Largest token-endpoint answer read.
const MAX_ANSWER_BYTES: u64 = 64 * 1024;

/// OAuth error codes that mean the refresh token is gone for good:
/// RFC 6749's `invalid_grant`, and OpenAI's more specific codes.
const REVOKED_CODES: &[&str] =
    &["invalid_grant", "refresh_token_expired", "refresh_token_reused", "refresh_token_invalidated"];

/// Why a transient failure happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transient {
    /// A 5xx, 408 or 429 answer.
    Status(u16),
    /// No answer within the per-call timeout.
    Timeout,
    /// The connection could not be made (refused, reset, DNS).
    Connect,
}

/// What went wrong with one refresh call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamError {
    /// Worth retrying.
    Transient(Transient),
    /// The provider says the refresh token is revoked or expired.
    Revoked {
        /// The HTTP status.
        status: u16,
        /// The OAuth error code (`invalid_grant`, ...).
        code: String,
    },
    /// Any other 4xx (or 3xx): not retried.
    Rejected {
        /// The HTTP status.
        status: u16,
        /// The OAuth error code, when the body had a safe one.
        code: Option<String>,
    },
    /// A 2xx whose body is not a token.
    BadAnswer(&'static str),
    /// TLS, protocol or request errors: not retried.
    Failed(&'static str),
}

impl fmt::Display for Transient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transient::Status(s) => write!(f, "HTTP {s}"),
            Transient::Timeout => f.write_str("no answer in time"),
            Transient::Connect => f.write_str("cannot connect"),
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Transient(t) => write!(f, "{t}"),
            UpstreamError::Revoked { status, code } => write!(f, "HTTP {status}, {code}"),
            UpstreamError::Rejected { status, code: Some(code) } => write!(f, "HTTP {status}, {code}"),
            UpstreamError::Rejected { status, code: None } => write!(f, "HTTP {status}"),
            UpstreamError::BadAnswer(m) | UpstreamError::Failed(m) => f.write_str(m),
        }
    }
}

/// The host of an `http(s)://` URL (brackets kept off IPv6 literals).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(host_port.split(':').next().unwrap_or(host_port))
}

/// Whether a URL points at this machine's loopback interface.
pub fn is_loopback_url(url: &str) -> bool {
    match url_host(url) {
        Some(host) => {
            host.eq_ignore_ascii_case("localhost")
                || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// An OAuth `error` code from an error body, when it looks like one
/// (`^[A-Za-z0-9_.-]{1,64}$`): only such a code may reach a message.
pub fn safe_error_code(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    let code = match value.get("error")? {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o.get("code").and_then(Value::as_str)?,
        _ => return None,
    };
    let safe = !code.is_empty()
        && code.len() <= 64
        && code.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    safe.then(|| code.to_owned())
}

/// Sorts a status and body into success or an [`UpstreamError`].
pub fn classify(status: u16, body: &str) -> Result<Fields, UpstreamError> {
    match status {
        200..=299 => match serde_json::from_str::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Fields(map)),
            _ => Err(UpstreamError::BadAnswer("the provider's answer is not a JSON object")),
        },
        408 | 429 | 500..=599 => Err(UpstreamError::Transient(Transient::Status(status))),
        _ => {
            let code = safe_error_code(body);
            match code {
                Some(c) if status >= 400 && REVOKED_CODES.contains(&c.as_str()) => {
                    Err(UpstreamError::Revoked { status, code: c })
                }
                code => Err(UpstreamError::Rejected { status, code }),
            }
        }
    }
}

fn agent(proxy: Option<ureq::Proxy>) -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(proxy)
        .user_agent(concat!("llxprt-credd/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(RootCerts::PlatformVerifier).build())
        .build()
        .into()
}

fn transport_error(e: &ureq::Error) -> UpstreamError {
    use ureq::Error as E;
    match e {
        E::Timeout(_) => UpstreamError::Transient(Transient::Timeout),
        E::Io(io)
            if io.kind() == std::io::ErrorKind::TimedOut || io.kind() == std::io::ErrorKind::WouldBlock =>
        {
            UpstreamError::Transient(Transient::Timeout)
        }
        E::Io(_) | E::HostNotFound | E::ConnectionFailed | E::ConnectProxyFailed(_) => {
            UpstreamError::Transient(Transient::Connect)
        }
        E::BodyExceedsLimit(_) => UpstreamError::BadAnswer("the provider's answer is too large"),
        E::Tls(_) | E::Rustls(_) => UpstreamError::Failed("TLS failure talking to the provider"),
        _ => UpstreamError::Failed("HTTP protocol error talking to the provider"),
    }
}

/// The HTTP client of the refresh.
pub struct Http {
    direct: Agent,
    proxied: Agent,
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl Http {
    /// Two agents: direct for loopback, the environment's proxy otherwise.
    pub fn new() -> Http {
        Http { direct: agent(None), proxied: agent(ureq::Proxy::try_from_env()) }
    }

    /// POSTs the refresh grant for `refresh_token` to the provider's token
    /// endpoint, giving up after `timeout`, and returns the answer's JSON
    /// object on a 2xx.
    pub fn refresh(
        &self,
        provider: &Provider,
        refresh_token: &str,
        timeout: Duration,
    ) -> Result<Fields, UpstreamError> {
        let secret = provider.client_secret.as_ref().map(|s| s.expose());
        let mut fields: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", provider.client_id.as_str()),
        ];
        if let Some(secret) = secret {
            fields.push(("client_secret", secret));
        }
        let answer = self.post(&provider.token_url, &fields, provider.encoding, timeout)?;
        classify(answer.status, &answer.body)
    }

    /// POSTs `fields` to `url` encoded as `encoding`, giving up after
    /// `timeout`. Any HTTP status is an [`Answer`]; only transport
    /// failures are errors. The request body is wiped after sending; the
    /// caller wipes the answer's body.
    pub fn post(
        &self,
        url: &str,
        fields: &[(&str, &str)],
        encoding: Encoding,
        timeout: Duration,
    ) -> Result<Answer, UpstreamError> {
        let agent = if is_loopback_url(url) { &self.direct } else { &self.proxied };
        let request = agent
            .post(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Accept", "application/json");
        // The bodies carry refresh tokens, codes and verifiers: each is
        // built in one allocation of its final size (no reallocation leaves
        // a copy behind) and wiped once sent.
        let sent = match encoding {
            Encoding::Form => {
                let body = form_body(fields);
                request.header("Content-Type", "application/x-www-form-urlencoded").send(&body[..])
            }
            Encoding::Json => {
                let mut object: Map<String, Value> =
                    fields.iter().map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned()))).collect();
                // Worst case: every byte escaped as \u00XX, plus quotes and separators.
                let room = 2 + fields.iter().map(|(k, v)| 6 * (k.len() + v.len()) + 6).sum::<usize>();
                let mut body = zeroize::Zeroizing::new(Vec::with_capacity(room));
                serde_json::to_writer(&mut *body, &object).expect("a JSON map serialises");
                wipe_values(&mut object);
                request.header("Content-Type", "application/json").send(&body[..])
            }
        };
        let mut response = sent.map_err(|e| transport_error(&e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .map_err(|e| transport_error(&e))?;
        Ok(Answer { status, body })
    }
}

fn form_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `fields` as an `application/x-www-form-urlencoded` body (every byte
/// but the unreserved ones percent-encoded), in one allocation.
fn form_body(fields: &[(&str, &str)]) -> zeroize::Zeroizing<Vec<u8>> {
    let escaped = |s: &str| s.bytes().map(|b| if form_unreserved(b) { 1 } else { 3 }).sum::<usize>();
    let len = fields.iter().map(|(k, v)| escaped(k) + escaped(v) + 2).sum::<usize>();
    let mut body = zeroize::Zeroizing::new(Vec::with_capacity(len));
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            body.push(b'&');
        }
        for (j, part) in [k, v].into_iter().enumerate() {
            if j > 0 {
                body.push(b'=');
            }
            for b in part.bytes() {
                if form_unreserved(b) {
                    body.push(b);
                } else {
                    body.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
                }
            }
        }
    }
    body
}

/// Wipes the string values of `map` (and of nested objects and arrays).
pub fn wipe_values(map: &mut Map<String, Value>) {
    for v in map.values_mut() {
        wipe_value(v);
    }
}

fn wipe_value(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Object(m) => wipe_values(m),
        Value::Array(a) => a.iter_mut().for_each(wipe_value),
        _ => {}
    }
}

/// A provider's parsed answer (a JSON object that may hold tokens): wiped
/// on drop.
#[derive(PartialEq)]
pub struct Fields(Map<String, Value>);

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fields {{ {} fields, redacted }}", self.0.len())
    }
}

impl std::ops::Deref for Fields {
    type Target = Map<String, Value>;
    fn deref(&self) -> &Map<String, Value> {
        &self.0
    }
}

impl Drop for Fields {
    fn drop(&mut self) {
        wipe_values(&mut self.0);
    }
}

/// An HTTP answer: its status and body. The body may hold secrets: it is
/// never logged or quoted, and is wiped on drop.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.body.zeroize();
    }
}

impl fmt::Debug for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Answer {{ status: {}, body: <redacted> }}", self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for yes in [
            "http://127.0.0.1:8/t",
            "http://localhost/x",
            "http://[::1]:9/",
            "http://127.5.0.1",
            "http://u@127.0.0.1:1/",
        ] {
            assert!(is_loopback_url(yes), "{yes}");
        }
        for no in [
            "https://auth.openai.com/oauth/token",
            "http://10.0.0.1/",
            "http://localhost.evil.example/",
            "nonsense",
        ] {
            assert!(!is_loopback_url(no), "{no}");
        }
    }

    #[test]
    fn statuses_and_bodies_are_sorted_for_the_retry_loop() {
        assert!(classify(200, r#"{"access_token":"a"}"#).is_ok());
        assert_eq!(
            classify(200, "<html>"),
            Err(UpstreamError::BadAnswer("the provider's answer is not a JSON object"))
        );
        for s in [500, 502, 503, 429, 408] {
            assert_eq!(classify(s, "x"), Err(UpstreamError::Transient(Transient::Status(s))));
        }
        assert_eq!(
            classify(400, r#"{"error":"invalid_grant","error_description":"SECRET detail"}"#),
            Err(UpstreamError::Revoked { status: 400, code: "invalid_grant".into() })
        );
        assert_eq!(
            classify(401, r#"{"error":{"code":"refresh_token_reused","message":"m"}}"#),
            Err(UpstreamError::Revoked { status: 401, code: "refresh_token_reused".into() })
        );
        assert_eq!(
            classify(401, r#"{"error":"invalid_client"}"#),
            Err(UpstreamError::Rejected { status: 401, code: Some("invalid_client".into()) })
        );
        assert_eq!(
            classify(400, r#"{"error":"rt-CANARY <script>"}"#),
            Err(UpstreamError::Rejected { status: 400, code: None }),
            "a code that is not code-shaped never reaches a message"
        );
        assert_eq!(classify(302, ""), Err(UpstreamError::Rejected { status: 302, code: None }));
    }
}
