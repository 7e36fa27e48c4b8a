/*!
Names on the wire: login flow types, the name rules of providers,
buckets and keys (llxprt-code's), and the default bucket. The protocol owns
them; the stores and the OAuth code use them from here.
*/
#![forbid(unsafe_code)]

use serde::Deserialize;

/// The bucket used when a request names none.
pub const DEFAULT_BUCKET: &str = "default";

const NAME_MAX_CHARS: usize = 64;

fn all_chars(name: &str, extra: &[char]) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(&c))
}

/// Whether `name` is a valid provider or bucket name
/// (`^[a-zA-Z0-9._@-]{1,64}$`).
pub fn is_valid_provider_name(name: &str) -> bool {
    all_chars(name, &['.', '_', '@', '-'])
}

/// Whether `name` is a valid API key name (`^[a-zA-Z0-9._-]{1,64}$`).
pub fn is_valid_key_name(name: &str) -> bool {
    all_chars(name, &['.', '_', '-'])
}

/// A login flow, named as on the wire (`flow_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowType {
    /// Authorization code with PKCE; the user pastes `code#state` back
    /// (`oauth_exchange`).
    PkceRedirect,
    /// Device authorization; the host polls the provider in the background
    /// (`oauth_poll`).
    DeviceCode,
    /// Authorization code with PKCE; the browser comes back to a listener
    /// on the host's loopback (`oauth_poll`).
    BrowserRedirect,
}

impl FlowType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FlowType::PkceRedirect => "pkce_redirect",
            FlowType::DeviceCode => "device_code",
            FlowType::BrowserRedirect => "browser_redirect",
        }
    }

    /// Parses a wire name (llxprt-code's adapter also says `pkce`).
    pub fn parse(s: &str) -> Option<FlowType> {
        match s {
            "pkce_redirect" | "pkce" => Some(FlowType::PkceRedirect),
            "device_code" | "device" => Some(FlowType::DeviceCode),
            "browser_redirect" | "browser" => Some(FlowType::BrowserRedirect),
            _ => None,
        }
    }
}
