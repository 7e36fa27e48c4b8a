/*!
The proxy's routes: one per upstream host, the first path segment of a
request on the proxy socket (`/api.anthropic.com/v1/messages`). Each route
has a fixed HTTPS origin, a method and path allow-list, and the header its
credential goes in. Nothing here is taken from a request or a profile: the
built-in four, and OpenAI- or Anthropic-compatible hosts the host names in
its providers file (`"routes": [{"host": "openrouter.ai", "api": "openai",
"prefix": "/api/v1", "providers": ["openrouter"]}]`), which carry API keys
of those providers only.
*/
#![forbid(unsafe_code)]

/// Where a route's credential goes, by the credential's class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `x-api-key` for keys, `authorization: Bearer` (and the OAuth beta
    /// flag) for Claude subscription tokens.
    Anthropic,
    /// `authorization: Bearer` and `chatgpt-account-id`.
    Codex,
    /// `authorization: Bearer`.
    OpenAi,
    /// `x-goog-api-key`.
    Gemini,
}

/// One upstream host.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    /// The host, which is also the route's path prefix.
    pub host: &'static str,
    pub api: Api,
    /// `(method, path template)`; `{id}` and `{model}` stand for one
    /// segment of `[A-Za-z0-9._-]`.
    pub allowed: &'static [(&'static str, &'static str)],
    /// The providers whose keys a providers-file route carries (none for
    /// the built-in routes, which [`key_route`] maps).
    pub providers: &'static [&'static str],
}

pub const ANTHROPIC: Route = Route {
    host: "api.anthropic.com",
    api: Api::Anthropic,
    allowed: &[
        ("POST", "/v1/messages"),
        ("POST", "/v1/messages/count_tokens"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{id}"),
    ],
    providers: &[],
};

pub const CHATGPT: Route = Route {
    host: "chatgpt.com",
    api: Api::Codex,
    allowed: &[
        ("POST", "/backend-api/codex/responses"),
        ("GET", "/backend-api/wham/usage"),
        ("GET", "/backend-api/wham/rate-limit-reset-credits"),
    ],
    providers: &[],
};

pub const OPENAI: Route = Route {
    host: "api.openai.com",
    api: Api::OpenAi,
    allowed: &[
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/responses"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/{id}"),
    ],
    providers: &[],
};

pub const GEMINI: Route = Route {
    host: "generativelanguage.googleapis.com",
    api: Api::Gemini,
    allowed: &[
        ("POST", "/v1beta/models/{model}:generateContent"),
        ("POST", "/v1beta/models/{model}:streamGenerateContent"),
        ("POST", "/v1beta/models/{model}:countTokens"),
        ("GET", "/v1beta/models"),
    ],
    providers: &[],
};

/// Every route.
pub const ROUTES: [&Route; 4] = [&ANTHROPIC, &CHATGPT, &OPENAI, &GEMINI];

/// The providers file's routes, installed once at start.
static EXTRA: std::sync::OnceLock<Vec<&'static Route>> = std::sync::OnceLock::new();

/// Every route: the built-in ones, then the providers file's.
pub fn all() -> impl Iterator<Item = &'static Route> {
    ROUTES.into_iter().chain(EXTRA.get().into_iter().flatten().copied())
}

/// The route whose host is `host`.
pub fn route(host: &str) -> Option<&'static Route> {
    all().find(|r| r.host == host)
}

/// Providers the built-in routes serve: a providers-file route cannot take
/// their keys elsewhere.
const BUILT_IN_PROVIDERS: [&str; 6] =
    ["anthropic", "claudecode", "codex", "openai", "openai-responses", "gemini"];

