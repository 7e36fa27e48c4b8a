/*!
The store traits over the socket: [`ProxyTokenStore`] and
[`ProxyProviderKeyStorage`].

Error translation (SPEC §8, which wins over llxprt-code HEAD where they
differ):

- `NOT_FOUND` on a read (`get_token`, `get_bucket_stats`, `get_api_key`)
  is `None`; on `remove_token` it is success, so a logout of an absent
  token is quiet.
- Every other error code is [`Error::Remote`] with the daemon's code and
  message (`UNAUTHORIZED` for a request outside the daemon's scope,
  `RATE_LIMITED`, ...).
- The refresh lock is a no-op: the daemon locks on the host.
- Managing API keys is refused locally with [`SANDBOX_KEY_MANAGEMENT`] as
  an [`Error::Usage`] (a misuse of the store in sandbox mode, not a daemon
  answer); its text is llxprt-code's, which callers may match.

Names are checked here before anything is sent, with the host store's
rules and messages.
*/
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::socket::{ProxySocketClient, Response};
use crate::error::{Error, Result};
use crate::secret::SecretString;
use crate::store::names::{DEFAULT_BUCKET, check_bucket, check_key_name, check_provider};
use crate::store::{BucketStats, KeyStore, RefreshLock, TokenStore};
use crate::token::OAuthToken;

/// Why `save_key` and `delete_key` fail through the proxy.
pub const SANDBOX_KEY_MANAGEMENT: &str =
    "API key management is not available in sandbox mode. Manage keys on the host.";

const NOT_FOUND: &str = "NOT_FOUND";

/// `{"provider":P}` plus `"bucket":B` when a bucket is named, after the
/// name checks.
fn target(provider: &str, bucket: Option<&str>) -> Result<Map<String, Value>> {
    check_provider(provider)?;
    let mut payload = Map::new();
    payload.insert("provider".into(), Value::String(provider.to_owned()));
    if let Some(b) = bucket {
        check_bucket(b)?;
        payload.insert("bucket".into(), Value::String(b.to_owned()));
    }
    Ok(payload)
}

/// `None` for `NOT_FOUND`, the data for success, [`Error::Remote`] otherwise.
fn found(response: Response) -> Result<Option<Map<String, Value>>> {
    match response {
        Response::Err { code, .. } if code == NOT_FOUND => Ok(None),
        other => other.into_data().map(Some),
    }
}

fn malformed(op: &str) -> Error {
    Error::Connection(format!("Malformed {op} response from proxy"))
}

/// The string list in `data[field]`.
fn string_list(data: &Map<String, Value>, field: &str, op: &str) -> Result<Vec<String>> {
    let Some(Value::Array(items)) = data.get(field) else { return Err(malformed(op)) };
    items.iter().map(|v| v.as_str().map(str::to_owned).ok_or_else(|| malformed(op))).collect()
}

/// A [`TokenStore`] answered by the daemon.
#[derive(Debug, Clone)]
pub struct ProxyTokenStore {
    client: Arc<ProxySocketClient>,
}

impl ProxyTokenStore {
    /// A token store over `client` (which may be shared with other stores).
    pub fn new(client: Arc<ProxySocketClient>) -> Self {
        ProxyTokenStore { client }
    }

    /// The client underneath.
    pub fn client(&self) -> &Arc<ProxySocketClient> {
        &self.client
    }

    fn call(&self, op: &str, payload: Map<String, Value>) -> Result<Response> {
        self.client.request(op, Value::Object(payload))
    }
}

impl TokenStore for ProxyTokenStore {
    /// Sends the token without its `refresh_token`: the daemon ignores one
    /// from the socket anyway, and keeps the stored one when it merges.
    fn save_token(&self, provider: &str, bucket: Option<&str>, token: &OAuthToken) -> Result<()> {
        let mut payload = target(provider, bucket)?;
        payload.insert("token".into(), Value::Object(token.sanitize().into_map()));
        self.call("save_token", payload)?.into_data().map(drop)
    }

    fn get_token(&self, provider: &str, bucket: Option<&str>) -> Result<Option<OAuthToken>> {
        let Some(data) = found(self.call("get_token", target(provider, bucket)?)?)? else { return Ok(None) };
        Ok(Some(OAuthToken::from_map(data)?))
    }

    fn remove_token(&self, provider: &str, bucket: Option<&str>) -> Result<()> {
        found(self.call("remove_token", target(provider, bucket)?)?).map(drop)
    }

    fn list_providers(&self) -> Result<Vec<String>> {
        let data = self.call("list_providers", Map::new())?.into_data()?;
        string_list(&data, "providers", "list_providers")
    }

    fn list_buckets(&self, provider: &str) -> Result<Vec<String>> {
        let data = self.call("list_buckets", target(provider, None)?)?.into_data()?;
        string_list(&data, "buckets", "list_buckets")
    }

