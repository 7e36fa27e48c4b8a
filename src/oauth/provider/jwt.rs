/*!
Claims read from a provider's `id_token` (a JWT): the ChatGPT account id
that Codex requests carry.
*/
#![forbid(unsafe_code)]

use base64::Engine;
use serde_json::Value;

/// The ChatGPT account id in an OpenAI `id_token`: the JWT payload's
/// `["https://api.openai.com/auth"].chatgpt_account_id`, else that object's
/// `account_id`, else the root `account_id`; empty strings are skipped.
/// The signature is not checked: the token came straight from the
/// provider over TLS, and the id only selects an account.
pub fn account_id_from_id_token(id_token: &str) -> Option<String> {
    let payload = id_token.split('.').nth(1)?;
    let bytes =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let auth = claims.get("https://api.openai.com/auth");
    [
        auth.and_then(|a| a.get("chatgpt_account_id")),
        auth.and_then(|a| a.get("account_id")),
        claims.get("account_id"),
    ]
    .into_iter()
    .flatten()
    .filter_map(Value::as_str)
    .find(|s| !s.is_empty())
    .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::provider::Providers;
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", b.encode(br#"{"alg":"RS256"}"#), b.encode(claims.to_string()))
    }

    #[test]
    fn codex_account_id_comes_from_the_id_token() {
        let nested =
            jwt(json!({"https://api.openai.com/auth":{"chatgpt_account_id":"acc-1","account_id":"x"}}));
        assert_eq!(account_id_from_id_token(&nested).as_deref(), Some("acc-1"));
        let inner =
            jwt(json!({"https://api.openai.com/auth":{"chatgpt_account_id":"","account_id":"acc-2"}}));
        assert_eq!(account_id_from_id_token(&inner).as_deref(), Some("acc-2"));
        assert_eq!(account_id_from_id_token(&jwt(json!({"account_id":"acc-3"}))).as_deref(), Some("acc-3"));
        assert_eq!(account_id_from_id_token(&jwt(json!({"sub":"u"}))), None);
        assert_eq!(account_id_from_id_token("not-a-jwt"), None);
        let c = Providers::builtin().get("codex").unwrap().clone();
        let t = c
            .token_from_answer(json!({"access_token":"at","id_token":nested}).as_object().unwrap(), 0.0)
            .unwrap();
        assert_eq!(t.fields()["account_id"], "acc-1");
        let without = c.token_from_answer(json!({"access_token":"at"}).as_object().unwrap(), 0.0).unwrap();
        assert!(!without.fields().contains_key("account_id"), "merge keeps the stored one");
    }
}
