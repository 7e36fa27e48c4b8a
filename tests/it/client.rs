//! The client library and `llxprt-cred`'s daemon commands against the real
//! daemon: lazy connect, one connection, error translation, no reconnect
//! after a failure, idle re-handshake, capability tokens. A few fake
//! daemons (plain listeners in the test) provoke what the real one never
//! does: silence, malformed answers, wrong ids.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llxprt_credd::Error;
use llxprt_credd::client::{
    CONNECTION_LOST, ProxyProviderKeyStorage, ProxySocketClient, ProxyTokenStore, SANDBOX_KEY_MANAGEMENT,
    create_key_storage_from, create_token_store_from,
};
use llxprt_credd::store::{KeyStore, TokenStore};

use crate::harness::*;
use crate::host_store::seeded_with;

const TOKEN: &str = r#"{"access_token":"at-live","refresh_token":"rt-PLANTED-CANARY","expiry":1999999999,"token_type":"Bearer","account_id":"acc","id_token":"i.d.t","nested":{"k":[1,2]}}"#;

const SCOPE: &[&str] = &[
    "--permit",
    "write",
    "--allow",
    "anthropic",
    "--allow",
    "codex",
    "--allow-key",
    "OPENAI",
    "--allow-key",
    "MISSING",
    "--rate-limit",
    "0",
];

fn stores(client: ProxySocketClient) -> (ProxyTokenStore, ProxyProviderKeyStorage) {
    let client = Arc::new(client);
    (ProxyTokenStore::new(client.clone()), ProxyProviderKeyStorage::new(client))
}

/// Connection ids the daemon logged a connect for.
fn connections(d: &Daemon) -> Vec<String> {
    d.log_text()
        .lines()
        .filter(|l| l.ends_with(" connected"))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("conn=")).map(str::to_owned))
        .collect()
}

#[track_caller]
fn assert_lost<T: std::fmt::Debug>(r: Result<T, Error>) {
    match r {
        Err(Error::Connection(m)) => assert_eq!(m, CONNECTION_LOST),
        other => panic!("expected the connection-lost error, got {other:?}"),
    }
}

#[test]
fn client_connects_lazily_and_keeps_one_connection_for_many_calls() {
    let dir = seeded_with("client-lazy", TOKEN);
    let socket = dir.socket_path();
    // Constructed before anything listens: construction never connects.
    let (tokens, keys) = stores(ProxySocketClient::new(&socket, None));
    let d = dir.daemon_at(&socket, SCOPE, &[]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(connections(&d).is_empty(), "no connection before the first call: {}", d.log_text());
    for _ in 0..5 {
        assert_eq!(tokens.list_providers().unwrap(), ["anthropic"]);
        assert!(keys.has_key("OPENAI").unwrap());
    }
    assert_eq!(connections(&d).len(), 1, "{}", d.log_text());
    // Several threads share the client; they take turns on the one connection.
    let tokens = Arc::new(tokens);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let t = tokens.clone();
            std::thread::spawn(move || (0..20).all(|_| t.get_token("anthropic", Some("work")).is_ok()))
        })
        .collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap()));
    assert_eq!(connections(&d).len(), 1, "{}", d.log_text());
}

