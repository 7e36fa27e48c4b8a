/*!
OAuth providers as data: where a refresh goes, how a user logs in, and how
requests are encoded. The providers file and environment that override
this data are in `overlay.rs`, the endpoint URL rule in `url_policy.rs`,
and how a provider's answer becomes a stored token in `answer.rs` (with
the `id_token` claims it reads in `jwt.rs`).

Three names are built in, two of them one definition (facts from
llxprt-code, notes §0 and §6):

| provider | token endpoint | client id | refresh body | login flows | extra |
|---|---|---|---|---|---|
| `claudecode`, `anthropic` | `https://console.anthropic.com/v1/oauth/token` | `9d1c250a-…` | form | `pkce_redirect` (authorize `https://claude.ai/oauth/authorize`, code shown at `https://console.anthropic.com/oauth/code/callback`, JSON exchange) | — |
| `codex` | `https://auth.openai.com/oauth/token` | `app_EMoamEEZ73f0CkXaXp7hrann` | form | `browser_redirect` (authorize `https://auth.openai.com/oauth/authorize`, loopback port 1455, else 1456–1485, path `/auth/callback`), `device_code` (OpenAI's `deviceauth` endpoints) | `account_id` from the `id_token` claims |

`claudecode` is the Claude.ai subscription login as llxprt-code has named
it since its July 2026 split of Claude Code OAuth from Anthropic API access
(tokens `claudecode:<bucket>`); releases before the split stored the same
login as `anthropic:<bucket>`, which keeps refreshing under its own name.
Both names are built from [`claude_subscription`], so they cannot drift
apart; each has its own store items, lock files, providers-file entry and
environment overrides.
*/
#![forbid(unsafe_code)]

mod answer;
mod jwt;
mod overlay;
mod url_policy;

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::secret::SecretString;

pub use overlay::{PROVIDERS_FILE_NAME, RouteEntry};

/// Lifetime assumed when a provider's answer has no usable `expires_in`
/// (llxprt-code's rule).
pub const DEFAULT_EXPIRES_IN_SECONDS: u64 = 3600;

/// How a request body is encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// `application/x-www-form-urlencoded` (RFC 6749).
    #[default]
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
    /// How a user logs in to this provider (no login when `flows` is empty).
    pub login: Login,
}

pub use crate::protocol::names::FlowType;

/// Which device authorization protocol a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStyle {
    /// RFC 8628: `device_code` from the device endpoint, polled at the token
    /// endpoint with the device-code grant.
    Rfc8628,
    /// OpenAI's: a `device_auth_id` polled at its own endpoint, which
    /// answers an authorization code and a server-generated PKCE verifier
    /// that are then exchanged at the token endpoint.
    Codex,
}

/// How a user logs in to a provider.
#[derive(Clone, Debug, Default)]
pub struct Login {
    /// The flows offered, the default first.
    pub flows: Vec<FlowType>,
    /// The authorization endpoint (PKCE flows).
    pub authorize_url: Option<String>,
    /// Scopes asked for, space-separated.
    pub scope: String,
    /// The redirect URI of the code-paste flow (a provider page showing
    /// `code#state`).
    pub paste_redirect_uri: Option<String>,
    /// Extra query parameters of the authorization URL.
    pub authorize_params: Vec<(String, String)>,
    /// How the authorization-code exchange body is encoded.
    pub exchange_encoding: Encoding,
    /// Random bytes in a PKCE verifier.
    pub verifier_bytes: usize,
    /// Loopback ports the browser-redirect listener tries, in order (`0`:
    /// any free port).
    pub redirect_ports: Vec<u16>,
    /// The path of the browser-redirect callback.
    pub redirect_path: String,
    /// Device authorization, when offered.
    pub device: Option<Device>,
}

