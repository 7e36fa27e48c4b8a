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
}
