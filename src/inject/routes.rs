/*!
The proxy's routes: one per upstream host, the first path segment of a
request on the proxy socket (`/api.anthropic.com/v1/messages`). Each route
has a fixed HTTPS origin, a method and path allow-list, and the header its
credential goes in. Nothing here is taken from a request or a profile.
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
};

pub const CHATGPT: Route = Route {
    host: "chatgpt.com",
    api: Api::Codex,
    allowed: &[
        ("POST", "/backend-api/codex/responses"),
        ("GET", "/backend-api/wham/usage"),
        ("GET", "/backend-api/wham/rate-limit-reset-credits"),
    ],
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
};

/// Every route.
pub const ROUTES: [&Route; 4] = [&ANTHROPIC, &CHATGPT, &OPENAI, &GEMINI];

/// The route whose host is `host`.
pub fn route(host: &str) -> Option<&'static Route> {
    ROUTES.into_iter().find(|r| r.host == host)
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
        _ => None,
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

/// `LLXPRT_CREDD_UPSTREAM_<HOST>_URL`: the host upper-cased, every other
/// character `_`.
pub fn override_var(host: &str) -> String {
    let name: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    format!("LLXPRT_CREDD_UPSTREAM_{name}_URL")
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
    fn override_variables_name_the_host() {
        assert_eq!(override_var("api.anthropic.com"), "LLXPRT_CREDD_UPSTREAM_API_ANTHROPIC_COM_URL");
        assert_eq!(
            override_var("generativelanguage.googleapis.com"),
            "LLXPRT_CREDD_UPSTREAM_GENERATIVELANGUAGE_GOOGLEAPIS_COM_URL"
        );
    }
}
