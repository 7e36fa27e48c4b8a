/*!
llxprt-code profile files → the [`Scope`] a daemon serves.

A profile lives at `{config}/profiles/{NAME}.json`. A standard profile
names a `provider`; when `auth.type` is `"oauth"` (or the provider is
`claudecode`, the Claude subscription, and there is no `auth.type`) its
OAuth buckets are `auth.buckets` (trimmed, non-empty) or `["default"]`; a stored API key is
named by `ephemeralSettings["auth-key-name"]`. A load-balancer profile
(`"type": "loadbalancer"`) lists other profiles by name in `profiles`; its
scope is the union of theirs. `--allow PROVIDER[:BUCKET]` and
`--allow-key NAME` add to the scope.
*/
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::names::{DEFAULT_BUCKET, is_valid_key_name, is_valid_provider_name};

/// The provider llxprt-code uses only with OAuth (the Claude subscription).
const OAUTH_ONLY_PROVIDER: &str = "claudecode";

/// How deep load-balancer profiles may nest.
const MAX_PROFILE_DEPTH: usize = 8;

/// What a daemon may serve: OAuth buckets per provider and API key names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// provider → buckets. A `None` bucket set means every bucket.
    pub oauth: BTreeMap<String, Option<BTreeSet<String>>>,
    /// API key names.
    pub keys: BTreeSet<String>,
    /// The provider of the profile that names each key (its
    /// `auth-key-name`), where one does: inject mode routes a key by it.
    pub key_providers: BTreeMap<String, String>,
    /// The `base-url` of the profile that names each key, where it sets
    /// one: inject mode routes the key only when it points at the route.
    pub key_base_urls: BTreeMap<String, String>,
}

impl Scope {
    /// Whether `provider:bucket` is in scope.
    pub fn allows_token(&self, provider: &str, bucket: Option<&str>) -> bool {
        match self.oauth.get(provider) {
            Some(None) => true,
            Some(Some(buckets)) => buckets.contains(bucket.unwrap_or(DEFAULT_BUCKET)),
            None => false,
        }
    }

    /// Whether `provider` has any bucket in scope.
    pub fn allows_provider(&self, provider: &str) -> bool {
        self.oauth.contains_key(provider)
    }

    /// Whether the key `name` is in scope.
    pub fn allows_key(&self, name: &str) -> bool {
        self.keys.contains(name)
    }

    /// Adds `provider[:bucket]` (no bucket: every bucket of the provider).
    pub fn allow(&mut self, spec: &str) -> Result<()> {
        let (provider, bucket) = crate::cli::provider_bucket(spec);
        if !is_valid_provider_name(&provider) || bucket.as_deref().is_some_and(|b| !is_valid_provider_name(b))
        {
            return Err(Error::Usage(format!("--allow {spec:?}: not a valid PROVIDER[:BUCKET]")));
        }
        match bucket {
            None => {
                self.oauth.insert(provider, None);
            }
            Some(b) => {
                if let Some(set) = self.oauth.entry(provider).or_insert_with(|| Some(BTreeSet::new())) {
                    set.insert(b);
                }
            }
        }
        Ok(())
    }

    /// Adds the API key `name`.
    pub fn allow_key(&mut self, name: &str) -> Result<()> {
        if !is_valid_key_name(name) {
            return Err(Error::Usage(format!("--allow-key {name:?}: not a valid key name")));
        }
        self.keys.insert(name.to_owned());
        Ok(())
    }

    /// Whether nothing at all is in scope.
    pub fn is_empty(&self) -> bool {
        self.oauth.is_empty() && self.keys.is_empty()
    }

    /// What both scopes allow (a SIGHUP may only narrow, SPEC §11.4).
    pub fn intersect(&self, other: &Scope) -> Scope {
        let mut oauth = BTreeMap::new();
        for (provider, mine) in &self.oauth {
            let Some(theirs) = other.oauth.get(provider) else { continue };
            let both = match (mine, theirs) {
                (None, None) => None,
                (None, Some(b)) | (Some(b), None) => Some(b.clone()),
                (Some(a), Some(b)) => Some(a.intersection(b).cloned().collect::<BTreeSet<_>>()),
            };
            if both.as_ref().is_none_or(|b| !b.is_empty()) {
                oauth.insert(provider.clone(), both);
            }
        }
        let keys: BTreeSet<String> = self.keys.intersection(&other.keys).cloned().collect();
        let key_providers = self
            .key_providers
            .iter()
            .filter(|(k, _)| keys.contains(*k))
            .map(|(k, p)| (k.clone(), p.clone()))
            .collect();
        let key_base_urls = self
            .key_base_urls
            .iter()
            .filter(|(k, _)| keys.contains(*k))
            .map(|(k, u)| (k.clone(), u.clone()))
            .collect();
        Scope { oauth, keys, key_providers, key_base_urls }
    }

