//! A test directory's host store as the tests see it: tokens and keys
//! planted through `llxprt-cred --store file` before a daemon starts, what
//! a daemon left there read back through the library, and the records
//! llxprt-code writes that tests imitate (lock files, id tokens).

#![allow(dead_code)]

use std::process::Command;

use llxprt_credd::store::{Backend, HostStore, Paths, TokenStore};
use serde_json::{Value, json};

use crate::harness::{TestDir, ok};

/// The wall clock in Unix seconds, as token expiries count it.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A bearer token record with access token `access` and refresh token
/// `refresh`, expiring `expires_in` seconds from now (whole seconds);
/// callers add the fields their provider's tokens carry.
pub fn oauth_token(access: &str, refresh: &str, expires_in: f64) -> Value {
    json!({"access_token": access, "refresh_token": refresh, "expiry": (now() + expires_in).floor(),
        "token_type": "Bearer"})
}

/// An unsigned JWT carrying `claims` (the daemon reads only the claims of
/// the id tokens providers send).
pub fn jwt(claims: Value) -> String {
    use base64::Engine;
    let b = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!("{}.{}.c2ln", b.encode(br#"{"alg":"RS256","typ":"JWT"}"#), b.encode(claims.to_string()))
}

/// A lock record naming `pid` with its real start time, as llxprt-code
/// writes it.
pub fn llxprt_lock_record(pid: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let ticks: u64 = rest.split(' ').nth(19).unwrap().parse().unwrap();
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("btime ").map(|v| v.trim().parse().unwrap()))
        .unwrap();
    let start_ms = (btime + ticks / 100) * 1000;
    let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap();
    format!(
        r#"{{"version":1,"ownerToken":"11111111-2222-4333-8444-555555555555","pid":{pid},"hostname":{:?},"startTimeMs":{start_ms},"startTimeSource":"canonical"}}"#,
        host.trim()
    )
}

impl TestDir {
    /// This directory's file store, opened as the host opens it.
    pub fn host_store(&self) -> HostStore {
        let paths = Paths { data: self.data(), log: self.log(), config: self.root.join("config") };
        HostStore::open_at(paths, Backend::File).unwrap()
    }

    /// Token `provider` (`bucket`) as stored on the host, refresh token
    /// included; `None` when there is none.
    pub fn stored_token(&self, provider: &str, bucket: Option<&str>) -> Option<Value> {
        let token = self.host_store().tokens.get_token(provider, bucket).unwrap()?;
        Some(Value::Object(token.fields().clone()))
    }

    /// Stores `token` (JSON) as `spec` (`provider[:bucket]`) with
    /// `llxprt-cred --store file token import`, which must succeed.
    #[track_caller]
    pub fn import_token(&self, spec: &str, token: &str) {
        ok(self.run(None, &["--store", "file", "token", "import", spec], token));
    }

    /// Stores API key `name` with `llxprt-cred --store file key set`, which
    /// must succeed.
    #[track_caller]
    pub fn set_key(&self, name: &str, value: &str) {
        ok(self.run(None, &["--store", "file", "key", "set", name], value));
    }
}

/// A test directory whose store holds `token` (JSON) as `anthropic`,
/// `anthropic:work` and `secret-provider`, and the keys `OPENAI`
/// (`sk-PLANTED-KEY`) and `HIDDEN`: what the socket tests ask a daemon
/// for, in its scope and outside it.
pub fn seeded_with(name: &str, token: &str) -> TestDir {
    let dir = TestDir::new(name);
    for spec in ["anthropic", "anthropic:work", "secret-provider"] {
        dir.import_token(spec, token);
    }
    dir.set_key("OPENAI", "sk-PLANTED-KEY");
    dir.set_key("HIDDEN", "sk-hidden");
    dir
}
