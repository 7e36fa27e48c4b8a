//! Protocol version 2 (SPEC §12) on the real daemon: negotiation, 4 MiB
//! frames, concurrent dispatch per connection, the in-flight cap,
//! duplicate ids, `cancel`, no head-of-line blocking behind a slow refresh,
//! and version 1's `RESPONSE_TOO_LARGE`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_provider::FakeProvider;
use crate::harness::*;
use crate::host_store::*;

/// A token record expiring `expires_in` seconds from now.
fn token(access: &str, expires_in: f64) -> String {
    oauth_token(access, "rt-CANARY-v2", expires_in).to_string()
}

/// A daemon whose OAuth providers point at `fake`.
fn daemon(dir: &TestDir, fake: &FakeProvider, extra: &[&str]) -> Daemon {
    let url = fake.token_url();
    let env = [
        ("LLXPRT_CREDD_ANTHROPIC_TOKEN_URL", url.as_str()),
        ("LLXPRT_CREDD_CODEX_TOKEN_URL", url.as_str()),
        ("ALL_PROXY", "http://127.0.0.1:9"),
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
        ("HTTP_PROXY", "http://127.0.0.1:9"),
    ];
    let mut args = vec!["--allow", "anthropic", "--allow", "codex", "--allow-key", "K", "--rate-limit", "0"];
    args.extend_from_slice(extra);
    dir.daemon_with_env(&args, &env)
}

/// Reads answers until every id in `ids` has one (or `within` passes);
/// the answers by id, and when each arrived.
fn collect(c: &mut Raw, ids: &[&str], within: Duration) -> HashMap<String, (Value, Instant)> {
    let deadline = Instant::now() + within;
    let mut got = HashMap::new();
    while ids.iter().any(|id| !got.contains_key(*id)) && Instant::now() < deadline {
        let Some(r) = c.recv() else { break };
        got.insert(r["id"].as_str().unwrap_or_default().to_owned(), (r, Instant::now()));
    }
    got
}