    /// One line describing the scope, for logs and `doctor`.
    pub fn describe(&self) -> String {
        let oauth: Vec<String> = self
            .oauth
            .iter()
            .map(|(p, b)| match b {
                None => format!("{p}:*"),
                Some(b) => b.iter().map(|b| format!("{p}:{b}")).collect::<Vec<_>>().join(" "),
            })
            .collect();
        let keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        format!("oauth [{}] keys [{}]", oauth.join(" "), keys.join(" "))
    }
}

/// `--profile work.json` means profile `work`.
fn profile_name(name: &str) -> &str {
    name.strip_suffix(".json").filter(|n| !n.is_empty()).unwrap_or(name)
}

/// The file `--profile name` reads.
pub fn profile_file(profiles_dir: &Path, name: &str) -> PathBuf {
    profiles_dir.join(format!("{}.json", profile_name(name)))
}

/// Reads profile `name` from `profiles_dir` into a scope.
pub fn load_scope(profiles_dir: &Path, name: &str) -> Result<Scope> {
    let name = profile_name(name);
    let mut scope = Scope::default();
    add_profile(profiles_dir, name, &mut scope, 0)?;
    Ok(scope)
}

/// The profile names in `dir` (its `*.json` files), sorted, at most 20.
pub fn profiles_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_owned))
        .filter(|n| !n.is_empty() && !n.starts_with('.'))
        .collect();
    names.sort();
    names.truncate(20);
    names
}

fn add_profile(dir: &Path, name: &str, scope: &mut Scope, depth: usize) -> Result<()> {
    if depth > MAX_PROFILE_DEPTH {
        return Err(Error::Usage(format!(
            "profile {name:?}: load-balancer profiles nest too deep (a cycle?)"
        )));
    }
    if name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
        return Err(Error::Usage(format!("profile name {name:?} is not allowed")));
    }
    let path = dir.join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Error::Usage(format!("cannot read profile {}: {e}", path.display()));
        }
        let found = profiles_in(dir);
        let found = if found.is_empty() { "none".to_owned() } else { found.join(", ") };
        Error::Usage(format!(
            "no profile named {name:?} in {} (profiles there: {found}); save one in llxprt-code with \
             /profile save, or start with --allow PROVIDER[:BUCKET] / --allow-key NAME",
            dir.display()
        ))
    })?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("profile {} is not valid JSON: {e}", path.display())))?;
    add_profile_value(dir, name, &value, scope, depth)
}

