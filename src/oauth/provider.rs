/*!
OAuth providers as data: where a refresh goes, how a user logs in, how
requests are encoded, and how the provider's answer becomes a stored token.

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

Every field can be overridden, and whole providers added, by a providers
file the host names (`--providers-file PATH`, or `LLXPRT_CREDD_PROVIDERS_FILE`;
never a file in llxprt-code's config directory, which a sandbox can write):

```json
{"providers": {
  "anthropic": {"token_url": "https://sso.example.com/anthropic/token"},
  "acme": {"token_url": "https://idp.acme.example/oauth2/token", "client_id": "llxprt",
           "client_secret": "...", "encoding": "form",
           "device_code_url": "https://idp.acme.example/oauth2/device", "scope": "openid offline_access"}
}}
```

Login fields of an entry: `flows` (`pkce_redirect`, `device_code`,
`browser_redirect`; the default first), `authorize_url`, `scope`,
`redirect_uri` (the code-paste page), `authorize_params` (extra query
parameters), `exchange_encoding`, `redirect_port` (0: any free port),
`redirect_path`, `device_style` (`rfc8628`, the default, or `codex`),
`device_code_url`, `device_poll_url`, `device_verification_url`.

Then the environment: `LLXPRT_CREDD_<PROVIDER>_TOKEN_URL`, `_CLIENT_ID`,
`_AUTHORIZE_URL`, `_DEVICE_CODE_URL`, `_DEVICE_POLL_URL`,
`_DEVICE_VERIFICATION_URL` and `_REDIRECT_PORT` (provider name
upper-cased, anything not a letter or digit as `_`). A provider that only
the file defines refreshes with plain RFC 6749 §6 (`grant_type=refresh_token`,
`refresh_token`, `client_id`, and `client_secret` when given) and logs in
with RFC 8628 when it has a `device_code_url`. Plain `http://` is accepted
for loopback hosts only, so a secret never crosses a network in clear.
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

/// Name of the providers file older releases read from llxprt-code's
/// config directory. It is no longer read (a sandbox can write there); the
/// daemon warns when one is found, so that its owner names it with
/// `--providers-file`.
pub const PROVIDERS_FILE_NAME: &str = "credd-providers.json";
/// Environment variable naming another providers file.
pub const PROVIDERS_FILE_ENV: &str = "LLXPRT_CREDD_PROVIDERS_FILE";
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
    flows: Option<Vec<FlowType>>,
    authorize_url: Option<String>,
    scope: Option<String>,
    redirect_uri: Option<String>,
    authorize_params: Option<BTreeMap<String, String>>,
    exchange_encoding: Option<Encoding>,
    redirect_port: Option<u16>,
    redirect_path: Option<String>,
    device_style: Option<DeviceStyle>,
    device_code_url: Option<String>,
    device_poll_url: Option<String>,
    device_verification_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvidersFile {
    #[serde(default)]
    providers: BTreeMap<String, ProviderEntry>,
    /// Inject mode's routes to OpenAI- or Anthropic-compatible hosts.
    #[serde(default)]
    routes: Vec<RouteEntry>,
}

/// One inject-mode route of the providers file: an upstream host (HTTPS,
/// fixed here and never taken from a profile or a request), its API style,
/// the path prefix its API lives under, and the providers (llxprt-code
/// aliases) whose keys it carries.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteEntry {
    pub host: String,
    /// `openai` or `anthropic`.
    pub api: String,
    #[serde(default)]
    pub prefix: String,
    pub providers: Vec<String>,
}

impl ProviderEntry {
    /// The login part of a provider: `base` with this entry's fields over it.
    fn apply_login(&self, mut login: Login, name: &str) -> Result<Login> {
        let url = |u: &Option<String>, what: &str| -> Result<Option<String>> {
            match u {
                Some(u) => check_url(u, &format!("provider {name} {what}")).map(|()| Some(u.clone())),
                None => Ok(None),
            }
        };
        if let Some(u) = url(&self.authorize_url, "authorize_url")? {
            login.authorize_url = Some(u);
        }
        if let Some(u) = url(&self.redirect_uri, "redirect_uri")? {
            login.paste_redirect_uri = Some(u);
        }
        if let Some(s) = &self.scope {
            login.scope = s.clone();
        }
        if let Some(p) = &self.authorize_params {
            login.authorize_params = p.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        if let Some(e) = self.exchange_encoding {
            login.exchange_encoding = e;
        }
        if let Some(p) = self.redirect_port {
            login.redirect_ports = vec![p];
        }
        if let Some(p) = &self.redirect_path {
            if !p.starts_with('/') || p.contains(['?', '#', ' ']) {
                return Err(Error::Usage(format!("provider {name}: redirect_path must be a plain path")));
            }
            login.redirect_path = p.clone();
        }
        if let Some(code_url) = url(&self.device_code_url, "device_code_url")? {
            let style = self.device_style.unwrap_or(DeviceStyle::Rfc8628);
            login.device = Some(Device {
                style,
                code_url,
                poll_url: None,
                verification_url: None,
                exchange_redirect_uri: None,
            });
        }
        if let Some(device) = login.device.as_mut() {
            if let Some(style) = self.device_style {
                device.style = style;
            }
            if let Some(u) = url(&self.device_poll_url, "device_poll_url")? {
                device.poll_url = Some(u);
            }
            if let Some(u) = url(&self.device_verification_url, "device_verification_url")? {
                device.verification_url = Some(u);
            }
        }
        match &self.flows {
            Some(flows) => login.flows = flows.clone(),
            None if login.flows.is_empty() => {
                if login.device.is_some() {
                    login.flows.push(FlowType::DeviceCode);
                }
                if login.authorize_url.is_some() && login.paste_redirect_uri.is_some() {
                    login.flows.push(FlowType::PkceRedirect);
                }
            }
            None => {}
        }
        for flow in &login.flows {
            let missing = match flow {
                FlowType::PkceRedirect => login.authorize_url.is_none() || login.paste_redirect_uri.is_none(),
                FlowType::BrowserRedirect => login.authorize_url.is_none(),
                FlowType::DeviceCode => login.device.is_none(),
            };
            if missing {
                return Err(Error::Usage(format!(
                    "provider {name}: flow {} needs {}",
                    flow.as_str(),
                    match flow {
                        FlowType::PkceRedirect => "authorize_url and redirect_uri",
                        FlowType::BrowserRedirect => "authorize_url",
                        FlowType::DeviceCode => "device_code_url",
                    }
                )));
            }
        }
        if login.device.as_ref().is_some_and(|d| d.style == DeviceStyle::Codex && d.poll_url.is_none()) {
            return Err(Error::Usage(format!(
                "provider {name}: a codex-style device flow needs device_poll_url"
            )));
        }
        Ok(login)
    }
}

/// The providers the daemon can refresh.
#[derive(Clone, Debug)]
pub struct Providers {
    by_name: BTreeMap<String, Provider>,
    /// Inject-mode routes from the providers file.
    pub routes: Vec<RouteEntry>,
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

    /// The built-in providers, then the providers file the host named
    /// (`file`, else `LLXPRT_CREDD_PROVIDERS_FILE`), then the environment.
    /// A named file that is missing or malformed is an error naming it. No
    /// other file is read: llxprt-code's config directory is writable by a
    /// sandbox (SPEC §11.4).
    pub fn load(file: Option<&Path>) -> Result<Providers> {
        let path = match file {
            Some(p) => Some(p.to_path_buf()),
            None => std::env::var_os(PROVIDERS_FILE_ENV).filter(|p| !p.is_empty()).map(PathBuf::from),
        };
        let mut providers = Providers::builtin();
        if let Some(path) = path {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::io(format!("cannot read the providers file {}", path.display()), e))?;
            providers.apply_file(&text).map_err(|e| match e {
                Error::Usage(m) => Error::Usage(format!("{}: {m}", path.display())),
                other => other,
            })?;
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
        for route in &file.routes {
            crate::inject::routes::check_entry(route)
                .map_err(|e| Error::Usage(format!("route {:?}: {e}", route.host)))?;
        }
        self.routes.extend(file.routes);
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
                    login: Login {
                        exchange_encoding: Encoding::Form,
                        verifier_bytes: DEFAULT_VERIFIER_BYTES,
                        redirect_ports: DEFAULT_REDIRECT_PORTS.to_vec(),
                        redirect_path: DEFAULT_REDIRECT_PATH.into(),
                        ..Login::default()
                    },
                },
            };
            let login = entry.apply_login(base.login.clone(), &name)?;
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
                login,
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
            let name = provider.name.clone();
            let url = |field: &str| -> Result<Option<String>> {
                let var_name = env_name(&name, field);
                match var(&var_name).filter(|v| !v.is_empty()) {
                    Some(u) => check_url(&u, &var_name).map(|()| Some(u)),
                    None => Ok(None),
                }
            };
            let login = &mut provider.login;
            if let Some(u) = url("AUTHORIZE_URL")? {
                login.authorize_url = Some(u);
            }
            if let Some(device) = login.device.as_mut() {
                if let Some(u) = url("DEVICE_CODE_URL")? {
                    device.code_url = u;
                }
                if let Some(u) = url("DEVICE_POLL_URL")? {
                    device.poll_url = Some(u);
                }
                if let Some(u) = url("DEVICE_VERIFICATION_URL")? {
                    device.verification_url = Some(u);
                }
            }
            let port_var = env_name(&name, "REDIRECT_PORT");
            if let Some(p) = var(&port_var).filter(|v| !v.is_empty()) {
                let port = p.parse::<u16>().map_err(|_| {
                    Error::Usage(format!("{port_var} must be a port number (0: any free port), not {p:?}"))
                })?;
                login.redirect_ports = vec![port];
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
    fn login_data_is_built_in_and_overridable() {
        let mut p = Providers::builtin();
        let a = &p.get("anthropic").unwrap().login;
        assert_eq!(a.flows, [FlowType::PkceRedirect]);
        assert_eq!(a.exchange_encoding, Encoding::Json);
        let c = &p.get("codex").unwrap().login;
        assert_eq!(c.flows, [FlowType::BrowserRedirect, FlowType::DeviceCode]);
        assert_eq!(
            (c.redirect_ports[0], c.redirect_ports.len(), c.redirect_path.as_str()),
            (1455, 31, "/auth/callback")
        );
        assert_eq!(c.device.as_ref().unwrap().style, DeviceStyle::Codex);
        p.apply_file(
            r#"{"providers":{"acme":{"token_url":"https://idp.example/token","client_id":"cid",
                "device_code_url":"https://idp.example/device","scope":"openid offline_access"}}}"#,
        )
        .unwrap();
        let acme = &p.get("acme").unwrap().login;
        assert_eq!(acme.flows, [FlowType::DeviceCode]);
        assert_eq!(acme.device.as_ref().unwrap().style, DeviceStyle::Rfc8628);
        p.apply_env(|name| match name {
            "LLXPRT_CREDD_CODEX_REDIRECT_PORT" => Some("0".into()),
            "LLXPRT_CREDD_CODEX_DEVICE_CODE_URL" => Some("http://127.0.0.1:9/usercode".into()),
            "LLXPRT_CREDD_ANTHROPIC_AUTHORIZE_URL" => Some("http://localhost:9/authorize".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(p.get("codex").unwrap().login.redirect_ports, [0]);
        assert_eq!(
            p.get("codex").unwrap().login.device.as_ref().unwrap().code_url,
            "http://127.0.0.1:9/usercode"
        );
        assert_eq!(
            p.get("anthropic").unwrap().login.authorize_url.as_deref(),
            Some("http://localhost:9/authorize")
        );
        for bad in [
            r#"{"providers":{"x":{"token_url":"https://i/t","client_id":"c","flows":["pkce_redirect"]}}}"#,
            r#"{"providers":{"x":{"token_url":"https://i/t","client_id":"c","flows":["device_code"]}}}"#,
            r#"{"providers":{"x":{"token_url":"https://i/t","client_id":"c","device_code_url":"http://evil.example/d"}}}"#,
            r#"{"providers":{"x":{"token_url":"https://i/t","client_id":"c","device_code_url":"https://i/d","device_style":"codex"}}}"#,
            r#"{"providers":{"codex":{"redirect_path":"no-slash"}}}"#,
        ] {
            assert!(Providers::builtin().apply_file(bad).is_err(), "{bad}");
        }
        let bad_port = |n: &str| (n == "LLXPRT_CREDD_CODEX_REDIRECT_PORT").then(|| "99999".to_owned());
        assert!(Providers::builtin().apply_env(bad_port).is_err());
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