/// Checks a providers-file route.
pub fn check_entry(e: &crate::oauth::provider::RouteEntry) -> Result<(), String> {
    let host_ok = !e.host.is_empty()
        && e.host.len() <= 253
        && e.host.contains('.')
        && e.host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && !e.host.starts_with(['.', '-'])
        && !e.host.ends_with(['.', '-'])
        && !e.host.contains("..");
    if !host_ok {
        return Err("host must be a lower-case DNS name".into());
    }
    if ROUTES.iter().any(|r| r.host == e.host) {
        return Err("host is a built-in route".into());
    }
    if !matches!(e.api.as_str(), "openai" | "anthropic") {
        return Err("api must be openai or anthropic".into());
    }
    let p = &e.prefix;
    let prefix_ok = p.is_empty()
        || (p.starts_with('/')
            && !p.ends_with('/')
            && p.len() <= 128
            && p[1..].split('/').all(|s| {
                !s.is_empty()
                    && s != "."
                    && s != ".."
                    && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._~-".contains(&b))
            }));
    if !prefix_ok {
        return Err("prefix must be empty or like /api/v1".into());
    }
    if e.providers.is_empty() {
        return Err("providers must name at least one provider".into());
    }
    for provider in &e.providers {
        if !crate::store::names::is_valid_provider_name(provider)
            || BUILT_IN_PROVIDERS.contains(&provider.as_str())
        {
            return Err(format!(
                "provider {provider:?} is not a valid name or is served by a built-in route"
            ));
        }
    }
    Ok(())
}

/// Installs the providers file's routes (checked by [`check_entry`]) for the
/// life of the process; a second call is ignored. Each route's strings are
/// leaked once, at start.
pub fn install(entries: &[crate::oauth::provider::RouteEntry]) {
    fn keep(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }
    let routes = entries
        .iter()
        .map(|e| {
            let p = &e.prefix;
            let (api, templates): (Api, Vec<(&'static str, String)>) = if e.api == "anthropic" {
                (
                    Api::Anthropic,
                    vec![
                        ("POST", format!("{p}/v1/messages")),
                        ("POST", format!("{p}/v1/messages/count_tokens")),
                        ("GET", format!("{p}/v1/models")),
                        ("GET", format!("{p}/v1/models/{{id}}")),
                    ],
                )
            } else {
                (
                    Api::OpenAi,
                    vec![
                        ("POST", format!("{p}/chat/completions")),
                        ("POST", format!("{p}/responses")),
                        ("GET", format!("{p}/models")),
                        ("GET", format!("{p}/models/{{id}}")),
                    ],
                )
            };
            let allowed: Vec<(&'static str, &'static str)> =
                templates.into_iter().map(|(m, t)| (m, keep(t))).collect();
            let providers: Vec<&'static str> = e.providers.iter().map(|p| keep(p.clone())).collect();
            &*Box::leak(Box::new(Route {
                host: keep(e.host.clone()),
                api,
                allowed: Box::leak(allowed.into_boxed_slice()),
                providers: Box::leak(providers.into_boxed_slice()),
            }))
        })
        .collect();
    let _ = EXTRA.set(routes);
}

/// The route an OAuth token of `provider` is used on.
pub fn token_route(provider: &str) -> Option<&'static Route> {
    match provider {
        "claudecode" | "anthropic" => Some(&ANTHROPIC),
        "codex" => Some(&CHATGPT),
        _ => None,
    }
}

/// The route an API key of a profile whose provider is `provider` is used
/// on.
pub fn key_route(provider: &str) -> Option<&'static Route> {
    match provider {
        "anthropic" => Some(&ANTHROPIC),
        "openai" | "openai-responses" => Some(&OPENAI),
        "gemini" => Some(&GEMINI),
        _ => all().find(|r| r.providers.contains(&provider)),
    }
}

impl Route {
    /// The allow-list template `method path` matches (case-sensitively, on
    /// the raw path).
    pub fn template(&self, method: &str, path: &str) -> Option<&'static str> {
        self.allowed.iter().find(|(m, t)| *m == method && matches(t, path)).map(|(_, t)| *t)
    }
}

fn segment_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')
}