fn add_profile_value(dir: &Path, name: &str, value: &Value, scope: &mut Scope, depth: usize) -> Result<()> {
    let Some(obj) = value.as_object() else {
        return Err(Error::Usage(format!("profile {name:?} must be a JSON object")));
    };
    if obj.get("type").and_then(Value::as_str) == Some("loadbalancer") {
        let members = obj.get("profiles").and_then(Value::as_array).ok_or_else(|| {
            Error::Usage(format!("load-balancer profile {name:?} needs a \"profiles\" list"))
        })?;
        for member in members {
            let member = member
                .as_str()
                .ok_or_else(|| Error::Usage(format!("profile {name:?}: \"profiles\" must hold names")))?;
            add_profile(dir, member, scope, depth + 1)?;
        }
        return Ok(());
    }
    let provider = obj.get("provider").and_then(Value::as_str).map(str::trim).unwrap_or_default();
    let auth = obj.get("auth");
    let auth_type = auth.and_then(|a| a.get("type")).and_then(Value::as_str);
    // `claudecode` is an OAuth-only identity in llxprt-code (the Claude
    // subscription): a profile naming it logs in with OAuth even when it
    // carries no `auth` object (`/profile save model` without buckets).
    let oauth = auth_type == Some("oauth") || (provider == OAUTH_ONLY_PROVIDER && auth_type.is_none());
    if oauth {
        if !is_valid_provider_name(provider) {
            return Err(Error::Usage(format!("profile {name:?}: provider {provider:?} is not a valid name")));
        }
        let mut buckets: BTreeSet<String> = auth
            .and_then(|a| a.get("buckets"))
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .filter(|b| !b.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if buckets.is_empty() {
            buckets.insert(DEFAULT_BUCKET.to_owned());
        }
        if let Some(bad) = buckets.iter().find(|b| !is_valid_provider_name(b)) {
            return Err(Error::Usage(format!("profile {name:?}: bucket {bad:?} is not a valid name")));
        }
        if let Some(set) = scope.oauth.entry(provider.to_owned()).or_insert_with(|| Some(BTreeSet::new())) {
            set.extend(buckets);
        }
    }
    if let Some(key) =
        obj.get("ephemeralSettings").and_then(|s| s.get("auth-key-name")).and_then(Value::as_str)
    {
        let key = key.trim();
        if !is_valid_key_name(key) {
            return Err(Error::Usage(format!(
                "profile {name:?}: auth-key-name {key:?} is not a valid key name"
            )));
        }
        scope.keys.insert(key.to_owned());
        if !provider.is_empty() {
            scope.key_providers.entry(key.to_owned()).or_insert_with(|| provider.to_owned());
        }
        let base_url = obj.get("ephemeralSettings").and_then(|s| s.get("base-url")).and_then(Value::as_str);
        // llxprt-code takes "" and "none" as unset
        if let Some(url) = base_url.map(str::trim).filter(|u| !u.is_empty() && *u != "none") {
            scope.key_base_urls.entry(key.to_owned()).or_insert_with(|| url.to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("credd-profiles-{}", crate::random::hex(6).unwrap()));
        std::fs::create_dir_all(&d).unwrap();
        for (name, body) in files {
            std::fs::write(d.join(format!("{name}.json")), body).unwrap();
        }
        d
    }

    #[test]
    fn standard_and_loadbalancer_profiles() {
        let d = dir(&[
            (
                "claude",
                r#"{"version":1,"provider":" anthropic ","auth":{"type":"oauth","buckets":["work"," ","home"]}}"#,
            ),
            (
                "gpt",
                r#"{"version":1,"provider":"openai","auth":{"type":"apikey"},"ephemeralSettings":{"auth-key-name":"OPENAI"}}"#,
            ),
            ("codex", r#"{"version":1,"provider":"codex","auth":{"type":"oauth"}}"#),
            ("lb", r#"{"type":"loadbalancer","policy":"roundrobin","profiles":["claude","gpt","codex"]}"#),
            ("loop", r#"{"type":"loadbalancer","profiles":["loop"]}"#),
        ]);
        let s = load_scope(&d, "lb").unwrap();
        assert!(s.allows_token("anthropic", Some("work")) && s.allows_token("anthropic", Some("home")));
        assert!(!s.allows_token("anthropic", None), "default is not listed for anthropic");
        assert!(s.allows_token("codex", None) && !s.allows_token("codex", Some("other")));
        assert!(!s.allows_provider("openai"), "an apikey profile grants no OAuth provider");
        assert!(s.allows_key("OPENAI") && !s.allows_key("OTHER"));
        assert!(load_scope(&d, "loop").is_err());
        assert!(load_scope(&d, "../etc/passwd").is_err());
        assert!(load_scope(&d, "missing").is_err());
    }

    #[test]
    fn claudecode_profiles_scope_their_buckets() {
        let d = dir(&[
            (
                "max",
                r#"{"version":1,"provider":"claudecode","model":"claude-opus-4","modelParams":{},"ephemeralSettings":{},"auth":{"type":"oauth","buckets":["work","personal"]}}"#,
            ),
            (
                "bare",
                r#"{"version":1,"provider":"claudecode","model":"m","modelParams":{},"ephemeralSettings":{}}"#,
            ),
            (
                "api",
                r#"{"version":1,"provider":"anthropic","model":"m","modelParams":{},"ephemeralSettings":{"auth-key-name":"mykey"}}"#,
            ),
            (
                "lb",
                r#"{"version":1,"type":"loadbalancer","policy":"failover","profiles":["max","api"],"provider":"","model":"","modelParams":{},"ephemeralSettings":{}}"#,
            ),
        ]);
        let s = load_scope(&d, "max").unwrap();
        assert_eq!(s.describe(), "oauth [claudecode:personal claudecode:work] keys []");
        let s = load_scope(&d, "bare").unwrap();
        assert_eq!(
            s.describe(),
            "oauth [claudecode:default] keys []",
            "claudecode is OAuth without an auth object"
        );
        let s = load_scope(&d, "api").unwrap();
        assert_eq!(s.describe(), "oauth [] keys [mykey]", "anthropic with a key name scopes the key only");
        let s = load_scope(&d, "lb").unwrap();
        assert_eq!(s.describe(), "oauth [claudecode:personal claudecode:work] keys [mykey]");
    }

    #[test]
    fn intersect_only_narrows() {
        let mut a = Scope::default();
        a.allow("claudecode:work").unwrap();
        a.allow("claudecode:home").unwrap();
        a.allow("codex").unwrap();
        a.allow_key("K1").unwrap();
        a.allow_key("K2").unwrap();
        let mut b = Scope::default();
        b.allow("claudecode:work").unwrap();
        b.allow("claudecode:extra").unwrap();
        b.allow("codex:one").unwrap();
        b.allow("gemini").unwrap();
        b.allow_key("K2").unwrap();
        b.allow_key("K3").unwrap();
        assert_eq!(a.intersect(&b).describe(), "oauth [claudecode:work codex:one] keys [K2]");
        assert_eq!(b.intersect(&a), a.intersect(&b));
        assert!(a.intersect(&Scope::default()).is_empty());
        assert_eq!(a.intersect(&a), a);
    }

    #[test]
    fn allow_flags() {
        let mut s = Scope::default();
        s.allow("anthropic:work").unwrap();
        s.allow("codex").unwrap();
        s.allow_key("K").unwrap();
        assert!(s.allows_token("anthropic", Some("work")) && !s.allows_token("anthropic", None));
        assert!(s.allows_token("codex", Some("anything")));
        assert!(s.allow("../x").is_err() && s.allow_key("a@b").is_err());
        assert_eq!(s.describe(), "oauth [anthropic:work codex:*] keys [K]");
    }
}
