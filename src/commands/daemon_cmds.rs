/*!
The daemon commands of `llxprt-cred` (`status`, `get`, `get-key`,
`refresh`): they ask the running `llxprt-credd` named by `--socket` or the
environment, through the same client library a sandboxed program uses.
*/
#![forbid(unsafe_code)]

use std::sync::Arc;

use serde_json::Value;

use super::{json_ascii, out};
use crate::cli::cred::Args;
use crate::cli::{EXIT_FAILURE, EXIT_OK};
use crate::client::{self, ProxyProviderKeyStorage, ProxySocketClient, ProxyTokenStore, capability};
use crate::error::{Error, Result};
use crate::store::names::DEFAULT_BUCKET;
use crate::store::{KeyStore, TokenStore};
use crate::token::OAuthToken;

/// Whether a daemon is named (`--socket` or `LLXPRT_CREDENTIAL_SOCKET`).
pub(super) fn daemon_named(args: &Args) -> bool {
    args.socket.is_some() || client::socket_from(&client::process_env).is_some()
}

/// The client of the daemon named by `--socket` or the environment, with
/// the capability token from `--capability-file` or the environment.
pub(super) fn daemon_client(args: &Args) -> Result<ProxySocketClient> {
    let socket = match &args.socket {
        Some(path) => path.clone(),
        None => client::socket_from(&client::process_env).ok_or_else(|| {
            Error::Connection(format!("no daemon named: set {} or pass --socket PATH", client::SOCKET_ENV))
        })?,
    };
    let token = match &args.capability_file {
        Some(file) => Some(capability::from_file(file)?),
        None => capability::from_lookup(&client::process_env)?,
    };
    Ok(ProxySocketClient::new(socket, token))
}

pub(super) fn status(args: &Args) -> Result<i32> {
    let client = Arc::new(daemon_client(args)?);
    let version = client.connect()?;
    let tokens = ProxyTokenStore::new(client.clone());
    let keys = ProxyProviderKeyStorage::new(client.clone());
    out(format!("socket: {}", client.socket_path().display()))?;
    out(format!("protocol version: {version}"))?;
    let mut served = Vec::new();
    for provider in tokens.list_providers()? {
        for bucket in tokens.list_buckets(&provider)? {
            served.push(format!("{provider}:{bucket}"));
        }
    }
    out(format!("tokens: {}", listed(&served)))?;
    out(format!("api keys: {}", listed(&keys.list_keys()?)))?;
    client.close();
    Ok(EXIT_OK)
}

fn listed(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(" ") }
}

pub(super) fn daemon_get(args: &Args, provider: &str, bucket: Option<&str>) -> Result<i32> {
    let tokens = ProxyTokenStore::new(Arc::new(daemon_client(args)?));
    match tokens.get_token(provider, bucket)? {
        Some(token) => {
            out(json_ascii(&Value::Object(token.sanitize().into_map())))?;
            Ok(EXIT_OK)
        }
        None => {
            eprintln!(
                "llxprt-cred: the daemon has no token for {provider}:{}",
                bucket.unwrap_or(DEFAULT_BUCKET)
            );
            Ok(EXIT_FAILURE)
        }
    }
}

/// `refresh PROVIDER[:BUCKET]`: the daemon's `refresh_token` (a token that
/// has expired or is about to is refreshed on the host; a fresh one is
/// returned as stored); printed like `get` prints one.
pub(super) fn daemon_refresh(args: &Args, provider: &str, bucket: Option<&str>) -> Result<i32> {
    use crate::protocol::answer::Answer;
    use crate::protocol::message::Op;
    crate::store::names::check_provider(provider)?;
    if let Some(b) = bucket {
        crate::store::names::check_bucket(b)?;
    }
    let client = daemon_client(args)?;
    let op = Op::RefreshToken { provider: provider.to_owned(), bucket: bucket.map(str::to_owned) };
    match client.request(op.name(), Value::Object(op.payload()))? {
        client::socket::Response::Err { code, .. } if code == "NOT_FOUND" => {
            eprintln!(
                "llxprt-cred: the daemon has no token for {provider}:{}",
                bucket.unwrap_or(DEFAULT_BUCKET)
            );
            Ok(EXIT_FAILURE)
        }
        response => match Answer::decode(op.name(), response.into_data()?) {
            Ok(Answer::Token(t)) => {
                let shown = OAuthToken::from_map(t)?.sanitize().into_map();
                out(json_ascii(&Value::Object(shown)))?;
                Ok(EXIT_OK)
            }
            _ => Err(Error::Connection("Malformed refresh_token response from proxy".into())),
        },
    }
}

pub(super) fn daemon_get_key(args: &Args, name: &str) -> Result<i32> {
    let keys = ProxyProviderKeyStorage::new(Arc::new(daemon_client(args)?));
    match keys.get_key(name)? {
        Some(key) => {
            out(key.expose())?;
            Ok(EXIT_OK)
        }
        None => {
            eprintln!("llxprt-cred: the daemon has no API key named {name}");
            Ok(EXIT_FAILURE)
        }
    }
}
