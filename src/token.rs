/*!
The trust-boundary rules for OAuth tokens, in one place.

A token is a JSON object with `access_token`, `expiry` (Unix seconds) and
`token_type`, plus any provider fields (`account_id`, `id_token`,
`resource_url`, ...) that must survive every read, merge and write. The
validation mirrors llxprt-code's token schema so that whatever we store,
llxprt-code can read, and the other way round.

- [`OAuthToken::sanitize`] is the only way to get a [`SanitizedToken`], and a
  `SanitizedToken` is the only token type the server may send.
- [`OAuthToken::merge`] combines a stored token with a new one without ever
  losing the stored `refresh_token` (or any other field) to an absent, null
  or empty value.
- [`OAuthToken::sandbox_update`] is what a save from the sandbox may do:
  change the access token, its expiry, type and scope, nothing else.
- [`OAuthToken::same_account`] decides whether a login from the sandbox may
  replace a stored one.
*/
#![forbid(unsafe_code)]

use serde_json::{Map, Value};
use std::fmt;
use zeroize::Zeroize;

/// Why a JSON value is not a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenError(pub &'static str);

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for TokenError {}

/// A validated OAuth token, every field kept. `Debug` is redacted and the
/// string fields are wiped on drop.
#[derive(Clone, PartialEq)]
pub struct OAuthToken(Map<String, Value>);

/// A token with `refresh_token` removed: the only token shape that may leave
/// the host.
#[derive(Clone, PartialEq)]
pub struct SanitizedToken(Map<String, Value>);

const REFRESH_TOKEN: &str = "refresh_token";
/// The only fields a save from the sandbox may change (SPEC §11.2).
pub const SANDBOX_WRITABLE_FIELDS: [&str; 4] = ["access_token", "expiry", "token_type", "scope"];

impl OAuthToken {
    /// Validates a JSON object as a token (llxprt-code's schema: string
    /// `access_token`, numeric `expiry`, `token_type` "Bearer" or "bearer",
    /// optional string `refresh_token` and `resource_url`, optional string or
    /// null `scope`). Unknown fields are kept.
    pub fn from_map(map: Map<String, Value>) -> Result<Self, TokenError> {
        match map.get("access_token") {
            Some(Value::String(_)) => {}
            _ => return Err(TokenError("token needs a string access_token")),
        }
        match map.get("expiry") {
            Some(Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => {}
            _ => return Err(TokenError("token needs a numeric expiry (Unix seconds)")),
        }
        match map.get("token_type").and_then(Value::as_str) {
            Some("Bearer" | "bearer") => {}
            _ => return Err(TokenError("token_type must be \"Bearer\" or \"bearer\"")),
        }
        for field in [REFRESH_TOKEN, "resource_url"] {
            if !matches!(map.get(field), None | Some(Value::String(_))) {
                return Err(TokenError("refresh_token and resource_url must be strings"));
            }
        }
        if !matches!(map.get("scope"), None | Some(Value::String(_) | Value::Null)) {
            return Err(TokenError("scope must be a string or null"));
        }
        Ok(OAuthToken(map))
    }

    /// Validates any JSON value as a token.
    pub fn from_value(value: Value) -> Result<Self, TokenError> {
        match value {
            Value::Object(map) => Self::from_map(map),
            _ => Err(TokenError("token must be a JSON object")),
        }
    }

    /// Parses and validates a stored token.
    pub fn from_json(text: &str) -> Result<Self, TokenError> {
        let value: Value = serde_json::from_str(text).map_err(|_| TokenError("token is not valid JSON"))?;
        Self::from_value(value)
    }

    /// The compact JSON text stored in the keyring or file.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("a JSON map always serialises")
    }

    /// The access token.
    pub fn access_token(&self) -> &str {
        self.0.get("access_token").and_then(Value::as_str).unwrap_or_default()
    }

    /// Expiry in Unix seconds.
    pub fn expiry(&self) -> f64 {
        self.0.get("expiry").and_then(Value::as_f64).unwrap_or(0.0)
    }

    /// The refresh token, when present and non-empty.
    pub fn refresh_token(&self) -> Option<&str> {
        self.0.get(REFRESH_TOKEN).and_then(Value::as_str).filter(|s| !s.is_empty())
    }

    /// Removes the refresh token (after the provider revoked it).
    pub fn clear_refresh_token(&mut self) {
        if let Some(Value::String(s)) = self.0.get_mut(REFRESH_TOKEN) {
            s.zeroize();
        }
        self.0.remove(REFRESH_TOKEN);
    }

