//! Host-side refresh through the real daemon against a real HTTP token
//! endpoint on 127.0.0.1 ([`FakeProvider`]): on read, on request and
//! proactively; once per token across processes; retries, revocation,
//! timeouts, the cooldown; and the canary: no refresh token (planted or
//! rotated, all marked `CANARY`) in any answer or log line.
//!
//! Every daemon here runs with `ALL_PROXY` pointing at a dead port, so the
//! tests also show that loopback endpoints bypass the proxy.

use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_provider::{FakeProvider, Reply};
use crate::harness::*;
use crate::host_store::*;
use crate::needs::*;
use llxprt_credd::store::TokenStore;
use llxprt_credd::token::OAuthToken;

const PLANTED: &str = "rt-CANARY-planted";

fn token(expires_in: f64, extra: Value) -> String {
    let mut t = oauth_token("at-planted", PLANTED, expires_in);
    t["scope"] = "user:inference".into();
    for (k, v) in extra.as_object().unwrap() {
        t[k] = v.clone();
    }
    t.to_string()
}

/// Waits until the stored access token is `access` (a renewal saves it
/// just after the provider answered); the stored token then.
fn wait_stored(dir: &TestDir, provider: &str, access: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let s = dir.stored_token(provider, None).expect("a stored token");
        if s["access_token"] == access || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A daemon whose providers point at `fake`, with the time scale `scale`.
fn daemon(dir: &TestDir, fake: &FakeProvider, scale: &str, extra_env: &[(&str, &str)]) -> Daemon {
    let url = fake.token_url();
    let mut env = vec![
        ("LLXPRT_CREDD_ANTHROPIC_TOKEN_URL", url.as_str()),
        ("LLXPRT_CREDD_CODEX_TOKEN_URL", url.as_str()),
        ("LLXPRT_CREDD_TIME_SCALE", scale),
        ("ALL_PROXY", "http://127.0.0.1:9"),
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
        ("HTTP_PROXY", "http://127.0.0.1:9"),
    ];
    env.extend_from_slice(extra_env);
    dir.daemon_with_env(
        &["--permit", "refresh,write", "--allow", "anthropic", "--allow", "codex", "--allow", "acme"],
        &env,
    )
}

/// A handshaken connection that keeps every answer for the canary check.
struct Client {
    raw: Raw,
    seen: Vec<Value>,
}

impl Client {
    fn new(d: &Daemon) -> Client {
        let mut raw = d.connect();
        raw.handshake();
        Client { raw, seen: vec![] }
    }

    fn ask(&mut self, op: &str, payload: Value) -> Value {
        let r = self.raw.request(op, payload);
        self.seen.push(r.clone());
        r
    }

    fn get(&mut self, provider: &str) -> Value {
        self.ask("get_token", json!({ "provider": provider }))
    }
}

/// The canary: no refresh token in any answer or in the debug-level log.
fn assert_no_canary(d: &Daemon, answers: &[Value]) {
    for a in answers {
        let text = a.to_string();
        assert!(!text.contains("CANARY") && !text.contains("refresh_token"), "an answer leaked: {text}");
    }
    let log = d.log_text();
    assert!(log.contains("debug:"), "the log is at debug level");
    assert!(!log.contains("CANARY"), "the log leaked a refresh token:\n{log}");
}

#[test]
fn an_expired_token_is_refreshed_on_get_token() {
    let dir = TestDir::new("rf-read");
    let fake = FakeProvider::start();
    dir.import_token("anthropic", &token(-10.0, json!({"resource_url":"https://r","custom":{"k":1}})));
    let d = daemon(&dir, &fake, "0.01", &[]);
    let mut c = Client::new(&d);
    let t = c.get("anthropic");
    assert_eq!(t["ok"], true, "{t}");
    assert_eq!(t["data"]["access_token"], "at-refreshed-1");
    assert!(t["data"]["expiry"].as_f64().unwrap() > now() + 3500.0);
    assert_eq!(
        (t["data"]["resource_url"].clone(), t["data"]["custom"]["k"].clone()),
        (json!("https://r"), json!(1))
    );
    // llxprt-code's Anthropic refresh: a form POST with the planted refresh token and the client id
    let calls = fake.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/oauth/token");
    assert_eq!(calls[0].content_type, "application/x-www-form-urlencoded");
    assert_eq!(calls[0].field("grant_type").as_deref(), Some("refresh_token"));
    assert_eq!(calls[0].field("refresh_token").as_deref(), Some(PLANTED));
    assert_eq!(calls[0].field("client_id").as_deref(), Some("9d1c250a-e61b-44d9-88ed-5944d1962f5e"));
    // a fresh token is served as stored
    assert_eq!(c.get("anthropic")["data"]["access_token"], "at-refreshed-1");
    assert_eq!(fake.count(), 1);
    assert_no_canary(&d, &c.seen);
}

#[test]
fn rotation_is_stored_on_the_host_and_never_returned() {
    let dir = TestDir::new("rf-rotate");
    let fake = FakeProvider::start();
    dir.import_token("anthropic", &token(-10.0, json!({})));
    let d = daemon(&dir, &fake, "0.01", &[]);
    let mut c = Client::new(&d);
    assert_eq!(
        c.ask("refresh_token", json!({"provider":"anthropic"}))["data"]["access_token"],
        "at-refreshed-1"
    );
    let s = dir.stored_token("anthropic", None).expect("a stored token");
    assert_eq!(
        (s["access_token"].as_str(), s["refresh_token"].as_str()),
        (Some("at-refreshed-1"), Some("rt-CANARY-rotated-1"))
    );
    // expire it again; the next refresh must present the rotated refresh token
    let expire = |dir: &TestDir| {
        let h = dir.host_store();
        let mut m = h.tokens.get_token("anthropic", None).unwrap().unwrap().fields().clone();
        m["expiry"] = json!((now() - 5.0).floor());
        h.tokens.save_token("anthropic", None, &OAuthToken::from_map(m).unwrap()).unwrap();
    };
    expire(&dir);
    std::thread::sleep(Duration::from_millis(400)); // past the (scaled) cooldown
    assert_eq!(c.get("anthropic")["data"]["access_token"], "at-refreshed-2");
    assert_eq!(fake.calls()[1].field("refresh_token").as_deref(), Some("rt-CANARY-rotated-1"));
    // an answer without a refresh token keeps the stored one
    fake.script([Reply::Token { expires_in: 3600, rotate: false, id_token: None }]);
    expire(&dir);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(c.get("anthropic")["data"]["access_token"], "at-refreshed-3");
    assert_eq!(
        dir.stored_token("anthropic", None).expect("a stored token")["refresh_token"],
        "rt-CANARY-rotated-2"
    );
    assert_no_canary(&d, &c.seen);
}

#[test]
fn one_upstream_refresh_for_64_connections_over_4_daemons() {
    let dir = TestDir::new("rf-storm");
    let fake = FakeProvider::start();
    fake.set_delay(Duration::from_millis(300));
    dir.import_token("anthropic", &token(-10.0, json!({})));
    let daemons: Vec<Daemon> = (0..4).map(|_| daemon(&dir, &fake, "0.01", &[])).collect();
    let barrier = Arc::new(Barrier::new(64));
    let threads: Vec<_> = (0..64)
        .map(|i| {
            let mut c = Client::new(&daemons[i % 4]);
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                c.get("anthropic");
                c.seen
            })
        })
        .collect();
    let mut answers = vec![];
    for t in threads {
        answers.extend(t.join().unwrap());
    }
    assert_eq!(answers.len(), 64);
    for a in &answers {
        assert_eq!(a["data"]["access_token"], "at-refreshed-1", "{a}");
    }
    assert_eq!(fake.count(), 1, "exactly one call to the provider");
    assert_eq!(
        dir.stored_token("anthropic", None).expect("a stored token")["refresh_token"],
        "rt-CANARY-rotated-1"
    );
    let left: Vec<_> =
        std::fs::read_dir(dir.log().join("oauth/locks")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "every lock released: {left:?}");
    for d in &daemons {
        assert_no_canary(d, &answers);
    }
}

