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

use serde_json::{Map, Value};

use super::socket::{ProxySocketClient, Response};
use crate::error::{Error, Result};
use crate::protocol::answer::Answer;
use crate::protocol::message::Op;
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
/// Checks a provider and bucket with the host store's rules.
fn checked(provider: &str, bucket: Option<&str>) -> Result<(String, Option<String>)> {
    check_provider(provider)?;
    if let Some(b) = bucket {
        check_bucket(b)?;
    }
    Ok((provider.to_owned(), bucket.map(str::to_owned)))
}

/// Sends `op` through `client`.
fn ask(client: &ProxySocketClient, op: &Op) -> Result<Response> {
    client.request(op.name(), Value::Object(op.payload()))
}

/// The typed `data` of `op`'s answer.
fn decode(op: &Op, data: Map<String, Value>) -> Result<Answer> {
    Answer::decode(op.name(), data).map_err(|_| malformed(op.name()))
}

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
}

impl TokenStore for ProxyTokenStore {
    fn save_token(&self, provider: &str, bucket: Option<&str>, token: &OAuthToken) -> Result<()> {
        let (provider, bucket) = checked(provider, bucket)?;
        let op = Op::SaveToken { provider, bucket, token: token.sanitize().into_map() };
        ask(&self.client, &op)?.into_data().map(drop)
    }

    fn get_token(&self, provider: &str, bucket: Option<&str>) -> Result<Option<OAuthToken>> {
        let (provider, bucket) = checked(provider, bucket)?;
        let op = Op::GetToken { provider, bucket };
        let Some(data) = found(ask(&self.client, &op)?)? else { return Ok(None) };
        match decode(&op, data)? {
            Answer::Token(t) => Ok(Some(OAuthToken::from_map(t)?)),
            _ => Err(malformed(op.name())),
        }
    }

    fn remove_token(&self, provider: &str, bucket: Option<&str>) -> Result<()> {
        let (provider, bucket) = checked(provider, bucket)?;
        found(ask(&self.client, &Op::RemoveToken { provider, bucket })?).map(drop)
    }

    fn list_providers(&self) -> Result<Vec<String>> {
        let op = Op::ListProviders;
        match decode(&op, ask(&self.client, &op)?.into_data()?)? {
            Answer::Providers(l) => Ok(l),
            _ => Err(malformed(op.name())),
        }
    }

    fn list_buckets(&self, provider: &str) -> Result<Vec<String>> {
        let (provider, _) = checked(provider, None)?;
        let op = Op::ListBuckets { provider };
        match decode(&op, ask(&self.client, &op)?.into_data()?)? {
            Answer::Buckets(l) => Ok(l),
            _ => Err(malformed(op.name())),
        }
    }

    fn get_bucket_stats(&self, provider: &str, bucket: Option<&str>) -> Result<Option<BucketStats>> {
        let (provider, bucket) = checked(provider, bucket)?;
        let op = Op::GetBucketStats { provider, bucket: bucket.clone() };
        let Some(data) = found(ask(&self.client, &op)?)? else { return Ok(None) };
        match decode(&op, data)? {
            Answer::Stats { request_count, percentage, .. } => Ok(Some(BucketStats {
                bucket: bucket.unwrap_or_else(|| DEFAULT_BUCKET.to_owned()),
                request_count,
                percentage,
            })),
            _ => Err(malformed(op.name())),
        }
    }

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

    fn key_op(name: &str, make: fn(String) -> Op) -> Result<Op> {
        check_key_name(name)?;
        Ok(make(name.to_owned()))
    }
}

impl KeyStore for ProxyProviderKeyStorage {
    /// Always fails with [`SANDBOX_KEY_MANAGEMENT`].
    fn save_key(&self, _: &str, _: &str) -> Result<()> {
        Err(Error::Usage(SANDBOX_KEY_MANAGEMENT.into()))
    }

    fn get_key(&self, name: &str) -> Result<Option<SecretString>> {
        let op = Self::key_op(name, |name| Op::GetApiKey { name })?;
        let Some(data) = found(ask(&self.client, &op)?)? else { return Ok(None) };
        match decode(&op, data)? {
            Answer::Key(key) => Ok(Some(SecretString::new(key))),
            _ => Err(malformed(op.name())),
        }
    }

    /// Always fails with [`SANDBOX_KEY_MANAGEMENT`].
    fn delete_key(&self, _: &str) -> Result<bool> {
        Err(Error::Usage(SANDBOX_KEY_MANAGEMENT.into()))
    }

    fn list_keys(&self) -> Result<Vec<String>> {
        let op = Op::ListApiKeys;
        match decode(&op, ask(&self.client, &op)?.into_data()?)? {
            Answer::Keys(l) => Ok(l),
            _ => Err(malformed(op.name())),
        }
    }

    fn has_key(&self, name: &str) -> Result<bool> {
        let op = Self::key_op(name, |name| Op::HasApiKey { name })?;
        match decode(&op, ask(&self.client, &op)?.into_data()?)? {
            Answer::Exists(e) => Ok(e),
            _ => Err(malformed(op.name())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_omit_an_absent_bucket_and_check_names() {
        let payload = |p: &str, b: Option<&str>| {
            let (provider, bucket) = checked(p, b)?;
            Ok::<_, Error>(Value::Object(Op::GetToken { provider, bucket }.payload()))
        };
        assert_eq!(payload("anthropic", None).unwrap(), json!({"provider":"anthropic"}));
        assert_eq!(payload("codex", Some("work")).unwrap(), json!({"provider":"codex","bucket":"work"}));
        assert!(matches!(payload("../x", None), Err(Error::Store(_))));
        assert!(matches!(payload("a", Some("b/c")), Err(Error::Store(_))));
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
        let op = Op::ListApiKeys;
        assert_eq!(
            decode(&op, data(json!({"keys":["a","b"]}))).unwrap(),
            Answer::Keys(vec!["a".into(), "b".into()])
        );
        for bad in [json!({}), json!({"keys":"a"}), json!({"keys":[1]})] {
            assert_eq!(
                decode(&op, data(bad)).unwrap_err().to_string(),
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
