/*!
OAuth providers as data: where a refresh goes, how it is encoded, and how
the provider's answer becomes a stored token.

Two providers are built in (facts from llxprt-code, notes §6):

| provider | token endpoint | client id | refresh body | extra |
|---|---|---|---|---|
| `anthropic` | `https://console.anthropic.com/v1/oauth/token` | `9d1c250a-…` | form | — |
| `codex` | `https://auth.openai.com/oauth/token` | `app_EMoamEEZ73f0CkXaXp7hrann` | form | `account_id` from the `id_token` claims |

Every field can be overridden, and whole providers added, by the providers
file (`{config}/credd-providers.json`, or the path in
`LLXPRT_CREDD_PROVIDERS_FILE`):

```json
{"providers": {
  "anthropic": {"token_url": "https://sso.example.com/anthropic/token"},
  "acme": {"token_url": "https://idp.acme.example/oauth2/token", "client_id": "llxprt",
           "client_secret": "...", "encoding": "form"}
}}
```

and then by `LLXPRT_CREDD_<PROVIDER>_TOKEN_URL` / `LLXPRT_CREDD_<PROVIDER>_CLIENT_ID`
(provider name upper-cased, anything not a letter or digit as `_`). A
provider that only the file defines refreshes with plain RFC 6749 §6
(`grant_type=refresh_token`, `refresh_token`, `client_id`, and
`client_secret` when given). Plain `http://` is accepted for loopback hosts
only, so a refresh token never crosses a network in clear.
*/
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::secret::SecretString;
use crate::store::names::is_valid_provider_name;
use crate::token::OAuthToken;

/// Name of the providers file in llxprt-code's config directory.
pub const PROVIDERS_FILE_NAME: &str = "credd-providers.json";
/// Environment variable naming another providers file.
pub const PROVIDERS_FILE_ENV: &str = "LLXPRT_CREDD_PROVIDERS_FILE";
/// Lifetime assumed when a provider's answer has no usable `expires_in`
/// (llxprt-code's rule).
pub const DEFAULT_EXPIRES_IN_SECONDS: u64 = 3600;

/// How a refresh request body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `application/x-www-form-urlencoded` (RFC 6749).
    Form,
    /// `application/json`.
    Json,
}

/// One OAuth provider.
#[derive(Clone)]
pub struct Provider {
    /// The name tokens are stored under (`anthropic`, `codex`, ...).
    pub name: String,
    /// The token endpoint.
    pub token_url: String,
    /// The OAuth client id.
    pub client_id: String,
    /// A client secret, for providers whose clients have one.
    pub client_secret: Option<SecretString>,
    /// How the refresh body is encoded.
    pub encoding: Encoding,
    /// Whether `account_id` is read from the `id_token` claims (Codex).
    pub account_id_from_id_token: bool,
    /// Lifetime when the answer has no usable `expires_in`.
    pub default_expires_in: u64,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("encoding", &self.encoding)
            .finish()
    }
}

fn anthropic() -> Provider {
    Provider {
        name: "anthropic".into(),
        token_url: "https://console.anthropic.com/v1/oauth/token".into(),
        client_id: "9d1c250a-e61b-44d9-88ed-5944d1962f5e".into(),
        client_secret: None,
        encoding: Encoding::Form,
        account_id_from_id_token: false,
        default_expires_in: DEFAULT_EXPIRES_IN_SECONDS,
    }
}

fn codex() -> Provider {
    Provider {
        name: "codex".into(),
        token_url: "https://auth.openai.com/oauth/token".into(),
        client_id: "app_EMoamEEZ73f0CkXaXp7hrann".into(),
        client_secret: None,
        encoding: Encoding::Form,
        account_id_from_id_token: true,
        default_expires_in: DEFAULT_EXPIRES_IN_SECONDS,
    }
}

/// One provider's entry in the providers file; every field optional so
/// that an entry can override a single field of a built-in provider.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    token_url: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    encoding: Option<Encoding>,
    account_id_from_id_token: Option<bool>,
    default_expires_in: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvidersFile {
    #[serde(default)]
    providers: BTreeMap<String, ProviderEntry>,
}