#[test]
fn a_refresh_lock_held_by_llxprt_code_is_honoured() {
    let dir = TestDir::new("rf-lock");
    let fake = FakeProvider::start();
    dir.import_token("anthropic", &token(-10.0, json!({})));
    let d = daemon(&dir, &fake, "0.01", &[]);
    // llxprt-code (a live process) holds the refresh lock while it refreshes
    let locks = dir.log().join("oauth/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = locks.join("anthropic-refresh.lock");
    let mut holder = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(&lock, llxprt_lock_record(holder.id())).unwrap();
    let mut c = Client::new(&d);
    let asking = std::thread::spawn(move || {
        let r = c.get("anthropic");
        (r, c.seen)
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!asking.is_finished(), "the daemon waits for the live holder");
    assert_eq!(fake.count(), 0);
    // llxprt-code stores its refreshed token and releases the lock
    let refreshed =
        token(3600.0, json!({"access_token":"at-from-llxprt-code","refresh_token":"rt-CANARY-cli"}));
    dir.host_store()
        .tokens
        .save_token("anthropic", None, &OAuthToken::from_json(&refreshed).unwrap())
        .unwrap();
    std::fs::remove_file(&lock).unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    let (r, seen) = asking.join().unwrap();
    assert_eq!(r["data"]["access_token"], "at-from-llxprt-code", "{r}");
    assert_eq!(fake.count(), 0, "the daemon used the token llxprt-code stored");
    assert_eq!(
        dir.stored_token("anthropic", None).expect("a stored token")["refresh_token"],
        "rt-CANARY-cli"
    );
    assert_no_canary(&d, &seen);
}

#[test]
fn transient_failures_are_retried_after_1_s_and_3_s() {
    let dir = TestDir::new("rf-500");
    let fake = FakeProvider::start();
    fake.script([Reply::status(500), Reply::status(503), Reply::token()]);
    dir.import_token("anthropic", &token(-10.0, json!({})));
    // scale 0.1: the retries come after 100 ms and 300 ms
    let d = daemon(&dir, &fake, "0.1", &[]);
    let mut c = Client::new(&d);
    let t = c.get("anthropic");
    assert_eq!(t["data"]["access_token"], "at-refreshed-3", "{t}");
    let calls = fake.calls();
    assert_eq!(calls.len(), 3);
    let gaps = [calls[1].at - calls[0].at, calls[2].at - calls[1].at];
    assert!(gaps[0] >= Duration::from_millis(95) && gaps[0] < Duration::from_millis(290), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(295), "{gaps:?}");
    assert_eq!(calls[2].field("refresh_token").as_deref(), Some(PLANTED), "every try sends the same token");
    assert_no_canary(&d, &c.seen);
}

#[test]
fn invalid_grant_means_reauth_and_clears_the_stored_refresh_token() {
    let dir = TestDir::new("rf-revoked");
    let fake = FakeProvider::start();
    fake.script([Reply::invalid_grant()]);
    dir.import_token("anthropic", &token(-10.0, json!({})));
    let d = daemon(&dir, &fake, "0.01", &[]);
    let mut c = Client::new(&d);
    let r = c.get("anthropic");
    assert_eq!((r["ok"].clone(), r["code"].clone()), (json!(false), json!("REAUTH_REQUIRED")), "{r}");
    assert_eq!(r["error"], "The provider revoked the refresh token; log in again on the host", "fixed text");
    assert!(d.log_text().contains("invalid_grant"), "the provider's code is in the host log");
    assert_eq!(fake.count(), 1, "never retried");
    let s = dir.stored_token("anthropic", None).expect("a stored token");
    assert!(s.get("refresh_token").is_none(), "cleared: {s}");
    assert_eq!(s["access_token"], "at-planted", "the rest is kept");
    // nothing left to refresh: the op says so without calling the provider
    std::thread::sleep(Duration::from_millis(400));
    let r = c.ask("refresh_token", json!({"provider":"anthropic"}));
    assert_eq!(r["code"], "REAUTH_REQUIRED", "{r}");
    assert_eq!(fake.count(), 1);
    assert_no_canary(&d, &c.seen);
}

#[test]
fn other_4xx_and_garbage_are_not_retried_and_keep_the_refresh_token() {
    let dir = TestDir::new("rf-4xx");
    let fake = FakeProvider::start();
    fake.script([
        Reply::Status(401, r#"{"error":"invalid_client","error_description":"rt-CANARY-x"}"#.into()),
        Reply::Garbage,
    ]);
    dir.import_token("anthropic", &token(-10.0, json!({})));
    dir.import_token("codex", &token(-10.0, json!({"account_id":"acc"})));
    let d = daemon(&dir, &fake, "0.01", &[]);
    let mut c = Client::new(&d);
    let r = c.get("anthropic");
    assert_eq!(r["code"], "INTERNAL_ERROR", "{r}");
    assert_eq!(r["error"], "Token refresh failed: the provider refused the request");
    assert!(d.log_text().contains("HTTP 401, invalid_client (1 call)"), "details on the host");
    assert_eq!(fake.count(), 1);
    let r = c.get("codex");
    assert_eq!(r["code"], "INTERNAL_ERROR", "{r}");
    assert_eq!(r["error"], "Token refresh failed: the provider's answer is unusable");
    assert!(d.log_text().contains("the provider's answer is not a JSON object (1 call)"));
    assert_eq!(fake.count(), 2);
    for p in ["anthropic", "codex"] {
        assert_eq!(
            dir.stored_token(p, None).expect("a stored token")["refresh_token"],
            PLANTED,
            "{p} keeps its refresh token"
        );
    }
    assert_no_canary(&d, &c.seen);
}

#[test]
fn a_hanging_provider_times_out_with_a_clean_error() {
    let dir = TestDir::new("rf-hang");
    let fake = FakeProvider::start();
    fake.script([Reply::Hang, Reply::Hang, Reply::Hang]);
    dir.import_token("anthropic", &token(-10.0, json!({})));
    let d = daemon(&dir, &fake, "0.01", &[("LLXPRT_CREDD_HTTP_TIMEOUT_MS", "400")]);
    let mut c = Client::new(&d);
    let started = Instant::now();
    let asking = std::thread::spawn(move || (c.get("anthropic"), c.seen));
    // the daemon keeps serving other connections meanwhile
    std::thread::sleep(Duration::from_millis(150));
    let mut other = Client::new(&d);
    let t = Instant::now();
    assert_eq!(other.ask("list_providers", json!({}))["data"], json!({"providers":["anthropic"]}));
    assert!(t.elapsed() < Duration::from_millis(300), "not blocked by the refresh");
    let (r, mut seen) = asking.join().unwrap();
    let took = started.elapsed();
    assert_eq!(r["code"], "INTERNAL_ERROR", "{r}");
    assert_eq!(r["error"], "Token refresh failed: the provider did not answer in time or is unavailable");
    assert!(d.log_text().contains("no answer in time (3 calls)"));
    assert_eq!(fake.count(), 3, "a timeout is transient: retried twice");
    assert!(took >= Duration::from_millis(1100) && took < Duration::from_secs(4), "{took:?}");
    assert_eq!(dir.stored_token("anthropic", None).expect("a stored token")["refresh_token"], PLANTED);
    seen.extend(other.seen);
    assert_no_canary(&d, &seen);
}

#[test]
fn the_cooldown_allows_one_provider_call_per_30_s() {
    let dir = TestDir::new("rf-cooldown");
    let fake = FakeProvider::start();
    fake.script([Reply::status(500), Reply::status(500), Reply::status(500)]);
    dir.import_token("anthropic", &token(-10.0, json!({})));
    // scale 0.1: the cooldown is 3 s, the retries 100 and 300 ms
    let d = daemon(&dir, &fake, "0.1", &[]);
    let mut c = Client::new(&d);
    let r = c.get("anthropic");
    assert_eq!(
        (r["code"].clone(), r["error"].clone()),
        (
            json!("INTERNAL_ERROR"),
            json!("Token refresh failed: the provider did not answer in time or is unavailable")
        )
    );
    assert!(d.log_text().contains("HTTP 500 (3 calls)"));
    let failed_at = Instant::now();
    // expired and cooling down: RATE_LIMITED with retryAfter, for reads and for the op
    for op in ["get_token", "refresh_token"] {
        let r = c.ask(op, json!({"provider":"anthropic"}));
        assert_eq!(r["code"], "RATE_LIMITED", "{r}");
        let retry = r["retryAfter"].as_u64().unwrap();
        assert!((1..=3).contains(&retry), "{r}");
    }
    assert_eq!(fake.count(), 3);
    std::thread::sleep(Duration::from_millis(3100).saturating_sub(failed_at.elapsed()));
    let r = c.get("anthropic");
    assert_eq!(r["data"]["access_token"], "at-refreshed-4", "after the cooldown: {r}");
    // valid and cooling down: the current token, no call
    let r = c.ask("refresh_token", json!({"provider":"anthropic"}));
    assert_eq!(r["data"]["access_token"], "at-refreshed-4", "{r}");
    assert_eq!(fake.count(), 4);
    assert_no_canary(&d, &c.seen);
}

#[test]
fn proactive_renewal_fires_at_the_formula_time_and_re_arms() {
    let dir = TestDir::new("rf-proactive");
    let fake = FakeProvider::start();
    dir.import_token("anthropic", &token(3600.0, json!({})));
    // scale 0.001: an hour-long token is renewed 3600 - 360 - jitter(0..30) = 3210..3240 s
    // (scaled: 3.21..3.24 s) after it is served, and the renewed one (3600 s) as long after that
    let d = daemon(&dir, &fake, "0.001", &[]);
    let mut c = Client::new(&d);
    let served = Instant::now();
    assert_eq!(c.get("anthropic")["data"]["access_token"], "at-planted");
    std::thread::sleep(Duration::from_millis(2900));
    assert_eq!(fake.count(), 0, "not before the formula time");
    assert!(fake.wait_for(1, Duration::from_secs(4)), "renewed");
    let first = fake.calls()[0].at - served;
    assert!(first >= Duration::from_millis(3150) && first < Duration::from_millis(4500), "{first:?}");
    assert!(fake.wait_for(2, Duration::from_secs(6)), "re-armed from the new expiry");
    let second = fake.calls()[1].at - fake.calls()[0].at;
    assert!(second >= Duration::from_millis(3150) && second < Duration::from_millis(4500), "{second:?}");
    assert_eq!(fake.calls()[1].field("refresh_token").as_deref(), Some("rt-CANARY-rotated-1"));
    wait_stored(&dir, "anthropic", "at-refreshed-2");
    assert_eq!(c.get("anthropic")["data"]["access_token"], "at-refreshed-2");
    // SIGTERM cancels the timers: a prompt, clean exit
    let mut d = d;
    let stopping = Instant::now();
    assert!(d.terminate().success());
    assert!(stopping.elapsed() < Duration::from_secs(3), "{:?}", stopping.elapsed());
    assert_no_canary(&d, &c.seen);
}

/// A daemon stopped (SIGSTOP) across its renewal time renews as soon as it
/// runs again. This is not a suspend: the monotonic clock runs on while a
/// process is stopped, so a scheduler that kept time by it alone would pass
/// too; the suspend itself is the next test.
#[test]
fn proactive_renewal_catches_up_when_a_stopped_daemon_resumes_past_its_time() {
    let dir = TestDir::new("rf-stopped");
    let fake = FakeProvider::start();
    dir.import_token("anthropic", &token(3600.0, json!({})));
    let d = daemon(&dir, &fake, "0.001", &[]);
    let mut c = Client::new(&d);
    c.get("anthropic");
    // freeze the daemon across its renewal time (about 3.2 s from now)
    let pid = d.child.id().to_string();
    std::thread::sleep(Duration::from_millis(500));
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(5000));
    assert_eq!(fake.count(), 0);
    let resumed = Instant::now();
    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    assert!(fake.wait_for(1, Duration::from_secs(3)), "renewed after the resume");
    let late = fake.calls()[0].at - resumed;
    assert!(late < Duration::from_millis(1000), "promptly: {late:?}");
    assert_eq!(fake.count(), 1);
    assert_eq!(wait_stored(&dir, "anthropic", "at-refreshed-1")["access_token"], "at-refreshed-1");
    assert_no_canary(&d, &c.seen);
}

/// Over a suspend the wall clock moves on and the monotonic clock does not;
/// the renewal timers are kept by the wall clock, checked at least every
/// nap, so a renewal that came due while the machine slept happens just
/// after the resume. libfaketime jumps the daemon's wall clock (alone)
/// past the renewal time as a resume does: a scheduler that waited on the
/// monotonic clock would renew about 32 s later, and one that slept to
/// the fire time without a nap, likewise.
#[test]
fn proactive_renewal_fires_at_once_when_the_wall_clock_jumps_past_it_as_after_a_suspend() {
    let dir = TestDir::new("rf-suspend");
    let Some(clock) = FakeWallClock::new(&dir) else { return };
    let fake = FakeProvider::start();
    dir.import_token("anthropic", &token(3600.0, json!({})));
    // scale 0.01: renewal (3600 - 360 - jitter(0..30)) * 0.01 = 32.1..32.4 s after the token
    // is served, by the daemon's wall clock, which it checks every 30 s * 0.01 = 0.3 s
    let d = daemon(&dir, &fake, "0.01", &clock.env());
    let mut c = Client::new(&d);
    assert_eq!(c.get("anthropic")["data"]["access_token"], "at-planted");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(fake.count(), 0, "not due for another 31 s");
    // the machine sleeps for 55 minutes: the token has 5 minutes left, its renewal is overdue
    let resumed = Instant::now();
    clock.set("+3300");
    assert!(fake.wait_for(1, Duration::from_secs(10)), "renewed after the resume");
    let late = fake.calls()[0].at - resumed;
    assert!(late < Duration::from_secs(3), "renewed {late:?} after the resume, not at once");
    assert_eq!(fake.calls()[0].field("refresh_token").as_deref(), Some(PLANTED));
    assert_eq!(wait_stored(&dir, "anthropic", "at-refreshed-1")["access_token"], "at-refreshed-1");
    assert_eq!(fake.count(), 1);
    assert_no_canary(&d, &c.seen);
}

#[test]
fn a_failed_proactive_renewal_backs_off_and_tries_again() {
    let dir = TestDir::new("rf-backoff");
    let fake = FakeProvider::start();
    // the first renewal fails three times (its own retries), the next one works
    fake.script([Reply::status(502), Reply::status(502), Reply::status(502)]);
    dir.import_token("codex", &token(400.0, json!({"account_id":"acc"})));
    // scale 0.01: renewal (400 - 300 - jitter) * 0.01 = 0.7..1.0 s after serving, backoff 0.3 s
    let d = daemon(&dir, &fake, "0.01", &[]);
    let mut c = Client::new(&d);
    c.get("codex");
    assert!(fake.wait_for(4, Duration::from_secs(5)), "retried after the failure");
    let calls = fake.calls();
    let gap = calls[3].at - calls[2].at;
    assert!(gap >= Duration::from_millis(290), "backed off: {gap:?}");
    let s = wait_stored(&dir, "codex", "at-refreshed-4");
    assert_eq!((s["access_token"].as_str(), s["account_id"].as_str()), (Some("at-refreshed-4"), Some("acc")));
    assert_no_canary(&d, &c.seen);
}

#[test]
fn codex_takes_account_id_from_the_id_token_and_keeps_it_otherwise() {
    let dir = TestDir::new("rf-codex");
    let fake = FakeProvider::start();
    let id_token = jwt(json!({"https://api.openai.com/auth":{"chatgpt_account_id":"acc-new"}}));
    fake.script([
        Reply::Token { expires_in: 0, rotate: true, id_token: Some(id_token.clone()) },
        Reply::Token { expires_in: 864000, rotate: false, id_token: None },
    ]);
    dir.import_token("codex", &token(-10.0, json!({"account_id":"acc-old"})));
    dir.import_token("codex:work", &token(-10.0, json!({"account_id":"acc-work"})));
    let d = daemon(&dir, &fake, "0.01", &[]);
    let mut c = Client::new(&d);
    let t = c.get("codex");
    assert_eq!(
        (t["data"]["account_id"].clone(), t["data"]["id_token"].clone()),
        (json!("acc-new"), json!(id_token))
    );
    let lifetime = t["data"]["expiry"].as_f64().unwrap() - now();
    assert!((3590.0..3610.0).contains(&lifetime), "expires_in 0 means an hour: {lifetime}");
    assert_eq!(fake.calls()[0].field("client_id").as_deref(), Some("app_EMoamEEZ73f0CkXaXp7hrann"));
    let w = c.ask("get_token", json!({"provider":"codex","bucket":"work"}));
    assert_eq!(w["data"]["account_id"], "acc-work", "no id_token: the stored account_id stays");
    assert_eq!(dir.stored_token("codex", Some("work")).expect("a stored token")["refresh_token"], PLANTED);
    assert_no_canary(&d, &c.seen);
}

#[test]
fn a_provider_defined_only_in_the_providers_file_refreshes_by_rfc_6749() {
    let dir = TestDir::new("rf-config");
    let fake = FakeProvider::start();
    let file = json!({"providers":{
        "acme":{"token_url": fake.token_url(), "client_id":"acme-cli","client_secret":"acme-secret","encoding":"json"},
        "anthropic":{"client_id":"enterprise-client"}}});
    let named = dir.root.join("host-providers.json");
    std::fs::write(&named, file.to_string()).unwrap();
    dir.import_token("acme", &token(-10.0, json!({})));
    dir.import_token("anthropic", &token(-10.0, json!({})));
    let d = daemon(&dir, &fake, "0.01", &[("LLXPRT_CREDD_PROVIDERS_FILE", named.to_str().unwrap())]);
    let mut c = Client::new(&d);
    assert_eq!(c.get("acme")["data"]["access_token"], "at-refreshed-1");
    let call = &fake.calls()[0];
    assert_eq!(call.content_type, "application/json");
    let fields: Vec<Option<String>> =
        ["grant_type", "refresh_token", "client_id", "client_secret"].iter().map(|f| call.field(f)).collect();
    assert_eq!(
        fields,
        [
            Some("refresh_token".into()),
            Some(PLANTED.into()),
            Some("acme-cli".into()),
            Some("acme-secret".into())
        ]
    );
    // the file overrides one field of a built-in provider; the env var still sets its URL
    assert_eq!(c.get("anthropic")["data"]["access_token"], "at-refreshed-2");
    assert_eq!(fake.calls()[1].field("client_id").as_deref(), Some("enterprise-client"));
    assert_no_canary(&d, &c.seen);
}

#[test]
fn a_bad_providers_file_stops_the_daemon_with_its_name() {
    let dir = TestDir::new("rf-badfile");
    let named = dir.root.join("credd-providers.json");
    std::fs::write(&named, r#"{"providers":{"acme":{"token_url":"http://idp.example/t","client_id":"c"}}}"#)
        .unwrap();
    let out = dir.credd_start_failing(&["--allow", "acme", "--providers-file", named.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("credd-providers.json") && err.contains("https://"), "{err}");
    // a named file that is missing stops it too (exit 1: the environment)
    let out = dir.credd_start_failing(&["--allow", "acme", "--providers-file", "/nonexistent/p.json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read the providers file /nonexistent/p.json")
    );
}

#[test]
fn canary_every_path_with_a_planted_refresh_token() {
    let dir = TestDir::new("rf-canary");
    let fake = FakeProvider::start();
    fake.script([Reply::status(500), Reply::token(), Reply::invalid_grant()]);
    dir.import_token("anthropic", &token(-10.0, json!({})));
    dir.import_token("anthropic:work", &token(3600.0, json!({})));
    dir.import_token("codex", &token(-10.0, json!({"account_id":"a"})));
    let d = daemon(&dir, &fake, "0.01", &[]);
    let mut c = Client::new(&d);
    c.get("anthropic");
    c.ask("get_token", json!({"provider":"anthropic","bucket":"work"}));
    c.ask("refresh_token", json!({"provider":"anthropic","bucket":"work"}));
    c.get("codex");
    c.ask("refresh_token", json!({"provider":"codex"}));
    c.ask(
        "save_token",
        json!({"provider":"anthropic","token":{"access_token":"x","expiry":(now() + 3600.0).floor(),"token_type":"Bearer","refresh_token":"rt-CANARY-evil"}}),
    );
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(c.get("anthropic")["data"]["access_token"], "x");
    c.ask("list_providers", json!({}));
    assert_eq!(fake.count(), 3);
    assert_eq!(
        dir.stored_token("anthropic", None).expect("a stored token")["refresh_token"],
        "rt-CANARY-rotated-2",
        "save_token dropped the incoming one"
    );
    assert_no_canary(&d, &c.seen);
}

#[test]
fn a_rotated_away_refresh_token_does_not_stay_in_the_daemons_memory() {
    if !require_root("to read the daemon's memory") {
        return;
    }
    let dir = TestDir::new("rf-wipe");
    let fake = FakeProvider::start();
    let old = format!("rt-CANARY-old-{}", unique("wipe"));
    dir.import_token("anthropic", &token(-10.0, json!({"refresh_token": old})));
    let d = daemon(&dir, &fake, "0.01", &[]);
    let mut c = Client::new(&d);
    assert_eq!(c.get("anthropic")["data"]["access_token"], "at-refreshed-1");
    assert_eq!(
        dir.stored_token("anthropic", None).expect("a stored token")["refresh_token"],
        "rt-CANARY-rotated-1"
    );
    // ordinary traffic afterwards, as a sandbox would make
    for _ in 0..20 {
        assert_eq!(c.get("anthropic")["data"]["access_token"], "at-refreshed-1");
    }
    let held = memory_holding(d.pid(), old.as_bytes());
    assert!(held.is_empty(), "the old refresh token is still in memory at:\n{}", held.join("\n"));
    // the scan does see the daemon's memory: its socket path is there
    let path = d.socket.to_str().unwrap().as_bytes().to_vec();
    assert!(!memory_holding(d.pid(), &path).is_empty(), "the scan reads the daemon's memory");
    assert_no_canary(&d, &c.seen);
}