    /// The daemon keeps no usage figures: the counters it sends (zeros)
    /// are passed on, and the bucket is the one asked for.
    fn get_bucket_stats(&self, provider: &str, bucket: Option<&str>) -> Result<Option<BucketStats>> {
        let Some(data) = found(self.call("get_bucket_stats", target(provider, bucket)?)?)? else {
            return Ok(None);
        };
        Ok(Some(BucketStats {
            bucket: bucket.unwrap_or(DEFAULT_BUCKET).to_owned(),
            request_count: data.get("requestCount").and_then(Value::as_u64).unwrap_or(0),
            percentage: data.get("percentage").and_then(Value::as_f64).unwrap_or(0.0),
        }))
    }

    /// A no-op: refreshes happen on the host, under the daemon's lock.
    fn acquire_refresh_lock(&self, _: &str, _: Option<&str>, _: Duration) -> Result<RefreshLock> {
        Ok(RefreshLock::none())
    }
}

/// A [`KeyStore`] answered by the daemon: keys can be read, not managed.
#[derive(Debug, Clone)]
pub struct ProxyProviderKeyStorage {
    client: Arc<ProxySocketClient>,
}

impl ProxyProviderKeyStorage {
    /// A key storage over `client` (which may be shared with other stores).
    pub fn new(client: Arc<ProxySocketClient>) -> Self {
        ProxyProviderKeyStorage { client }
    }

    /// The client underneath.
    pub fn client(&self) -> &Arc<ProxySocketClient> {
        &self.client
    }

    fn call(&self, op: &str, name: &str) -> Result<Response> {
        check_key_name(name)?;
        self.client.request(op, json!({ "name": name }))
    }
}

impl KeyStore for ProxyProviderKeyStorage {
    /// Always fails with [`SANDBOX_KEY_MANAGEMENT`].
    fn save_key(&self, _: &str, _: &str) -> Result<()> {
        Err(Error::Usage(SANDBOX_KEY_MANAGEMENT.into()))
    }

    fn get_key(&self, name: &str) -> Result<Option<SecretString>> {
        let Some(mut data) = found(self.call("get_api_key", name)?)? else { return Ok(None) };
        match data.remove("key") {
            Some(Value::String(key)) => Ok(Some(SecretString::new(key))),
            _ => Err(malformed("get_api_key")),
        }
    }

    /// Always fails with [`SANDBOX_KEY_MANAGEMENT`].
    fn delete_key(&self, _: &str) -> Result<bool> {
        Err(Error::Usage(SANDBOX_KEY_MANAGEMENT.into()))
    }

    fn list_keys(&self) -> Result<Vec<String>> {
        let data = self.client.request("list_api_keys", Value::Null)?.into_data()?;
        string_list(&data, "keys", "list_api_keys")
    }

    fn has_key(&self, name: &str) -> Result<bool> {
        let data = self.call("has_api_key", name)?.into_data()?;
        data.get("exists").and_then(Value::as_bool).ok_or_else(|| malformed("has_api_key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_omit_an_absent_bucket_and_check_names() {
        assert_eq!(Value::Object(target("anthropic", None).unwrap()), json!({"provider":"anthropic"}));
        assert_eq!(
            Value::Object(target("codex", Some("work")).unwrap()),
            json!({"provider":"codex","bucket":"work"})
        );
        assert!(matches!(target("../x", None), Err(Error::Store(_))));
        assert!(matches!(target("a", Some("b/c")), Err(Error::Store(_))));
    }

    #[test]
    fn not_found_is_none_and_other_codes_are_remote_errors() {
        let err = |code: &str| Response::Err { code: code.into(), message: "m".into(), retry_after: None };
        assert!(found(err("NOT_FOUND")).unwrap().is_none());
        assert_eq!(found(Response::Ok(Map::new())).unwrap(), Some(Map::new()));
        match found(err("UNAUTHORIZED")) {
            Err(Error::Remote { code, message }) => {
                assert_eq!((code.as_str(), message.as_str()), ("UNAUTHORIZED", "m"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lists_must_be_string_arrays() {
        let data = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(string_list(&data(json!({"keys":["a","b"]})), "keys", "op").unwrap(), ["a", "b"]);
        for bad in [json!({}), json!({"keys":"a"}), json!({"keys":[1]})] {
            assert_eq!(
                string_list(&data(bad), "keys", "list_api_keys").unwrap_err().to_string(),
                "Malformed list_api_keys response from proxy"
            );
        }
    }

    #[test]
    fn key_management_is_refused_without_a_connection() {
        let keys = ProxyProviderKeyStorage::new(Arc::new(ProxySocketClient::new("/nonexistent.sock", None)));
        assert_eq!(keys.save_key("K", "v").unwrap_err().to_string(), SANDBOX_KEY_MANAGEMENT);
        assert_eq!(keys.delete_key("K").unwrap_err().to_string(), SANDBOX_KEY_MANAGEMENT);
        assert!(matches!(keys.get_key("a@b"), Err(Error::Store(_))));
    }
}