    /// Read access to every field.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.0
    }

    /// The same token without `refresh_token`. Every path that sends a token
    /// off the host goes through here.
    pub fn sanitize(&self) -> SanitizedToken {
        let mut map = self.0.clone();
        if let Some(Value::String(s)) = map.get_mut(REFRESH_TOKEN) {
            s.zeroize();
        }
        map.remove(REFRESH_TOKEN);
        SanitizedToken(map)
    }

    /// Merges `new` into `stored`: every field of `new` wins, except that a
    /// field absent, null or "" in `new` keeps the stored value. So a refresh
    /// answer without `refresh_token` or `account_id` keeps the stored ones.
    pub fn merge(stored: &OAuthToken, new: &OAuthToken) -> OAuthToken {
        let mut merged = stored.0.clone();
        for (key, value) in &new.0 {
            let empty = matches!(value, Value::Null) || value.as_str() == Some("");
            if !empty {
                merged.insert(key.clone(), value.clone());
            }
        }
        OAuthToken(merged)
    }

    /// What a save from the sandbox does to the stored record (SPEC §11.2):
    /// only [`SANDBOX_WRITABLE_FIELDS`] come from `incoming`; every other
    /// field (the refresh token, `account_id`, `id_token`, `resource_url`,
    /// anything unknown) keeps the stored value or stays absent. So a
    /// record never grows through the socket and a sandbox cannot re-point
    /// the host's login. `None` when `incoming` lacks a valid
    /// `access_token`/`expiry`/`token_type`.
    pub fn sandbox_update(stored: Option<&OAuthToken>, incoming: &Map<String, Value>) -> Option<OAuthToken> {
        let mut record = stored.map(|s| s.0.clone()).unwrap_or_default();
        for field in SANDBOX_WRITABLE_FIELDS {
            match incoming.get(field) {
                Some(v) if !v.is_null() => {
                    record.insert(field.to_owned(), v.clone());
                }
                _ if field == "scope" => {}
                _ => return None,
            }
        }
        OAuthToken::from_map(record).ok()
    }

    /// The account this login belongs to, where the provider names one
    /// (Codex: `account_id`, taken from the id_token's claims).
    pub fn account(&self) -> Option<&str> {
        self.0.get("account_id").and_then(Value::as_str).filter(|a| !a.is_empty())
    }

    /// Whether `new`, a completed login, may replace `stored` when the
    /// login came from the sandbox (SPEC §11.3): only over nothing, or over
    /// a login of the same account; where either side names no account, no.
    pub fn same_account(stored: &OAuthToken, new: &OAuthToken) -> bool {
        matches!((stored.account(), new.account()), (Some(a), Some(b)) if a == b)
    }

    /// Whether the token expires within `seconds` of `now` (Unix seconds).
    pub fn expires_within(&self, now: f64, seconds: f64) -> bool {
        self.expiry() <= now + seconds
    }
}

impl SanitizedToken {
    /// The fields that may be sent.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Consumes the token into its JSON map (for building a response).
    pub fn into_map(mut self) -> Map<String, Value> {
        std::mem::take(&mut self.0)
    }
}

fn wipe(map: &mut Map<String, Value>) {
    for value in map.values_mut() {
        if let Value::String(s) = value {
            s.zeroize();
        }
    }
}

impl Drop for OAuthToken {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

impl Drop for SanitizedToken {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

fn redacted_fields(map: &Map<String, Value>, f: &mut fmt::Formatter<'_>, name: &str) -> fmt::Result {
    let keys: Vec<&String> = map.keys().collect();
    write!(f, "{name} {{ fields: {keys:?}, values: <redacted> }}")
}

impl fmt::Debug for OAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        redacted_fields(&self.0, f, "OAuthToken")
    }
}

impl fmt::Debug for SanitizedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        redacted_fields(&self.0, f, "SanitizedToken")
    }
}