#[test]
fn client_translates_daemon_answers() {
    let dir = seeded_with("client-answers", TOKEN);
    let d = dir.daemon(SCOPE);
    let (tokens, keys) = stores(ProxySocketClient::new(&d.socket, None));
    let t = tokens.get_token("anthropic", None).unwrap().expect("planted token");
    assert_eq!(t.access_token(), "at-live");
    assert_eq!(t.refresh_token(), None, "no refresh_token crosses the socket");
    assert_eq!(t.fields()["account_id"], "acc");
    assert_eq!(t.fields()["nested"]["k"][1], 2, "unknown fields survive");
    assert_eq!(tokens.list_buckets("anthropic").unwrap(), ["default", "work"]);
    // NOT_FOUND: None on reads, success on remove
    assert!(tokens.get_token("codex", None).unwrap().is_none());
    assert!(tokens.get_bucket_stats("codex", None).unwrap().is_none());
    assert!(keys.get_key("MISSING").unwrap().is_none());
    tokens.remove_token("codex", Some("gone")).unwrap();
    let stats = tokens.get_bucket_stats("anthropic", Some("work")).unwrap().expect("stats");
    assert_eq!((stats.bucket.as_str(), stats.request_count), ("work", 0));
    assert_eq!(keys.get_key("OPENAI").unwrap().unwrap().expose(), "sk-PLANTED-KEY");
    assert_eq!(keys.list_keys().unwrap(), ["OPENAI"]);
    assert!(!keys.has_key("MISSING").unwrap());
    // outside the scope: UNAUTHORIZED, whether or not the item exists
    for r in [tokens.get_token("secret-provider", None).map(drop), keys.get_key("HIDDEN").map(drop)] {
        match r {
            Err(Error::Remote { code, .. }) => assert_eq!(code, llxprt_credd::error::ErrorCode::Unauthorized),
            other => panic!("{other:?}"),
        }
    }
    // key management stays on the host
    assert_eq!(keys.save_key("OPENAI", "x").unwrap_err().to_string(), SANDBOX_KEY_MANAGEMENT);
    assert_eq!(keys.delete_key("OPENAI").unwrap_err().to_string(), SANDBOX_KEY_MANAGEMENT);
    // a save through the proxy merges on the host: the stored refresh token survives
    let mut fresh = t.fields().clone();
    fresh.insert("access_token".into(), "at-fresh".into());
    let soon = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    fresh.insert("expiry".into(), soon.into());
    let fresh = llxprt_credd::token::OAuthToken::from_map(fresh).unwrap();
    tokens.save_token("anthropic", None, &fresh).unwrap();
    assert_eq!(tokens.get_token("anthropic", None).unwrap().unwrap().access_token(), "at-fresh");
    assert!(
        ok(dir.run(None, &["--store", "file", "token", "list"], ""))
            .lines()
            .any(|l| l.starts_with("anthropic:default") && l.ends_with("\trefreshable"))
    );
    // still one connection, and every error above left it usable
    assert_eq!(connections(&d).len(), 1);
}

#[test]
fn client_never_reconnects_after_the_daemon_goes_away() {
    let dir = seeded_with("client-sigterm", TOKEN);
    let mut d = dir.daemon(SCOPE);
    let (tokens, keys) = stores(ProxySocketClient::new(&d.socket, None));
    assert!(keys.has_key("OPENAI").unwrap());
    assert!(d.terminate().success());
    assert_lost(tokens.get_token("anthropic", None));
    assert_lost(keys.get_key("OPENAI"));
    // a new daemon on the same path is not silently re-attached
    let again = dir.daemon_at(&d.socket, SCOPE, &[]);
    assert_lost(tokens.list_providers());
    assert_lost(tokens.client().connect());
    assert!(connections(&again).is_empty(), "{}", again.log_text());
}

#[test]
fn client_treats_a_daemon_side_idle_close_as_a_failure() {
    // The daemon's idle timeout (1 s here) is shorter than the client's
    // idle close: the daemon's close is a lost connection, never a reconnect.
    let dir = seeded_with("client-daemon-idle", TOKEN);
    let d = dir.daemon_with_env(SCOPE, &[("LLXPRT_CREDD_IDLE_TIMEOUT_SECS", "1")]);
    let (_, keys) = stores(ProxySocketClient::new(&d.socket, None));
    assert!(keys.has_key("OPENAI").unwrap());
    std::thread::sleep(Duration::from_millis(1600));
    assert_lost(keys.has_key("OPENAI"));
    assert_eq!(connections(&d).len(), 1);
}

