/*!
The host-store commands of `llxprt-cred` (`key set|get|list|rm`, `token
list|show|import|rm`), and `doctor`'s entry: they open the store
llxprt-code uses on this host. A credential that is not found is reported
with why it may be stored after all (a keyring that could not be reached).
*/
#![forbid(unsafe_code)]

use std::io::{self, Read};

use serde_json::Value;

use super::{expiry_text, json_ascii, out};
use crate::cli::cred::{Args, Command};
use crate::cli::{EXIT_FAILURE, EXIT_OK};
use crate::error::{Error, Result};
use crate::store::keyring::KeyringStatus;
use crate::store::lock::REFRESH_LOCK_WAIT;
use crate::store::names::DEFAULT_BUCKET;
use crate::store::{Change, HostStore, KeyStore, LockWait, TokenStore, resolve_backend, update_token};
use crate::token::{OAuthToken, now_unix_seconds};

/// Runs a command on the host store: opens it, then does the command.
pub(super) fn run(args: &Args) -> Result<i32> {
    let backend = resolve_backend(args.store)?;
    let host = HostStore::open(backend)?;
    match &args.command {
        Command::KeySet(name) => {
            let value = read_secret_value(name)?;
            host.keys.save_key(name, &value)?;
            eprintln!("llxprt-cred: stored API key {name}");
        }
        Command::KeyGet(name) => match host.keys.get_key(name)? {
            Some(v) => out(v.expose())?,
            None => return Ok(not_stored(&host, format!("no API key named {name}"))),
        },
        Command::KeyList => {
            for name in host.keys.list_keys()? {
                out(name)?;
            }
        }
        Command::KeyRm(name) => {
            if !host.keys.delete_key(name)? {
                return Ok(not_stored(&host, format!("no API key named {name}")));
            }
        }
        Command::TokenList => token_list(&host)?,
        Command::TokenShow(p, b) => match host.tokens.get_token(p, b.as_deref())? {
            Some(token) => out(json_ascii(&Value::Object(token.sanitize().into_map())))?,
            None => {
                return Ok(not_stored(
                    &host,
                    format!("no token for {p}:{}", b.as_deref().unwrap_or(DEFAULT_BUCKET)),
                ));
            }
        },
        Command::TokenImport(p, b) => token_import(&host, p, b.as_deref())?,
        Command::TokenRm(p, b) => {
            // under the refresh lock, like every token write; like key rm,
            // a missing token is a failure the user hears about
            let wait = LockWait::up_to(REFRESH_LOCK_WAIT);
            let found =
                update_token(host.tokens.as_ref(), p, b.as_deref(), &wait, |stored| match stored.get() {
                    Ok(Some(_)) => (Change::Remove, Ok(true)),
                    Ok(None) => (Change::Keep, Ok(false)),
                    Err(e) => (Change::Keep, Err(e)),
                })??;
            if !found {
                return Ok(not_stored(
                    &host,
                    format!("no token for {p}:{}", b.as_deref().unwrap_or(DEFAULT_BUCKET)),
                ));
            }
        }
        Command::Doctor => return super::doctor::doctor(&host, args.profile.as_deref()),
        Command::Help(_)
        | Command::Version
        | Command::Status
        | Command::Get(..)
        | Command::GetKey(_)
        | Command::Refresh(..)
        | Command::Login(..)
        | Command::Logout(..) => {
            unreachable!("answered by main or run before the store is opened")
        }
    }
    Ok(EXIT_OK)
}

fn read_secret_value(name: &str) -> Result<String> {
    if crate::sys::stdin_is_tty() {
        eprint!("Value for {name} (not shown): ");
        let line = crate::sys::read_line_without_echo().map_err(|e| Error::io("reading the terminal", e))?;
        eprintln!();
        return Ok(line);
    }
    let mut value = String::new();
    io::stdin().read_to_string(&mut value).map_err(|e| Error::io("reading stdin", e))?;
    Ok(value)
}

fn token_list(host: &HostStore) -> Result<()> {
    let now = now_unix_seconds();
    for provider in host.tokens.list_providers()? {
        for bucket in host.tokens.list_buckets(&provider)? {
            let line = match host.tokens.get_token(&provider, Some(&bucket))? {
                Some(t) => {
                    let when = expiry_text(&t, now);
                    let refresh = if t.refresh_token().is_some() { "refreshable" } else { "not refreshable" };
                    format!("{provider}:{bucket}\t{when}\t{refresh}")
                }
                None => format!("{provider}:{bucket}\tunreadable"),
            };
            out(line)?;
        }
    }
    Ok(())
}

/// Merges a token from stdin into the stored one under the refresh lock,
/// the same read-merge-save the daemon does, so concurrent imports never
/// lose each other's fields.
fn token_import(host: &HostStore, provider: &str, bucket: Option<&str>) -> Result<()> {
    let mut text = String::new();
    io::stdin().read_to_string(&mut text).map_err(|e| Error::io("reading stdin", e))?;
    let incoming = OAuthToken::from_json(&text)?;
    let wait = LockWait::up_to(REFRESH_LOCK_WAIT);
    update_token(host.tokens.as_ref(), provider, bucket, &wait, |stored| match stored.get() {
        Ok(Some(stored)) => (Change::Save(OAuthToken::merge(&stored, &incoming)), Ok(())),
        Ok(None) => (Change::Save(incoming.clone()), Ok(())),
        Err(e) => (Change::Keep, Err(e)),
    })?
}

/// Says that a credential is not stored, and, when a keyring that could
/// not be reached left only the encrypted files to search, that it may
/// well be stored after all. Returns the exit code.
fn not_stored(host: &HostStore, what: String) -> i32 {
    eprintln!("llxprt-cred: {what}");
    if let Some(why) = unsearched_keyring(host) {
        eprintln!("llxprt-cred: {why}");
    }
    EXIT_FAILURE
}

/// Why "not stored" may be wrong: in `auto`, a keyring that could not be
/// reached (or answered LOCKED) leaves only the encrypted files searched.
pub(super) fn unsearched_keyring(host: &HostStore) -> Option<String> {
    match host.keyring.as_ref()?.status() {
        KeyringStatus::Ready => None,
        KeyringStatus::Unavailable(why) | KeyringStatus::Latched(why) => Some(format!(
            "the keyring could not be reached ({why}), so only the encrypted files in {} were searched; \
             if llxprt-code keeps it in your keyring, run where that keyring is reachable and unlocked \
             (llxprt-cred doctor shows the live backend) instead of storing it again",
            host.paths.data.display()
        )),
    }
}