/// Current wall-clock time in Unix seconds.
pub fn now_unix_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn token(v: Value) -> OAuthToken {
        OAuthToken::from_value(v).unwrap()
    }

    #[test]
    fn validation_follows_llxprt_schema() {
        assert!(OAuthToken::from_value(json!({"access_token":"a","expiry":1,"token_type":"Bearer"})).is_ok());
        assert!(
            OAuthToken::from_value(
                json!({"access_token":"a","expiry":1.5,"token_type":"bearer","scope":null})
            )
            .is_ok()
        );
        for bad in [
            json!([]),
            json!({"expiry":1,"token_type":"Bearer"}),
            json!({"access_token":1,"expiry":1,"token_type":"Bearer"}),
            json!({"access_token":"a","expiry":"1","token_type":"Bearer"}),
            json!({"access_token":"a","expiry":1,"token_type":"MAC"}),
            json!({"access_token":"a","expiry":1,"token_type":"Bearer","refresh_token":5}),
            json!({"access_token":"a","expiry":1,"token_type":"Bearer","scope":5}),
        ] {
            assert!(OAuthToken::from_value(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn sanitize_drops_only_refresh_token() {
        let t = token(json!({"access_token":"a","expiry":1,"token_type":"Bearer",
            "refresh_token":"r","account_id":"acc","id_token":"i","resource_url":"u"}));
        let s = t.sanitize();
        assert!(!s.fields().contains_key("refresh_token"));
        for k in ["access_token", "expiry", "token_type", "account_id", "id_token", "resource_url"] {
            assert!(s.fields().contains_key(k), "{k} kept");
        }
    }

    #[test]
    fn merge_keeps_stored_values_for_absent_null_or_empty() {
        let stored = token(json!({"access_token":"old","expiry":1,"token_type":"Bearer",
            "refresh_token":"r1","account_id":"acc","scope":"s"}));
        let new = token(json!({"access_token":"new","expiry":2,"token_type":"Bearer",
            "refresh_token":"","account_id":null,"extra":"x"}));
        let m = OAuthToken::merge(&stored, &new);
        assert_eq!(m.access_token(), "new");
        assert_eq!(m.expiry(), 2.0);
        assert_eq!(m.refresh_token(), Some("r1"));
        assert_eq!(m.fields()["account_id"], "acc");
        assert_eq!(m.fields()["scope"], "s");
        assert_eq!(m.fields()["extra"], "x");
        let rotated =
            token(json!({"access_token":"n","expiry":3,"token_type":"Bearer","refresh_token":"r2"}));
        assert_eq!(OAuthToken::merge(&stored, &rotated).refresh_token(), Some("r2"));
    }

    #[test]
    fn debug_never_shows_values() {
        let t = token(json!({"access_token":"SECRET","expiry":1,"token_type":"Bearer","refresh_token":"RT"}));
        let text = format!("{t:?} {:?}", t.sanitize());
        assert!(!text.contains("SECRET") && !text.contains("RT\""));
    }

    #[test]
    fn unknown_fields_survive_a_json_round_trip() {
        let text = r#"{"access_token":"a","expiry":1700000000,"token_type":"Bearer","account_id":"x","nested":{"k":[1,2]}}"#;
        let t = OAuthToken::from_json(text).unwrap();
        assert_eq!(OAuthToken::from_json(&t.to_json()).unwrap(), t);
        assert_eq!(t.fields()["nested"]["k"][1], 2);
    }

    #[test]
    fn a_sandbox_update_changes_only_the_four_fields() {
        let stored = OAuthToken::from_value(serde_json::json!({
            "access_token":"old","expiry":100.0,"token_type":"Bearer","refresh_token":"rt-host",
            "account_id":"acct-host","id_token":"idt","resource_url":"https://r","custom":1}))
        .unwrap();
        let incoming = serde_json::json!({
            "access_token":"new","expiry":200.0,"token_type":"bearer","scope":"s",
            "refresh_token":"rt-evil","account_id":"acct-evil","id_token":"evil","resource_url":"https://evil",
            "planted":"x".repeat(100)});
        let updated = OAuthToken::sandbox_update(Some(&stored), incoming.as_object().unwrap()).unwrap();
        let f = updated.fields();
        assert_eq!((f["access_token"].as_str(), f["expiry"].as_f64()), (Some("new"), Some(200.0)));
        assert_eq!((f["token_type"].as_str(), f["scope"].as_str()), (Some("bearer"), Some("s")));
        assert_eq!(updated.refresh_token(), Some("rt-host"));
        assert_eq!((f["account_id"].as_str(), f["id_token"].as_str()), (Some("acct-host"), Some("idt")));
        assert_eq!((f["resource_url"].as_str(), f["custom"].as_i64()), (Some("https://r"), Some(1)));
        assert!(!f.contains_key("planted"));
        let fresh = OAuthToken::sandbox_update(None, incoming.as_object().unwrap()).unwrap();
        assert_eq!(
            fresh.fields().len(),
            4,
            "into an empty bucket only the four fields: {:?}",
            fresh.fields().keys()
        );
        let bad = serde_json::json!({"access_token":"a","expiry":1.0});
        assert!(
            OAuthToken::sandbox_update(Some(&stored), bad.as_object().unwrap()).is_none(),
            "no token_type"
        );
    }

    #[test]
    fn same_account_needs_both_sides_to_name_the_same_account() {
        let t = |acct: Option<&str>| {
            let mut v = serde_json::json!({"access_token":"a","expiry":1.0,"token_type":"Bearer"});
            if let Some(a) = acct {
                v["account_id"] = a.into();
            }
            OAuthToken::from_value(v).unwrap()
        };
        assert!(OAuthToken::same_account(&t(Some("a1")), &t(Some("a1"))));
        assert!(!OAuthToken::same_account(&t(Some("a1")), &t(Some("a2"))));
        assert!(!OAuthToken::same_account(&t(None), &t(Some("a1"))));
        assert!(!OAuthToken::same_account(&t(Some("a1")), &t(None)));
        assert!(!OAuthToken::same_account(&t(None), &t(None)));
    }
}