/// The providers the daemon can refresh.
#[derive(Clone, Debug)]
pub struct Providers {
    by_name: BTreeMap<String, Provider>,
}

/// The environment variable overriding `field` of `provider`.
pub fn env_name(provider: &str, field: &str) -> String {
    let upper: String = provider
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    format!("LLXPRT_CREDD_{upper}_{field}")
}

/// Whether `url` is acceptable as an endpoint: `https://`, or `http://` to
/// a loopback host.
fn check_url(url: &str, what: &str) -> Result<()> {
    if url.starts_with("https://") && url.len() > "https://".len() {
        return Ok(());
    }
    if url.starts_with("http://") && super::http::is_loopback_url(url) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{what}: {url:?} must be an https:// URL (plain http:// only to 127.0.0.1, ::1 or localhost)"
    )))
}

impl Providers {
    /// The built-in providers only.
    pub fn builtin() -> Providers {
        let by_name = [anthropic(), codex()].into_iter().map(|p| (p.name.clone(), p)).collect();
        Providers { by_name }
    }

    /// The built-in providers, then the providers file, then the
    /// environment. A missing file is fine; a malformed one is an error
    /// naming the file.
    pub fn load(config_dir: &Path) -> Result<Providers> {
        let path = match std::env::var_os(PROVIDERS_FILE_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => config_dir.join(PROVIDERS_FILE_NAME),
        };
        let mut providers = Providers::builtin();
        match std::fs::read_to_string(&path) {
            Ok(text) => providers.apply_file(&text).map_err(|e| match e {
                Error::Usage(m) => Error::Usage(format!("{}: {m}", path.display())),
                other => other,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
        providers.apply_env(|name| std::env::var(name).ok())?;
        Ok(providers)
    }

    /// Applies the text of a providers file.
    pub fn apply_file(&mut self, text: &str) -> Result<()> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| Error::Usage(format!("not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(Error::Usage("not a providers file: the top level must be an object".into()));
        }
        let file: ProvidersFile =
            serde_json::from_value(value).map_err(|e| Error::Usage(format!("not a providers file: {e}")))?;
        for (name, entry) in file.providers {
            if !is_valid_provider_name(&name) {
                return Err(Error::Usage(format!("provider name {name:?} is not valid")));
            }
            let base = match self.by_name.remove(&name) {
                Some(p) => p,
                None => Provider {
                    name: name.clone(),
                    token_url: entry.token_url.clone().ok_or_else(|| {
                        Error::Usage(format!("provider {name} is not built in, so it needs a token_url"))
                    })?,
                    client_id: entry.client_id.clone().ok_or_else(|| {
                        Error::Usage(format!("provider {name} is not built in, so it needs a client_id"))
                    })?,
                    client_secret: None,
                    encoding: Encoding::Form,
                    account_id_from_id_token: false,
                    default_expires_in: DEFAULT_EXPIRES_IN_SECONDS,
                },
            };
            let provider = Provider {
                token_url: entry.token_url.unwrap_or(base.token_url),
                client_id: entry.client_id.unwrap_or(base.client_id),
                client_secret: entry.client_secret.map(SecretString::new).or(base.client_secret),
                encoding: entry.encoding.unwrap_or(base.encoding),
                account_id_from_id_token: entry
                    .account_id_from_id_token
                    .unwrap_or(base.account_id_from_id_token),
                default_expires_in: entry.default_expires_in.unwrap_or(base.default_expires_in).max(1),
                name: name.clone(),
            };
            check_url(&provider.token_url, &format!("provider {name} token_url"))?;
            if provider.client_id.is_empty() {
                return Err(Error::Usage(format!("provider {name}: client_id is empty")));
            }
            self.by_name.insert(name, provider);
        }
        Ok(())
    }

    /// Applies `LLXPRT_CREDD_<PROVIDER>_TOKEN_URL` and `..._CLIENT_ID` for
    /// every known provider; `var` reads one variable.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<()> {
        for provider in self.by_name.values_mut() {
            let url_var = env_name(&provider.name, "TOKEN_URL");
            if let Some(url) = var(&url_var).filter(|v| !v.is_empty()) {
                check_url(&url, &url_var)?;
                provider.token_url = url;
            }
            if let Some(id) = var(&env_name(&provider.name, "CLIENT_ID")).filter(|v| !v.is_empty()) {
                provider.client_id = id;
            }
        }
        Ok(())
    }

    /// The provider of that name.
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.by_name.get(name)
    }
}

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
            if let Some(Value::String(s)) = answer.get(field)
                && !s.is_empty()
            {
                map.insert(field.into(), Value::String(s.clone()));
            }
        }
        if self.account_id_from_id_token
            && let Some(account) =
                answer.get("id_token").and_then(Value::as_str).and_then(account_id_from_id_token)
        {
            map.insert("account_id".into(), Value::String(account));
        }
        OAuthToken::from_map(map).map_err(|_| BadAnswer("the answer is not a valid token"))
    }
}

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
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}.sig", b.encode(br#"{"alg":"RS256"}"#), b.encode(claims.to_string()))
    }

    #[test]
    fn builtins_carry_the_llxprt_code_facts() {
        let p = Providers::builtin();
        let a = p.get("anthropic").unwrap();
        assert_eq!(a.token_url, "https://console.anthropic.com/v1/oauth/token");
        assert_eq!(a.client_id, "9d1c250a-e61b-44d9-88ed-5944d1962f5e");
        assert_eq!(a.encoding, Encoding::Form);
        let c = p.get("codex").unwrap();
        assert_eq!(c.token_url, "https://auth.openai.com/oauth/token");
        assert_eq!(c.client_id, "app_EMoamEEZ73f0CkXaXp7hrann");
        assert!(c.account_id_from_id_token);
        assert!(p.get("gemini").is_none() && p.get("qwen").is_none());
    }

    #[test]
    fn the_file_overrides_fields_and_adds_providers_and_env_wins() {
        let mut p = Providers::builtin();
        p.apply_file(
            r#"{"providers":{"anthropic":{"token_url":"http://127.0.0.1:9/t"},
                "acme":{"token_url":"https://idp.example/token","client_id":"cid","client_secret":"s","encoding":"json"}}}"#,
        )
        .unwrap();
        assert_eq!(p.get("anthropic").unwrap().token_url, "http://127.0.0.1:9/t");
        assert_eq!(p.get("anthropic").unwrap().client_id, "9d1c250a-e61b-44d9-88ed-5944d1962f5e");
        let acme = p.get("acme").unwrap();
        assert_eq!((acme.encoding, acme.client_secret.as_ref().unwrap().expose()), (Encoding::Json, "s"));
        assert!(!format!("{acme:?}").contains("\"s\""), "the secret is redacted");
        p.apply_env(|name| match name {
            "LLXPRT_CREDD_ACME_TOKEN_URL" => Some("https://other.example/t".into()),
            "LLXPRT_CREDD_CODEX_CLIENT_ID" => Some("app_test".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(p.get("acme").unwrap().token_url, "https://other.example/t");
        assert_eq!(p.get("codex").unwrap().client_id, "app_test");
        assert_eq!(env_name("my.idp-1", "TOKEN_URL"), "LLXPRT_CREDD_MY_IDP_1_TOKEN_URL");
    }

    #[test]
    fn bad_files_and_urls_are_refused() {
        for bad in [
            "[]",
            r#"{"providers":{"acme":{"token_url":"https://x/t"}}}"#,
            r#"{"providers":{"acme":{"client_id":"c"}}}"#,
            r#"{"providers":{"anthropic":{"token_url":"http://idp.example/t"}}}"#,
            r#"{"providers":{"anthropic":{"tokenUrl":"https://x/t"}}}"#,
            r#"{"providers":{"bad name":{"token_url":"https://x/t","client_id":"c"}}}"#,
            r#"{"providers":{"anthropic":{"encoding":"xml"}}}"#,
        ] {
            assert!(Providers::builtin().apply_file(bad).is_err(), "{bad}");
        }
        let mut p = Providers::builtin();
        let plain = |_: &str| Some("http://evil.example/t".to_owned());
        assert!(p.apply_env(plain).is_err());
        for ok in ["http://127.0.0.1:5/t", "http://localhost/t", "http://[::1]:8/t", "https://a.example/t"] {
            assert!(check_url(ok, "t").is_ok(), "{ok}");
        }
    }

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
