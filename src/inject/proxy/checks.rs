/*!
The proxy's checks on a request before it goes upstream: the share of the
body budget it holds, a key in the URL, the sentinel it presents, and the
body policy.
*/
#![forbid(unsafe_code)]

use std::sync::atomic::Ordering;

use zeroize::Zeroizing;

use super::DEFAULT_MAX_BODY;
use crate::inject::request::{self, Head, Refusal};
use crate::inject::routes::{Api, Route};
use crate::inject::sentinel::Credential;
use crate::server::Shared;

/// Request body bytes all connections may hold at once (bodies are kept
/// whole for the policy and the 401 retry): eight of the largest.
const BODY_BUDGET: usize = 8 * DEFAULT_MAX_BODY;
static BODIES_IN_FLIGHT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A share of [`BODY_BUDGET`], given back when dropped.
pub(super) struct BodyBudget(usize);

impl BodyBudget {
    pub(super) fn take(bytes: usize) -> Option<BodyBudget> {
        let before = BODIES_IN_FLIGHT.fetch_add(bytes, Ordering::SeqCst);
        // one request alone always gets its share (bounded by the body limit)
        if before > 0 && before.saturating_add(bytes) > BODY_BUDGET {
            BODIES_IN_FLIGHT.fetch_sub(bytes, Ordering::SeqCst);
            return None;
        }
        Some(BodyBudget(bytes))
    }
}

impl Drop for BodyBudget {
    fn drop(&mut self) {
        BODIES_IN_FLIGHT.fetch_sub(self.0, Ordering::SeqCst);
    }
}

/// `key=` among the query parameters (a credential in the URL).
pub(super) fn has_key_param(query: &str) -> bool {
    query
        .split('&')
        .any(|p| percent_decoded(p.split('=').next().unwrap_or_default()).eq_ignore_ascii_case(b"key"))
}

/// `text` with its `%XX` escapes decoded (others left as they are).
fn percent_decoded(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The credential the request's sentinel stands for, when the sentinel is
/// one of ours and belongs to this route.
pub(super) fn sentinel_of(shared: &Shared, route: &'static Route, head: &Head) -> Option<Credential> {
    let presented = match route.api {
        Api::Gemini => head.header("x-goog-api-key").map(<[u8]>::to_vec),
        Api::Anthropic => head.header("x-api-key").map(<[u8]>::to_vec).or_else(|| bearer(head)),
        Api::Codex | Api::OpenAi => bearer(head),
    }?;
    let presented = Zeroizing::new(String::from_utf8(presented).ok()?);
    let (credential, owner) = shared.sentinels.lookup(presented.trim())?;
    (owner == route).then_some(credential)
}

fn bearer(head: &Head) -> Option<Vec<u8>> {
    let v = head.header("authorization")?;
    let rest = v.strip_prefix(b"Bearer ").or_else(|| v.strip_prefix(b"bearer "))?;
    Some(rest.to_vec())
}

/// The body policy: one JSON object, and no remote tool servers unless
/// allowed. Returns the model name (sanitised) and `stream` for the audit.
pub(super) fn policy(body: &[u8], allow_mcp: bool) -> Result<(Option<String>, Option<bool>), Refusal> {
    let facts = crate::inject::body::facts(body).map_err(|_| request::NOT_JSON)?;
    if facts.mcp && !allow_mcp {
        return Err(request::MCP);
    }
    let model = facts.model.map(|m| {
        let ok = !m.is_empty()
            && m.len() <= 128
            && m.chars().all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c));
        if ok { m } else { "?".to_owned() }
    });
    Ok((model, facts.stream))
}

pub(super) fn printable_word(s: &str) -> String {
    if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_uppercase()) {
        s.to_owned()
    } else {
        "?".into()
    }
}
