/*!
The providers file and the environment laid over the built-in providers.

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
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::url_policy::check_url;
use super::{
    DEFAULT_EXPIRES_IN_SECONDS, DEFAULT_REDIRECT_PATH, DEFAULT_REDIRECT_PORTS, DEFAULT_VERIFIER_BYTES,
    Device, DeviceStyle, Encoding, FlowType, Login, Provider, Providers,
};
use crate::error::{Error, Result};
use crate::secret::SecretString;
use crate::store::names::is_valid_provider_name;

/// Name of the providers file older releases read from llxprt-code's
/// config directory. It is no longer read (a sandbox can write there); the
/// daemon warns when one is found, so that its owner names it with
/// `--providers-file`.
pub const PROVIDERS_FILE_NAME: &str = "credd-providers.json";
/// Environment variable naming another providers file.
pub const PROVIDERS_FILE_ENV: &str = crate::env::PROVIDERS_FILE;

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

/// The environment variable overriding `field` of `provider`.
pub fn env_name(provider: &str, field: &str) -> String {
    let upper: String = provider
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    format!("{}{upper}_{field}", crate::env::PROVIDER_OVERRIDE_PREFIX)
}

impl Providers {
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
                    Error::Environment(format!(
                        "{port_var} must be a port number (0: any free port), not {p:?}"
                    ))
                })?;
                login.redirect_ports = vec![port];
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