#[test]
fn client_idle_close_reconnects_and_handshakes_again() {
    let dir = seeded_with("client-idle", TOKEN);
    let d = dir.daemon(SCOPE);
    let client = ProxySocketClient::new(&d.socket, None).with_idle_close(Duration::from_millis(300));
    let (tokens, keys) = stores(client);
    assert!(keys.has_key("OPENAI").unwrap());
    assert!(keys.has_key("OPENAI").unwrap(), "a quick second call reuses the connection");
    assert_eq!(connections(&d).len(), 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(tokens.get_token("anthropic", None).unwrap().is_some());
    let conns = connections(&d);
    assert_eq!(conns.len(), 2, "{}", d.log_text());
    assert_ne!(conns[0], conns[1]);
    // the first connection ended as a clean close from the client, not an error
    let first_end = format!("{} ", conns[0]);
    let clean_close =
        || d.log_text().lines().any(|l| l.contains(&first_end) && l.ends_with("closed: Closed"));
    let deadline = Instant::now() + Duration::from_secs(3);
    while !clean_close() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(clean_close(), "{}", d.log_text());
    // close() is graceful too; the next call connects afresh
    tokens.client().close();
    assert_eq!(tokens.client().connect().unwrap(), 2);
    assert_eq!(connections(&d).len(), 3);
}

#[test]
fn client_capability_token_right_wrong_and_missing() {
    let dir = seeded_with("client-cap", TOKEN);
    let cap = dir.root.join("cap.env");
    let mut args = SCOPE.to_vec();
    args.extend(["--capability-file", cap.to_str().unwrap()]);
    let d = dir.daemon(&args);
    let socket = d.socket.clone();
    let cap_path = cap.clone();
    let lookup = move |name: &str| match name {
        "LLXPRT_CREDENTIAL_SOCKET" => Some(OsString::from(&socket)),
        "LLXPRT_CAPABILITY_FILE" => Some(OsString::from(&cap_path)),
        _ => None,
    };
    let client = ProxySocketClient::from_lookup(&lookup).unwrap().expect("proxy mode");
    assert_eq!(client.connect().unwrap(), 2);
    let (_, keys) = stores(client);
    assert_eq!(keys.get_key("OPENAI").unwrap().unwrap().expose(), "sk-PLANTED-KEY");
    let wrong = llxprt_credd::secret::SecretString::from("0".repeat(64));
    for token in [None, Some(wrong)] {
        let (tokens, _) = stores(ProxySocketClient::new(&d.socket, token));
        let expected = "Credential proxy authentication failed: Invalid or missing capability token";
        for _ in 0..2 {
            match tokens.list_providers() {
                Err(Error::Connection(m)) => assert_eq!(m, expected),
                other => panic!("{other:?}"),
            }
        }
    }
    // a token of the wrong shape is refused before any connection
    let bad = |name: &str| match name {
        "LLXPRT_CREDENTIAL_SOCKET" => Some(OsString::from("/x.sock")),
        "LLXPRT_CAPABILITY_TOKEN" => Some(OsString::from("ABC")),
        _ => None,
    };
    assert!(matches!(ProxySocketClient::from_lookup(&bad), Err(Error::Usage(_))));
}

#[test]
fn client_factory_picks_the_proxy_when_the_socket_is_named() {
    let dir = seeded_with("client-factory", TOKEN);
    let d = dir.daemon(SCOPE);
    let socket = d.socket.clone();
    let lookup = move |name: &str| (name == "LLXPRT_CREDENTIAL_SOCKET").then(|| OsString::from(&socket));
    let tokens = create_token_store_from(&lookup).unwrap();
    let keys = create_key_storage_from(&lookup).unwrap();
    assert!(connections(&d).is_empty(), "the factory does not connect");
    assert_eq!(tokens.get_token("anthropic", None).unwrap().unwrap().access_token(), "at-live");
    assert_eq!(keys.get_key("OPENAI").unwrap().unwrap().expose(), "sk-PLANTED-KEY");
    assert_eq!(keys.save_key("K", "v").unwrap_err().to_string(), SANDBOX_KEY_MANAGEMENT);
    assert!(d.log_text().contains("op=get_token target=anthropic:default outcome=ok"));
    let empty = |name: &str| (name == "LLXPRT_CREDENTIAL_SOCKET").then(OsString::new);
    assert!(ProxySocketClient::from_lookup(&empty).unwrap().is_none(), "an empty variable is host mode");
}

/// A fake daemon: accepts one connection, answers the handshake, then
/// lets `behave` do what the real daemon never does.
fn fake_daemon(dir: &TestDir, behave: impl FnOnce(&mut UnixStream) + Send + 'static) -> PathBuf {
    std::fs::create_dir_all(dir.root.join("sock")).unwrap();
    let path = dir.socket_path();
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        read_frame(&mut s);
        write_frame(&mut s, br#"{"v":1,"op":"handshake","ok":true,"data":{"version":1}}"#);
        behave(&mut s);
        // hold the connection open until the client gives up
        let _ = s.read(&mut [0u8; 1]);
    });
    path
}

fn read_frame(s: &mut UnixStream) -> serde_json::Value {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
    s.read_exact(&mut body).unwrap();
    serde_json::from_slice(&body).unwrap()
}

