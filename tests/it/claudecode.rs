//! `claudecode`, the Claude subscription identity of current llxprt-code,
//! through the real daemon and `llxprt-cred` against the fake provider:
//! refresh on read with the Claude client id, proactive renewal, logins
//! through the daemon and on the host, profiles, the legacy `anthropic`
//! OAuth store that keeps refreshing, what `doctor` says, and tokens
//! llxprt-code saved (keyring item and encrypted file) read, refreshed and
//! written back in the form llxprt-code reads.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_provider::{FakeProvider, browser_get, query_param};
use crate::harness::*;
use crate::host_store::*;
use crate::needs::*;

const CLAUDE_CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
const PLANTED: &str = "rt-CANARY-claudecode";

/// A token as llxprt-code stores a Claude subscription login.
fn token(expires_in: f64, refresh: &str) -> String {
    let mut t = oauth_token("sk-ant-oat01-PLANTED", refresh, expires_in);
    t["scope"] = "user:inference user:profile".into();
    t.to_string()
}

/// Both Claude names pointed at `fake`, each by its own variables.
fn env_for(fake: &FakeProvider) -> Vec<(String, String)> {
    let b = &fake.base;
    let mut env = vec![("LLXPRT_CREDD_TIME_SCALE".to_owned(), "0.01".to_owned())];
    for name in ["CLAUDECODE", "ANTHROPIC"] {
        env.push((format!("LLXPRT_CREDD_{name}_TOKEN_URL"), format!("{b}/oauth/token")));
        env.push((format!("LLXPRT_CREDD_{name}_AUTHORIZE_URL"), format!("{b}/authorize")));
    }
    env
}

fn daemon(dir: &TestDir, fake: &FakeProvider, args: &[&str], scale: &str) -> Daemon {
    let mut env = env_for(fake);
    env[0].1 = scale.to_owned();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    dir.daemon_with_env(args, &env)
}

fn assert_no_canary(d: &Daemon, answers: &[Value]) {
    for a in answers {
        assert!(!a.to_string().contains("CANARY"), "an answer leaked: {a}");
    }
    assert!(!d.log_text().contains("CANARY"), "the log leaked a refresh token");
}

#[test]
fn an_expired_claudecode_token_is_refreshed_on_read_with_the_claude_client_and_legacy_anthropic_too() {
    let dir = TestDir::new("cc-read");
    let fake = FakeProvider::start();
    let mut planted: Value = serde_json::from_str(&token(-10.0, PLANTED)).unwrap();
    planted["resource_url"] = json!("https://kept.example");
    dir.import_token("claudecode", &planted.to_string());
    dir.import_token("anthropic:old", &token(-10.0, "rt-CANARY-legacy"));
    let d = daemon(&dir, &fake, &["--allow", "claudecode", "--allow", "anthropic"], "0.01");
    let mut c = d.connect();
    c.handshake();
    let r = c.request("get_token", json!({"provider":"claudecode"}));
    assert_eq!(r["data"]["access_token"], "at-refreshed-1", "{r}");
    assert_eq!(fake.count(), 1, "one provider call");
    let call = &fake.calls()[0];
    assert_eq!(call.field("grant_type").as_deref(), Some("refresh_token"));
    assert_eq!(call.field("client_id").as_deref(), Some(CLAUDE_CLIENT_ID));
    assert_eq!(call.field("refresh_token").as_deref(), Some(PLANTED));
    // stored under claudecode:default, in llxprt-code's file name, with the rotated refresh token
    assert!(dir.oauth_dir().join("claudecode%3Adefault.enc").exists());
    let s = dir.stored_token("claudecode", None).unwrap();
    assert_eq!(
        (s["access_token"].as_str(), s["refresh_token"].as_str()),
        (Some("at-refreshed-1"), Some("rt-CANARY-rotated-1"))
    );
    assert_eq!(s["resource_url"], "https://kept.example", "fields the provider does not send survive");
    // the claudecode refresh took claudecode's lock, not anthropic's
    assert!(d.log_text().contains("claudecode:default"), "{}", d.log_text());
    // legacy anthropic:* OAuth tokens keep refreshing under their own name
    let r = c.request("get_token", json!({"provider":"anthropic","bucket":"old"}));
    assert_eq!(r["data"]["access_token"], "at-refreshed-2", "{r}");
    assert_eq!(fake.calls()[1].field("refresh_token").as_deref(), Some("rt-CANARY-legacy"));
    assert_eq!(fake.calls()[1].field("client_id").as_deref(), Some(CLAUDE_CLIENT_ID));
    assert_eq!(dir.stored_token("anthropic", Some("old")).unwrap()["refresh_token"], "rt-CANARY-rotated-2");
    assert_eq!(dir.stored_token("claudecode", None).unwrap()["access_token"], "at-refreshed-1", "apart");
    assert_no_canary(&d, &[r]);
}