/// A provider's device authorization endpoints.
#[derive(Clone, Debug)]
pub struct Device {
    /// Which protocol.
    pub style: DeviceStyle,
    /// Where a device code (or device auth id) is asked for.
    pub code_url: String,
    /// Where it is polled ([`DeviceStyle::Codex`]; RFC 8628 polls the
    /// token endpoint).
    pub poll_url: Option<String>,
    /// The page the user opens, when the provider does not say.
    pub verification_url: Option<String>,
    /// The redirect URI of the exchange ([`DeviceStyle::Codex`]).
    pub exchange_redirect_uri: Option<String>,
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

/// Loopback ports of the browser-redirect listener when none are given.
pub const DEFAULT_REDIRECT_PORTS: [u16; 1] = [0];
/// Path of the browser-redirect callback when none is given.
pub const DEFAULT_REDIRECT_PATH: &str = "/callback";
/// Random bytes of a PKCE verifier when the provider does not say.
pub const DEFAULT_VERIFIER_BYTES: usize = 32;

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// The name of the Claude.ai subscription login in current llxprt-code.
pub const CLAUDE_SUBSCRIPTION: &str = "claudecode";
/// The name older llxprt-code releases stored the same login under (and,
/// since the split, the Anthropic API-key identity).
pub const CLAUDE_SUBSCRIPTION_LEGACY: &str = "anthropic";

/// The Claude.ai subscription login (PKCE code-paste), stored under `name`.
fn claude_subscription(name: &str) -> Provider {
    Provider {
        name: name.into(),
        token_url: "https://console.anthropic.com/v1/oauth/token".into(),
        client_id: "9d1c250a-e61b-44d9-88ed-5944d1962f5e".into(),
        client_secret: None,
        encoding: Encoding::Form,
        account_id_from_id_token: false,
        default_expires_in: DEFAULT_EXPIRES_IN_SECONDS,
        login: Login {
            flows: vec![FlowType::PkceRedirect],
            authorize_url: Some("https://claude.ai/oauth/authorize".into()),
            scope: "org:create_api_key user:profile user:inference".into(),
            paste_redirect_uri: Some("https://console.anthropic.com/oauth/code/callback".into()),
            authorize_params: pairs(&[("code", "true")]),
            exchange_encoding: Encoding::Json,
            verifier_bytes: 32,
            redirect_ports: DEFAULT_REDIRECT_PORTS.to_vec(),
            redirect_path: DEFAULT_REDIRECT_PATH.into(),
            device: None,
        },
    }
}

fn codex() -> Provider {
    let mut ports = vec![1455];
    ports.extend(1456..=1485);
    Provider {
        name: "codex".into(),
        token_url: "https://auth.openai.com/oauth/token".into(),
        client_id: "app_EMoamEEZ73f0CkXaXp7hrann".into(),
        client_secret: None,
        encoding: Encoding::Form,
        account_id_from_id_token: true,
        default_expires_in: DEFAULT_EXPIRES_IN_SECONDS,
        login: Login {
            flows: vec![FlowType::BrowserRedirect, FlowType::DeviceCode],
            authorize_url: Some("https://auth.openai.com/oauth/authorize".into()),
            scope: "openid profile email offline_access".into(),
            paste_redirect_uri: None,
            authorize_params: pairs(&[
                ("id_token_add_organizations", "true"),
                ("codex_cli_simplified_flow", "true"),
                ("originator", "codex_cli_rs"),
            ]),
            exchange_encoding: Encoding::Form,
            verifier_bytes: 64,
            redirect_ports: ports,
            redirect_path: "/auth/callback".into(),
            device: Some(Device {
                style: DeviceStyle::Codex,
                code_url: "https://auth.openai.com/api/accounts/deviceauth/usercode".into(),
                poll_url: Some("https://auth.openai.com/api/accounts/deviceauth/token".into()),
                verification_url: Some("https://auth.openai.com/deviceauth/callback".into()),
                exchange_redirect_uri: Some("https://auth.openai.com/deviceauth/callback".into()),
            }),
        },
    }
}

/// The providers the daemon can refresh.
#[derive(Clone, Debug)]
pub struct Providers {
    by_name: BTreeMap<String, Provider>,
    /// Inject-mode routes from the providers file.
    pub routes: Vec<RouteEntry>,
}

impl Providers {
    /// The built-in providers only.
    pub fn builtin() -> Providers {
        let by_name = [
            claude_subscription(CLAUDE_SUBSCRIPTION),
            claude_subscription(CLAUDE_SUBSCRIPTION_LEGACY),
            codex(),
        ]
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
        Providers { by_name, routes: Vec::new() }
    }

    /// The provider of that name.
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.by_name.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn claudecode_and_legacy_anthropic_are_one_definition_under_two_names() {
        let p = Providers::builtin();
        let (cc, legacy) = (p.get("claudecode").unwrap(), p.get("anthropic").unwrap());
        assert_eq!((cc.name.as_str(), legacy.name.as_str()), ("claudecode", "anthropic"));
        assert_eq!(cc.token_url, legacy.token_url);
        assert_eq!(cc.client_id, "9d1c250a-e61b-44d9-88ed-5944d1962f5e");
        assert_eq!(cc.client_id, legacy.client_id);
        assert_eq!(cc.login.flows, vec![FlowType::PkceRedirect]);
        assert_eq!(cc.login.flows, legacy.login.flows);
        assert_eq!(cc.login.authorize_url, legacy.login.authorize_url);
        assert_eq!(cc.login.scope, legacy.login.scope);
        assert_eq!(cc.login.paste_redirect_uri, legacy.login.paste_redirect_uri);
        // Each name is overridden on its own.
        let mut p = Providers::builtin();
        p.apply_env(|name| {
            (name == "LLXPRT_CREDD_CLAUDECODE_TOKEN_URL").then(|| "http://127.0.0.1:9/cc".to_owned())
        })
        .unwrap();
        assert_eq!(p.get("claudecode").unwrap().token_url, "http://127.0.0.1:9/cc");
        assert_eq!(p.get("anthropic").unwrap().token_url, "https://console.anthropic.com/v1/oauth/token");
        p.apply_file(r#"{"providers":{"claudecode":{"client_id":"cc-test"}}}"#).unwrap();
        assert_eq!(p.get("claudecode").unwrap().client_id, "cc-test");
        assert_eq!(p.get("anthropic").unwrap().client_id, "9d1c250a-e61b-44d9-88ed-5944d1962f5e");
    }
}