fn write_frame(s: &mut UnixStream, body: &[u8]) {
    s.write_all(&frame(body)).unwrap();
}

fn answer_with(body: &'static str) -> impl FnOnce(&mut UnixStream) + Send + 'static {
    move |s| {
        let req = read_frame(s);
        write_frame(s, body.replace("$ID", req["id"].as_str().unwrap()).as_bytes());
    }
}

#[test]
fn client_malformed_or_foreign_answers_kill_the_connection() {
    let dir = TestDir::new("client-malformed");
    type Behaviour = Box<dyn FnOnce(&mut UnixStream) + Send>;
    let cases: Vec<(&str, Behaviour)> = vec![
        ("data null", Box::new(answer_with(r#"{"id":"$ID","ok":true,"data":null}"#))),
        ("data array", Box::new(answer_with(r#"{"id":"$ID","ok":true,"data":[]}"#))),
        ("ok missing", Box::new(answer_with(r#"{"id":"$ID","data":{}}"#))),
        ("not JSON", Box::new(answer_with("{nope"))),
        ("another id", Box::new(answer_with(r#"{"id":"someone-else","ok":true,"data":{}}"#))),
        (
            "oversize",
            Box::new(|s: &mut UnixStream| {
                read_frame(s);
                s.write_all(&[0, 1, 0, 1]).unwrap();
            }),
        ),
        ("closed", Box::new(|s: &mut UnixStream| drop(s.shutdown(std::net::Shutdown::Both)))),
    ];
    for (what, behave) in cases {
        let path = fake_daemon(&dir, behave);
        let (tokens, _) = stores(ProxySocketClient::new(&path, None));
        let r = tokens.list_providers();
        assert!(matches!(&r, Err(Error::Connection(m)) if m == CONNECTION_LOST), "{what}: {r:?}");
        assert_lost(tokens.list_providers());
    }
}

#[test]
fn client_times_out_a_silent_daemon_and_stays_failed() {
    let dir = TestDir::new("client-timeout");
    let path = fake_daemon(&dir, |s| {
        read_frame(s); // and never answer
    });
    let client = ProxySocketClient::new(&path, None).with_request_timeout(Duration::from_millis(400));
    let (tokens, _) = stores(client);
    let started = Instant::now();
    assert_lost(tokens.list_providers());
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(5), "{took:?}");
    assert_lost(tokens.list_providers());
}

#[test]
fn client_handshake_refusals_are_reported_as_the_daemon_said() {
    let dir = TestDir::new("client-refusal");
    std::fs::create_dir_all(dir.root.join("sock")).unwrap();
    let path = dir.socket_path();
    let listener = UnixListener::bind(&path).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let hello = read_frame(&mut s);
        assert_eq!(
            hello,
            serde_json::json!({"v":2,"op":"handshake","payload":{"minVersion":1,"maxVersion":2}})
        );
        let refusal = serde_json::json!({"v":1,"op":"handshake","ok":false,
            "code":"UNKNOWN_VERSION","error":"Unsupported protocol version"});
        write_frame(&mut s, refusal.to_string().as_bytes());
    });
    let client = ProxySocketClient::new(&path, None);
    let e = client.connect().unwrap_err().to_string();
    assert_eq!(e, "Handshake failed [UNKNOWN_VERSION]: Unsupported protocol version");
    assert_eq!(client.connect().unwrap_err().to_string(), e);
}

fn cred_with_socket(dir: &TestDir, socket: &Path, args: &[&str]) -> std::process::Output {
    dir.cred(None).env("LLXPRT_CREDENTIAL_SOCKET", socket).args(args).output().unwrap()
}

#[test]
fn client_commands_status_get_and_get_key() {
    let dir = seeded_with("client-cli", TOKEN);
    let cap = dir.root.join("cap.env");
    let mut args = SCOPE.to_vec();
    args.extend(["--capability-file", cap.to_str().unwrap()]);
    let d = dir.daemon(&args);
    let with_cap = |extra: &[&str]| {
        dir.cred(None)
            .env("LLXPRT_CREDENTIAL_SOCKET", &d.socket)
            .env("LLXPRT_CAPABILITY_FILE", &cap)
            .args(extra)
            .output()
            .unwrap()
    };
    let status = ok(with_cap(&["status"]));
    assert_eq!(
        status,
        format!(
            "socket: {}\nprotocol version: 2\ntokens: anthropic:default anthropic:work\napi keys: OPENAI\n",
            d.socket.display()
        )
    );
    let got = ok(with_cap(&["get", "anthropic:work"]));
    let token: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(
        (token["access_token"].as_str(), token["account_id"].as_str()),
        (Some("at-live"), Some("acc"))
    );
    assert!(got.contains("\n  \"expiry\""), "pretty JSON: {got}");
    assert!(!got.contains("refresh_token") && !got.contains("rt-PLANTED-CANARY"), "{got}");
    assert_eq!(ok(with_cap(&["get-key", "OPENAI"])), "sk-PLANTED-KEY\n");
    // --socket and --capability-file instead of the environment
    let flags = dir
        .cred(None)
        .args(["--socket", d.socket.to_str().unwrap(), "--capability-file", cap.to_str().unwrap()])
        .args(["get-key", "OPENAI"])
        .output()
        .unwrap();
    assert_eq!(ok(flags), "sk-PLANTED-KEY\n");
    // absent: exit 1 with a message
    let missing = with_cap(&["get", "codex"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no token for codex:default"), "{}", stderr(&missing));
    let missing = with_cap(&["get-key", "MISSING"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no API key named MISSING"));
    assert!(stdout(&missing).is_empty());
    // outside the scope: exit 1, the daemon's code shown
    let denied = with_cap(&["get", "secret-provider"]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(stderr(&denied).contains("UNAUTHORIZED"), "{}", stderr(&denied));
    // without the capability token
    let refused = cred_with_socket(&dir, &d.socket, &["status"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("Credential proxy authentication failed"), "{}", stderr(&refused));
    assert!(!d.log_text().contains("sk-PLANTED-KEY"));
}

#[test]
fn client_commands_without_a_daemon_exit_1() {
    let dir = TestDir::new("client-cli-none");
    let nowhere = dir.root.join("sock/none.sock");
    for args in [&["status"][..], &["get", "anthropic"], &["get-key", "OPENAI"]] {
        let o = cred_with_socket(&dir, &nowhere, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = stderr(&o);
        assert!(e.contains("cannot connect to the credential proxy at") && e.contains("none.sock"), "{e}");
    }
    let unnamed = dir.cred(None).arg("status").output().unwrap();
    assert_eq!(unnamed.status.code(), Some(1));
    assert!(
        stderr(&unnamed).contains("set LLXPRT_CREDENTIAL_SOCKET or pass --socket"),
        "{}",
        stderr(&unnamed)
    );
}

/// A daemon whose anthropic token expired and whose provider takes
/// `delay` to refresh it, with a valid codex token beside it.
fn slow_refresh(dir: &TestDir, fake: &crate::fake_provider::FakeProvider) -> Daemon {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expired = serde_json::json!({"access_token":"at-old","refresh_token":"rt-CANARY-slow","expiry":now - 10,"token_type":"Bearer"});
    dir.import_token("anthropic:slow", &expired.to_string());
    let valid = serde_json::json!({"access_token":"at-codex","refresh_token":"rt-CANARY-codex","expiry":now + 3600,"token_type":"Bearer"});
    dir.import_token("codex", &valid.to_string());
    let url = fake.token_url();
    dir.daemon_with_env(
        &["--allow", "anthropic", "--allow", "codex", "--rate-limit", "0"],
        &[("LLXPRT_CREDD_ANTHROPIC_TOKEN_URL", url.as_str()), ("ALL_PROXY", "http://127.0.0.1:9")],
    )
}

#[test]
fn client_sends_concurrent_requests_on_its_one_version_2_connection() {
    let dir = TestDir::new("client-v2");
    let fake = crate::fake_provider::FakeProvider::start();
    fake.set_delay(Duration::from_secs(2));
    let d = slow_refresh(&dir, &fake);
    let client = Arc::new(ProxySocketClient::new(&d.socket, None));
    assert_eq!(client.connect().unwrap(), 2);
    let tokens = ProxyTokenStore::new(client.clone());
    let slow = {
        let tokens = ProxyTokenStore::new(client.clone());
        std::thread::spawn(move || {
            tokens.get_token("anthropic", Some("slow")).map(|t| t.map(|t| t.access_token().to_owned()))
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let asked = Instant::now();
    let fast = tokens.get_token("codex", None).unwrap().unwrap();
    assert_eq!(fast.access_token(), "at-codex");
    assert!(asked.elapsed() < Duration::from_millis(500), "not behind the refresh: {:?}", asked.elapsed());
    assert_eq!(slow.join().unwrap().unwrap().as_deref(), Some("at-refreshed-1"));
    assert_eq!(connections(&d).len(), 1, "one connection for both");
}

#[test]
fn client_cancels_a_timed_out_request_and_keeps_its_connection() {
    let dir = TestDir::new("client-v2-timeout");
    let fake = crate::fake_provider::FakeProvider::start();
    fake.set_delay(Duration::from_secs(3));
    let d = slow_refresh(&dir, &fake);
    let client =
        Arc::new(ProxySocketClient::new(&d.socket, None).with_request_timeout(Duration::from_millis(300)));
    let tokens = ProxyTokenStore::new(client.clone());
    match tokens.get_token("anthropic", Some("slow")) {
        Err(Error::Connection(m)) => assert_eq!(m, "Request timed out after 300ms"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // the daemon was told, and the connection still serves
    assert_eq!(tokens.get_token("codex", None).unwrap().unwrap().access_token(), "at-codex");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !d.log_text().contains("op=cancel") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(d.log_text().contains("op=cancel target="), "{}", d.log_text());
    assert_eq!(connections(&d).len(), 1);
}

#[test]
fn cred_commands_name_what_is_missing_and_refresh_goes_through_the_daemon() {
    let dir = seeded_with("client-cli-usage", TOKEN);
    for (args, says) in [
        (vec!["key"], "key needs a subcommand"),
        (vec!["key", "set"], "key set needs NAME"),
        (vec!["token"], "token needs a subcommand"),
        (vec!["token", "show"], "token show needs PROVIDER[:BUCKET]"),
        (vec!["refresh"], "refresh needs PROVIDER[:BUCKET]"),
        (vec!["get-key"], "get-key needs NAME"),
        // the benchmarks left the shipped binary (cargo bench --bench credd)
        (vec!["bench"], "unknown command: bench (see --help)"),
        (vec!["bench", "store"], "unknown command: bench store (see --help)"),
    ] {
        let out = dir.cred(None).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let help = dir.cred(None).arg("help").output().unwrap();
    assert!(help.status.success() && stdout(&help).starts_with("llxprt-cred - "), "{}", stdout(&help));
    // token rm of a missing token fails like key rm does
    let out = dir.run(None, &["--store", "file", "token", "rm", "nothing-here"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no token for nothing-here:default"), "{}", stderr(&out));
    // refresh through the daemon: refused without --permit refresh
    let d = dir.daemon(&["--allow", "anthropic"]);
    let out = cred_with_socket(&dir, &d.socket, &["refresh", "anthropic"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--permit refresh"), "{}", stderr(&out));
    drop(d);
    // with the permit, an expired token is refreshed on the host and printed
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let stale = serde_json::json!({"access_token":"at-stale","refresh_token":"rt-CANARY-stale","expiry":now - 10,"token_type":"Bearer"});
    dir.import_token("anthropic:stale", &stale.to_string());
    let fake = crate::fake_provider::FakeProvider::start();
    let url = fake.token_url();
    let d = dir.daemon_with_env(
        &["--allow", "anthropic", "--permit", "refresh"],
        &[("LLXPRT_CREDD_ANTHROPIC_TOKEN_URL", url.as_str()), ("ALL_PROXY", "http://127.0.0.1:9")],
    );
    let out = cred_with_socket(&dir, &d.socket, &["refresh", "anthropic:stale"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(shown["access_token"], "at-refreshed-1");
    assert!(shown.get("refresh_token").is_none());
    assert_eq!(fake.count(), 1);
}

#[test]
fn a_stale_socket_is_named_as_stale_with_what_to_do() {
    let dir = seeded_with("client-stale", TOKEN);
    let stale = dir.root.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap()); // the file stays, nothing listens
    let out = cred_with_socket(&dir, &stale, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("a stale socket: no llxprt-credd listens there any more")
            && e.contains("unset LLXPRT_CREDENTIAL_SOCKET"),
        "{e}"
    );
    let out = cred_with_socket(&dir, &dir.root.join("gone.sock"), &["status"]);
    assert!(stderr(&out).contains("no socket there: the daemon has stopped"), "{}", stderr(&out));
}