#[test]
fn a_claudecode_token_is_renewed_before_it_expires() {
    let dir = TestDir::new("cc-renew");
    let fake = FakeProvider::start();
    dir.import_token("claudecode:work", &token(3600.0, PLANTED));
    // scale 0.001: renewed 3210..3240 s (scaled 3.21..3.24 s) after it is served
    let d = daemon(&dir, &fake, &["--allow", "claudecode"], "0.001");
    let mut c = d.connect();
    c.handshake();
    let served = Instant::now();
    assert_eq!(c.request("get_token", json!({"provider":"claudecode","bucket":"work"}))["ok"], true);
    assert!(fake.wait_for(1, Duration::from_secs(6)), "renewed");
    let after = fake.calls()[0].at - served;
    assert!(after >= Duration::from_millis(3150) && after < Duration::from_millis(4500), "{after:?}");
    assert_eq!(fake.calls()[0].field("client_id").as_deref(), Some(CLAUDE_CLIENT_ID));
    let deadline = Instant::now() + Duration::from_secs(3);
    while dir.stored_token("claudecode", Some("work")).unwrap()["access_token"] != "at-refreshed-1" {
        assert!(Instant::now() < deadline, "the renewed token was stored");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_no_canary(&d, &[]);
}

#[test]
fn claudecode_logs_in_through_the_daemon_and_on_the_host() {
    let dir = TestDir::new("cc-login");
    let fake = FakeProvider::start();
    // through the daemon, when the host permits logins: PKCE code-paste
    let d = daemon(&dir, &fake, &["--allow", "claudecode", "--permit", "login"], "0.01");
    let mut c = d.connect();
    c.handshake();
    let r = c.request("oauth_initiate", json!({"provider":"claudecode","bucket":"work"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["flow_type"], "pkce_redirect");
    let sid = r["data"]["session_id"].as_str().unwrap().to_owned();
    plant(sid.clone(), Exposure::Served);
    let url = r["data"]["auth_url"].as_str().unwrap().to_owned();
    assert_eq!(query_param(&url, "client_id").as_deref(), Some(CLAUDE_CLIENT_ID));
    assert_eq!(query_param(&url, "scope").as_deref(), Some("org:create_api_key user:profile user:inference"));
    plant(query_param(&url, "state").unwrap(), Exposure::Served);
    let (_, _, pasted) = browser_get(&url).unwrap();
    plant(pasted.split('#').next().unwrap(), Exposure::Never);
    let r = c.request("oauth_exchange", json!({"session_id": sid, "code": pasted}));
    assert_eq!(r["ok"], true, "{r}");
    let s = dir.stored_token("claudecode", Some("work")).expect("claudecode:work stored");
    assert!(s["refresh_token"].as_str().unwrap().contains("CANARY"));
    assert!(dir.stored_token("anthropic", Some("work")).is_none());
    assert_eq!(
        fake.calls_to("/oauth/token").pop().unwrap().field("client_id").as_deref(),
        Some(CLAUDE_CLIENT_ID)
    );
    // without --permit login the sandbox cannot start one
    let d2 = daemon(&dir, &fake, &["--allow", "claudecode"], "0.01");
    let mut c2 = d2.connect();
    c2.handshake();
    assert_eq!(c2.request("oauth_initiate", json!({"provider":"claudecode"}))["code"], "FORBIDDEN");
    // on the host: llxprt-cred login claudecode
    let mut cmd = dir.cred(None);
    for (k, v) in env_for(&fake) {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(["--store", "file", "login", "claudecode"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = first_url(&mut lines);
    let (_, _, pasted) = browser_get(&url).unwrap();
    plant(pasted.split('#').next().unwrap(), Exposure::Never);
    writeln!(child.stdin.take().unwrap(), "{pasted}").unwrap();
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(child.wait().unwrap().success(), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("Logged in: claudecode:default")), "{rest:?}");
    assert!(dir.stored_token("claudecode", None).is_some());
    assert_no_canary(&d, &[]);
}

#[test]
fn a_claudecode_profile_scopes_its_buckets() {
    let dir = TestDir::new("cc-profile");
    dir.import_token("claudecode:work", &token(3600.0, PLANTED));
    dir.import_token("claudecode:home", &token(3600.0, PLANTED));
    let profiles = dir.root.join("config/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("max.json"),
        json!({"version":1,"provider":"claudecode","model":"claude-opus-4","modelParams":{},"ephemeralSettings":{},
            "auth":{"type":"oauth","buckets":["work"]}})
        .to_string(),
    )
    .unwrap();
    let d = dir.daemon(&["--profile", "max"]);
    let mut c = d.connect();
    c.handshake();
    assert_eq!(c.request("get_token", json!({"provider":"claudecode","bucket":"work"}))["ok"], true);
    assert_eq!(
        c.request("get_token", json!({"provider":"claudecode","bucket":"home"}))["code"],
        "UNAUTHORIZED"
    );
    assert_eq!(
        c.request("list_buckets", json!({"provider":"claudecode"}))["data"],
        json!({"buckets":["work"]})
    );
    let out = dir.run(None, &["--store", "file", "doctor", "--profile", "max"], "");
    assert!(stdout(&out).contains("profile max: oauth [claudecode:work] keys []"), "{}", stdout(&out));
}

#[test]
fn doctor_says_when_only_a_legacy_anthropic_login_is_stored() {
    let dir = TestDir::new("cc-doctor");
    dir.import_token("anthropic", &token(3600.0, PLANTED));
    let out = dir.run(None, &["--store", "file", "doctor"], "");
    let text = stdout(&out);
    assert!(text.contains("anthropic:default") && text.contains("llxprt-cred login claudecode"), "{text}");
    assert!(!text.contains("CANARY"));
    // once a claudecode login exists, nothing to say
    dir.import_token("claudecode", &token(3600.0, PLANTED));
    let text = stdout(&dir.run(None, &["--store", "file", "doctor"], ""));
    assert!(!text.contains("llxprt-cred login claudecode"), "{text}");
}

#[test]
fn tokens_llxprt_code_saved_in_the_keyring_are_refreshed_and_written_back_as_it_reads_them() {
    let Some((dir, kr)) = keyring_test("cc-keyring") else { return };
    let fake = FakeProvider::start();
    // the item llxprt-code's keyring library writes: service llxprt-code-oauth, account claudecode:default
    let out = kr.secret_tool(
        &[
            "store",
            "--label=llxprt-code-oauth",
            "service",
            "llxprt-code-oauth",
            "username",
            "claudecode:default",
        ],
        Some(&token(-10.0, PLANTED)),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut env = env_for(&fake);
    env.push(("DBUS_SESSION_BUS_ADDRESS".into(), kr.address.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = dir.daemon_with_env(&["--store", "keyring", "--allow", "claudecode"], &env);
    let mut c = d.connect();
    c.handshake();
    let r = c.request("get_token", json!({"provider":"claudecode"}));
    assert_eq!(r["data"]["access_token"], "at-refreshed-1", "{r}");
    let out =
        kr.secret_tool(&["lookup", "service", "llxprt-code-oauth", "username", "claudecode:default"], None);
    let back: Value = serde_json::from_slice(&out.stdout).expect("the item is JSON llxprt-code can parse");
    assert_eq!(back["access_token"], "at-refreshed-1");
    assert_eq!(back["refresh_token"], "rt-CANARY-rotated-1");
    assert_eq!(back["token_type"], "Bearer");
    assert!(back["expiry"].as_f64().unwrap() > now() + 3000.0, "expiry in Unix seconds");
    assert_no_canary(&d, &[r]);
}