#[test]
fn negotiation_settles_the_highest_common_version() {
    let dir = TestDir::new("v2-nego");
    dir.set_key("K", "sk-PLANTED-v2");
    let d = dir.daemon(&["--allow-key", "K"]);
    for ((min, max), version) in [((1, 1), 1), ((1, 2), 2), ((2, 2), 2), ((2, 3), 2), ((1, 9), 2)] {
        let r = d.connect().handshake_range(None, min, max);
        assert_eq!(
            (r["ok"].clone(), r["data"]["version"].clone(), r["v"].clone()),
            (json!(true), json!(version), json!(version)),
            "{min}..{max}: {r}"
        );
    }
    for (min, max) in [(3, 4), (0, 0), (2, 1)] {
        let r = d.connect().handshake_range(None, min, max);
        assert_eq!(r["code"], "UNKNOWN_VERSION", "{min}..{max}: {r}");
    }
    let mut c = d.connect();
    c.send_frame(br#"{"v":2,"op":"handshake","payload":{"maxVersion":2}}"#).unwrap();
    assert_eq!(c.recv().unwrap()["code"], "UNKNOWN_VERSION", "a missing bound is not guessed");
    // answers on a version-2 connection say so
    let mut c = d.connect();
    c.handshake_v2();
    let r = c.request("has_api_key", json!({"name":"K"}));
    assert_eq!((r["v"].clone(), r["data"]["exists"].clone()), (json!(2), json!(true)), "{r}");
}

#[test]
fn version_2_takes_frames_up_to_4_mib_and_version_1_keeps_64_kib() {
    let dir = TestDir::new("v2-frames");
    dir.set_key("K", "sk-PLANTED-v2");
    let d = dir.daemon(&["--allow-key", "K"]);
    let big = |id: &str, n: usize| {
        json!({"v":2,"id":id,"op":"has_api_key","payload":{"name":"K","pad":"x".repeat(n)}}).to_string()
    };
    let mut c = d.connect();
    c.handshake_v2();
    c.send_frame(big("one-mib", 1 << 20).as_bytes()).unwrap();
    let r = c.recv().unwrap();
    assert_eq!((r["id"].clone(), r["data"]["exists"].clone()), (json!("one-mib"), json!(true)), "{r}");
    // a header announcing more than 4 MiB is refused before anything is read
    c.send_bytes(&(4_194_305u32).to_be_bytes()).unwrap();
    let r = c.recv().unwrap();
    assert_eq!(r["code"], "INVALID_REQUEST", "{r}");
    assert!(c.closed());
    // version 1: 64 KiB
    let mut c = d.connect();
    c.handshake();
    c.send_frame(big("v1", 70_000).as_bytes()).unwrap();
    assert_eq!(c.recv().unwrap()["code"], "INVALID_REQUEST");
    assert!(c.closed());
}

#[test]
fn a_version_1_answer_over_64_kib_is_response_too_large_and_the_connection_stays() {
    let dir = TestDir::new("v2-v1big");
    let fake = FakeProvider::start();
    let mut t: Value = serde_json::from_str(&token("at-big", 3600.0)).unwrap();
    t["scope"] = json!("s".repeat(70_000));
    dir.import_token("codex", &t.to_string());
    dir.import_token("anthropic", &token("at-small", 3600.0));
    let d = daemon(&dir, &fake, &[]);
    let mut c = d.connect();
    c.handshake();
    let r = c.request("get_token", json!({"provider":"codex"}));
    assert_eq!(
        (r["code"].clone(), r["error"].clone()),
        (json!("RESPONSE_TOO_LARGE"), json!("Response exceeds maximum frame size for protocol version 1"))
    );
    assert_eq!(c.request("get_token", json!({"provider":"anthropic"}))["data"]["access_token"], "at-small");
    // the same answer fits version 2
    let mut c = d.connect();
    c.handshake_v2();
    let r = c.request("get_token", json!({"provider":"codex"}));
    assert_eq!(r["data"]["access_token"], "at-big", "{}", r["code"]);
}

#[test]
fn a_valid_token_is_not_held_up_behind_a_slow_refresh_on_the_same_connection() {
    let dir = TestDir::new("v2-hol");
    let fake = FakeProvider::start();
    fake.set_delay(Duration::from_secs(4));
    dir.import_token("anthropic", &token("at-expired", -10.0));
    dir.import_token("codex", &token("at-valid", 3600.0));
    let d = daemon(&dir, &fake, &[]);
    let mut c = d.connect();
    c.handshake_v2();
    c.send_request("slow", "get_token", json!({"provider":"anthropic"}));
    std::thread::sleep(Duration::from_millis(50));
    let asked = Instant::now();
    c.send_request("fast", "get_token", json!({"provider":"codex"}));
    let got = collect(&mut c, &["fast", "slow"], Duration::from_secs(15));
    let (fast, at) = &got["fast"];
    assert_eq!(fast["data"]["access_token"], "at-valid");
    assert!(at.duration_since(asked) < Duration::from_millis(200), "{:?}", at.duration_since(asked));
    let (slow, slow_at) = &got["slow"];
    assert_eq!(slow["data"]["access_token"], "at-refreshed-1", "{slow}");
    assert!(slow_at > at, "answers go out as each finishes");
}

#[test]
fn sixteen_in_flight_a_seventeenth_refused_duplicates_refused_and_cancel_answers_at_once() {
    let dir = TestDir::new("v2-cap");
    let fake = FakeProvider::start();
    fake.set_delay(Duration::from_secs(2));
    dir.import_token("anthropic", &token("at-expired", -10.0));
    let d = daemon(&dir, &fake, &[]);
    let mut c = d.connect();
    c.handshake_v2();
    let ids: Vec<String> = (1..=16).map(|i| format!("t{i}")).collect();
    for id in &ids {
        c.send_request(id, "get_token", json!({"provider":"anthropic"}));
    }
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    c.send_request("t17", "get_token", json!({"provider":"anthropic"}));
    let r = c.recv().unwrap();
    assert_eq!(
        (r["id"].clone(), r["code"].clone(), r["error"].clone()),
        (json!("t17"), json!("RESOURCE_EXHAUSTED"), json!("Too many concurrent requests"))
    );
    c.send_request("t1", "get_token", json!({"provider":"anthropic"}));
    let r = c.recv().unwrap();
    assert_eq!((r["id"].clone(), r["error"].clone()), (json!("t1"), json!("Duplicate request id")), "{r}");
    // cancel is exempt from the cap; it answers, then the target answers CANCELLED
    c.send_request("c1", "cancel", json!({"targetId":"t3"}));
    let r = c.recv().unwrap();
    assert_eq!((r["id"].clone(), r["data"]["cancelled"].clone()), (json!("c1"), json!(true)), "{r}");
    let r = c.recv().unwrap();
    assert_eq!(
        (r["id"].clone(), r["code"].clone(), r["error"].clone()),
        (json!("t3"), json!("CANCELLED"), json!("Operation cancelled"))
    );
    assert!(sent.elapsed() < Duration::from_millis(500), "all of that at once: {:?}", sent.elapsed());
    c.send_request("c2", "cancel", json!({"targetId":"nothing-like-it"}));
    assert_eq!(c.recv().unwrap()["data"]["cancelled"], false);
    // the cancelled id may be used again at once: it gets its own answer
    c.send_request("t3", "get_token", json!({"provider":"anthropic"}));
    // the other fifteen finish with the refreshed token, t3 never answers again
    let got = collect(&mut c, &ids.iter().map(String::as_str).collect::<Vec<_>>(), Duration::from_secs(15));
    for id in &ids {
        assert_eq!(got[id].0["data"]["access_token"], "at-refreshed-1", "{id}");
    }
    assert_eq!(fake.count(), 1, "one refresh for all of them");
    // the connection works on
    assert_eq!(
        c.request("get_token", json!({"provider":"anthropic"}))["data"]["access_token"],
        "at-refreshed-1"
    );
}

#[test]
fn closing_the_connection_cancels_its_requests_and_the_daemon_stays_healthy() {
    let dir = TestDir::new("v2-close");
    let fake = FakeProvider::start();
    fake.set_delay(Duration::from_secs(1));
    dir.import_token("anthropic", &token("at-expired", -10.0));
    let d = daemon(&dir, &fake, &[]);
    let mut c = d.connect();
    c.handshake_v2();
    for i in 0..8 {
        c.send_request(&format!("g{i}"), "get_token", json!({"provider":"anthropic"}));
    }
    std::thread::sleep(Duration::from_millis(100));
    drop(c);
    let mut other = d.connect();
    other.handshake_v2();
    let started = Instant::now();
    let r = other.request("get_token", json!({"provider":"anthropic"}));
    assert_eq!(r["data"]["access_token"], "at-refreshed-1", "{r}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(fake.count(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.log_text().contains("outcome=cancelled") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        d.log_text().contains("op=get_token target=anthropic:default outcome=cancelled"),
        "{}",
        d.log_text()
    );
}

#[test]
fn a_cancelled_save_stops_waiting_for_the_refresh_lock_and_writes_nothing() {
    use llxprt_credd::store::{Backend, HostStore, Paths, TokenStore};
    let dir = TestDir::new("v2-lockwait");
    let fake = FakeProvider::start();
    dir.import_token("codex", &token("at-before", 3600.0));
    let d = daemon(&dir, &fake, &["--permit", "write"]);
    let paths = Paths { data: dir.data(), log: dir.log(), config: dir.root.join("config") };
    let host = HostStore::open_at(paths, Backend::File).unwrap();
    // another process (this test) holds the refresh lock
    let lock = host.tokens.acquire_refresh_lock("codex", None, Duration::from_secs(5)).unwrap();
    let mut c = d.connect();
    c.handshake_v2();
    let new = json!({"access_token":"at-after","expiry":(now() + 600.0).floor(),"token_type":"Bearer"});
    c.send_request("s", "save_token", json!({"provider":"codex","token":new}));
    std::thread::sleep(Duration::from_millis(300));
    c.send_request("c", "cancel", json!({"targetId":"s"}));
    assert_eq!(c.recv().unwrap()["data"]["cancelled"], true);
    assert_eq!(c.recv().unwrap()["code"], "CANCELLED");
    // the save gives up its wait within a slice; the lock comes free later
    std::thread::sleep(Duration::from_millis(600));
    host.tokens.release_refresh_lock(lock).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stored = host.tokens.get_token("codex", None).unwrap().unwrap();
    assert_eq!(stored.access_token(), "at-before", "a cancelled save wrote nothing");
    assert!(
        d.log_text().contains("op=save_token target=codex:default outcome=cancelled"),
        "{}",
        d.log_text()
    );
}
