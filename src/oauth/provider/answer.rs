/*!
How a successful token-endpoint answer becomes a token to merge over the
stored one, by llxprt-code's rules.
*/
#![forbid(unsafe_code)]

use serde_json::{Map, Value};

use super::Provider;
use super::jwt::account_id_from_id_token;
use crate::token::OAuthToken;

/// Why a provider's answer is not a token. Fixed text: the answer itself
/// is never quoted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAnswer(pub &'static str);

fn expires_in(value: Option<&Value>) -> Option<f64> {
    let n = match value? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (n.is_finite() && n > 0.0).then_some(n.floor())
}

impl Provider {
    /// Turns a successful token-endpoint answer into a token to merge over
    /// the stored one: `access_token`, `token_type`, `expiry` (now +
    /// `expires_in`, else the provider's default), and whichever of
    /// `refresh_token`, `scope`, `id_token`, `resource_url` the answer has;
    /// `account_id` from the `id_token` claims when the provider says so.
    pub fn token_from_answer(&self, answer: &Map<String, Value>, now: f64) -> Result<OAuthToken, BadAnswer> {
        let mut map = Map::new();
        match answer.get("access_token") {
            Some(Value::String(s)) if !s.is_empty() => {
                map.insert("access_token".into(), Value::String(s.clone()));
            }
            _ => return Err(BadAnswer("the answer has no access_token")),
        }
        let token_type = match answer.get("token_type").and_then(Value::as_str) {
            None => "Bearer",
            Some(t @ ("Bearer" | "bearer")) => t,
            Some(t) if t.eq_ignore_ascii_case("bearer") => "Bearer",
            Some(_) => return Err(BadAnswer("the answer's token_type is not Bearer")),
        };
        map.insert("token_type".into(), token_type.into());
        let lifetime = expires_in(answer.get("expires_in")).unwrap_or(self.default_expires_in as f64);
        map.insert("expiry".into(), Value::from(now.floor() + lifetime));
        for field in ["refresh_token", "scope", "id_token", "resource_url"] {
            if let Some(s) = answer.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()) {
                map.insert(field.into(), Value::String(s.to_owned()));
            }
        }
        let account = || answer.get("id_token").and_then(Value::as_str).and_then(account_id_from_id_token);
        if let Some(account) = self.account_id_from_id_token.then(account).flatten() {
            map.insert("account_id".into(), Value::String(account));
        }
        OAuthToken::from_map(map).map_err(|_| BadAnswer("the answer is not a valid token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::provider::Providers;
    use serde_json::json;

    #[test]
    fn answers_become_tokens_by_llxprt_code_rules() {
        let p = Providers::builtin();
        let a = p.get("anthropic").unwrap();
        let t = a
            .token_from_answer(
                json!({"access_token":"at","expires_in":120,"refresh_token":"rt2","scope":"s","token_type":"bearer","junk":1})
                    .as_object()
                    .unwrap(),
                1000.7,
            )
            .unwrap();
        assert_eq!((t.access_token(), t.expiry(), t.refresh_token()), ("at", 1120.0, Some("rt2")));
        assert_eq!(t.fields()["token_type"], "bearer");
        assert!(!t.fields().contains_key("junk"));
        for lifetime in [json!(0), json!(-5), json!("x"), Value::Null] {
            let t = a.token_from_answer(
                json!({"access_token":"at","expires_in":lifetime}).as_object().unwrap(),
                10.0,
            );
            assert_eq!(t.unwrap().expiry(), 3610.0);
        }
        let no_rt =
            a.token_from_answer(json!({"access_token":"at","token_type":"BEARER"}).as_object().unwrap(), 0.0);
        let no_rt = no_rt.unwrap();
        assert_eq!((no_rt.refresh_token(), no_rt.fields()["token_type"].as_str()), (None, Some("Bearer")));
        for bad in [json!({}), json!({"access_token":""}), json!({"access_token":"a","token_type":"MAC"})] {
            assert!(a.token_from_answer(bad.as_object().unwrap(), 0.0).is_err(), "{bad}");
        }
    }
}