/// Whether `path` matches `template`: literal bytes, and `{name}` for one
/// or more segment characters.
fn matches(template: &str, path: &str) -> bool {
    let (t, p) = (template.as_bytes(), path.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < t.len() {
        if t[i] == b'{' {
            let Some(close) = t[i..].iter().position(|&c| c == b'}') else { return false };
            i += close + 1;
            let start = j;
            while j < p.len() && segment_char(p[j]) {
                j += 1;
            }
            if j == start {
                return false;
            }
        } else {
            if j >= p.len() || p[j] != t[i] {
                return false;
            }
            i += 1;
            j += 1;
        }
    }
    j == p.len()
}

/// Whether a profile's `base-url` points at `route`: its host is the
/// route's, or it is the relay form (a loopback or `*.anthropic.com` host
/// whose first path segment is the route's host). A key whose profile
/// sends it elsewhere (an OpenAI-style key with an OpenRouter base URL)
/// is not the route's to carry.
pub fn base_url_fits(url: &str, route: &Route) -> bool {
    let Some(rest) = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")) else {
        return false;
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default().to_owned()
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h).to_ascii_lowercase()
    };
    if host == route.host {
        return true;
    }
    let relay = host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || host == "anthropic.com"
        || host.ends_with(".anthropic.com");
    relay && path.split('/').next() == Some(route.host)
}

/// `LLXPRT_CREDD_UPSTREAM_<HOST>_URL`: the host upper-cased, every other
/// character `_`.
pub fn override_var(host: &str) -> String {
    let name: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("{}{name}{}", crate::env::UPSTREAM_OVERRIDE.0, crate::env::UPSTREAM_OVERRIDE.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_one_segment_per_placeholder() {
        assert_eq!(ANTHROPIC.template("POST", "/v1/messages"), Some("/v1/messages"));
        assert_eq!(ANTHROPIC.template("GET", "/v1/messages"), None);
        assert_eq!(ANTHROPIC.template("GET", "/v1/models/claude-x.1"), Some("/v1/models/{id}"));
        assert_eq!(ANTHROPIC.template("GET", "/v1/models/a/b"), None);
        assert_eq!(ANTHROPIC.template("GET", "/v1/models/"), None);
        assert_eq!(ANTHROPIC.template("POST", "/api/oauth/claude_cli/create_api_key"), None);
        assert_eq!(
            GEMINI.template("POST", "/v1beta/models/gemini-2.5-pro:streamGenerateContent"),
            Some("/v1beta/models/{model}:streamGenerateContent")
        );
        assert_eq!(GEMINI.template("POST", "/v1beta/models/x:deleteEverything"), None);
        assert_eq!(OPENAI.template("POST", "/v1/chat/completionsX"), None);
    }

    #[test]
    fn base_urls_fit_their_route_directly_or_through_the_relay() {
        assert!(base_url_fits("https://api.openai.com/v1", &OPENAI));
        assert!(base_url_fits("http://127.0.0.1:18080/api.openai.com/v1", &OPENAI));
        assert!(base_url_fits("http://api.anthropic.com:18080/api.anthropic.com", &ANTHROPIC));
        assert!(!base_url_fits("https://openrouter.ai/api/v1", &OPENAI));
        assert!(!base_url_fits("http://127.0.0.1:18080/openrouter.ai/api/v1", &OPENAI));
        assert!(!base_url_fits("https://api.openai.com.evil.test/v1", &OPENAI));
        assert!(!base_url_fits("ftp://api.openai.com/v1", &OPENAI));
    }

    #[test]
    fn override_variables_name_the_host() {
        assert_eq!(override_var("api.anthropic.com"), "LLXPRT_CREDD_UPSTREAM_API_ANTHROPIC_COM_URL");
        assert_eq!(
            override_var("generativelanguage.googleapis.com"),
            "LLXPRT_CREDD_UPSTREAM_GENERATIVELANGUAGE_GOOGLEAPIS_COM_URL"
        );
    }
}
