//! The real daemon on a real socket: every op, every bad input, access
//! control and lifecycle.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::host_store::seeded_with;
use crate::needs::*;

const TOKEN: &str = r#"{"access_token":"at-live","refresh_token":"rt-PLANTED-CANARY","expiry":1999999999,"token_type":"Bearer","account_id":"acc","id_token":"i.d.t","resource_url":"https://r"}"#;

const SCOPE: &[&str] =
    &["--allow", "anthropic", "--allow", "codex:default", "--allow-key", "OPENAI", "--allow-key", "MISSING"];

#[test]
fn every_op_answers_with_object_data_and_no_refresh_token() {
    let dir = seeded_with("ops", TOKEN);
    let d = dir.daemon(&[SCOPE, &["--permit", "refresh,login,write"]].concat());
    let mut c = d.connect();
    let h = c.handshake_with(None);
    assert_eq!(h, json!({"v":1,"op":"handshake","ok":true,"data":{"version":1}}));
    let t = c.request("get_token", json!({"provider":"anthropic"}));
    assert_eq!(t["ok"], true);
    assert_eq!(t["data"]["access_token"], "at-live");
    for kept in ["expiry", "token_type", "account_id", "id_token", "resource_url"] {
        assert!(t["data"].get(kept).is_some(), "{kept} kept: {t}");
    }
    assert!(t["data"].get("refresh_token").is_none());
    assert_eq!(c.request("get_token", json!({"provider":"anthropic","bucket":"work"}))["ok"], true);
    let missing = c.request("get_token", json!({"provider":"codex"}));
    assert_eq!((missing["ok"].clone(), missing["code"].clone()), (json!(false), json!("NOT_FOUND")));
    assert_eq!(c.request("list_providers", json!({}))["data"], json!({"providers":["anthropic"]}));
    assert_eq!(
        c.request("list_buckets", json!({"provider":"anthropic"}))["data"],
        json!({"buckets":["default","work"]})
    );
    assert_eq!(
        c.request("list_buckets", json!({"provider":"secret-provider"}))["data"],
        json!({"buckets":[]})
    );
    assert_eq!(
        c.request("get_bucket_stats", json!({"provider":"anthropic"}))["data"],
        json!({"bucket":"default","requestCount":0,"percentage":0.0})
    );
    assert_eq!(c.request("get_bucket_stats", json!({"provider":"codex"}))["code"], "NOT_FOUND");
    assert_eq!(c.request("get_api_key", json!({"name":"OPENAI"}))["data"], json!({"key":"sk-PLANTED-KEY"}));
    assert_eq!(c.request("get_api_key", json!({"name":"MISSING"}))["code"], "NOT_FOUND");
    assert_eq!(c.request("list_api_keys", json!({}))["data"], json!({"keys":["OPENAI"]}));
    assert_eq!(c.request("has_api_key", json!({"name":"OPENAI"}))["data"], json!({"exists":true}));
    assert_eq!(c.request("has_api_key", json!({"name":"MISSING"}))["data"], json!({"exists":false}));
    assert_eq!(c.request("cancel", json!({"targetId":"x"}))["data"], json!({"cancelled":false}));
    let unknown = c.request("launch_missiles", json!({}));
    assert_eq!(
        (unknown["code"].clone(), unknown["error"].clone()),
        (json!("INVALID_REQUEST"), json!("Unknown operation: launch_missiles"))
    );
    // refresh_token of a token valid for years: the stored token, sanitized, no provider call
    let r = c.request("refresh_token", json!({"provider":"anthropic"}));
    assert_eq!(
        (r["data"]["access_token"].clone(), r["data"].get("refresh_token")),
        (json!("at-live"), None),
        "{r}"
    );
    assert_eq!(c.request("oauth_poll", json!({"session_id":"0123"}))["code"], "SESSION_NOT_FOUND");
    // save changes the access token under the lock and never takes a refresh token from the socket
    let soon =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600) as f64;
    let saved = c.request(
        "save_token",
        json!({"provider":"anthropic","token":{"access_token":"at-new","expiry":soon,"token_type":"Bearer","refresh_token":"EVIL","account_id":""}}),
    );
    assert_eq!(saved["data"], json!({}), "{saved}");
    let t = c.request("get_token", json!({"provider":"anthropic"}));
    assert_eq!(
        (t["data"]["access_token"].clone(), t["data"]["account_id"].clone()),
        (json!("at-new"), json!("acc"))
    );
    assert!(
        ok(dir.run(None, &["--store", "file", "token", "list"], ""))
            .contains("anthropic:default\texpires in")
    );
    let raw = std::fs::read_dir(dir.oauth_dir()).unwrap().count();
    assert_eq!(raw, 3);
    assert_eq!(
        c.request("save_token", json!({"provider":"anthropic","token":{"access_token":1}}))["code"],
        "INVALID_REQUEST"
    );
    assert_eq!(c.request("remove_token", json!({"provider":"anthropic","bucket":"work"}))["data"], json!({}));
    assert_eq!(c.request("get_token", json!({"provider":"anthropic","bucket":"work"}))["code"], "NOT_FOUND");
    let log = d.log_text();
    assert!(log.contains("op=get_token target=anthropic:default outcome=ok"), "audit lines: {log}");
    for secret in ["at-live", "rt-PLANTED-CANARY", "sk-PLANTED-KEY", "EVIL"] {
        assert!(!log.contains(secret), "{secret} leaked into the log");
    }
}

#[test]
fn out_of_scope_existing_and_missing_are_indistinguishable() {
    let dir = seeded_with("scope", TOKEN);
    let d = dir.daemon(&[SCOPE, &["--permit", "write"]].concat());
    let mut c = d.connect();
    c.handshake();
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("id");
        v
    };
    let existing = strip(c.request("get_token", json!({"provider":"secret-provider"})));
    let missing = strip(c.request("get_token", json!({"provider":"nobody"})));
    assert_eq!(existing, missing);
    assert_eq!(existing["code"], "UNAUTHORIZED");
    let existing = strip(c.request("get_api_key", json!({"name":"HIDDEN"})));
    let missing = strip(c.request("get_api_key", json!({"name":"NOPE"})));
    assert_eq!(existing, missing);
    assert_eq!(strip(c.request("has_api_key", json!({"name":"HIDDEN"}))), missing);
    assert_eq!(c.request("get_token", json!({"provider":"codex","bucket":"other"}))["code"], "UNAUTHORIZED");
    assert_eq!(c.request("remove_token", json!({"provider":"secret-provider"}))["code"], "UNAUTHORIZED");
    assert!(dir.oauth_dir().join("secret-provider%3Adefault.enc").exists());
}

#[test]
fn profile_file_sets_the_scope() {
    let dir = seeded_with("profile", TOKEN);
    std::fs::create_dir_all(dir.root.join("config/profiles")).unwrap();
    std::fs::write(
        dir.root.join("config/profiles/work.json"),
        r#"{"version":1,"provider":"anthropic","auth":{"type":"oauth","buckets":["work"]},"ephemeralSettings":{"auth-key-name":"HIDDEN"}}"#,
    )
    .unwrap();
    let d = dir.daemon(&["--profile", "work"]);
    let mut c = d.connect();
    c.handshake();
    assert_eq!(c.request("get_token", json!({"provider":"anthropic","bucket":"work"}))["ok"], true);
    assert_eq!(c.request("get_token", json!({"provider":"anthropic"}))["code"], "UNAUTHORIZED");
    assert_eq!(c.request("get_api_key", json!({"name":"HIDDEN"}))["data"]["key"], "sk-hidden");
    assert_eq!(
        c.request("list_buckets", json!({"provider":"anthropic"}))["data"],
        json!({"buckets":["work"]})
    );
}

#[test]
fn bad_frames_get_an_error_or_a_close_while_a_healthy_client_is_served() {
    let dir = seeded_with("frames", TOKEN);
    let d = dir.daemon(SCOPE);
    let mut healthy = d.connect();
    healthy.handshake();
    let check_healthy =
        |h: &mut Raw| assert_eq!(h.request("get_api_key", json!({"name":"OPENAI"}))["ok"], true);
    // lengths: 0, 65537, 0xFFFFFFFF -> error frame then close
    for header in [[0u8, 0, 0, 0], [0, 1, 0, 1], [0xff, 0xff, 0xff, 0xff]] {
        let mut c = d.connect();
        c.handshake();
        c.send_bytes(&header).unwrap();
        let r = c.recv().expect("an error frame before the close");
        assert_eq!(r["code"], "INVALID_REQUEST", "{r}");
        assert!(c.closed());
        check_healthy(&mut healthy);
    }
    // malformed requests after the handshake get INVALID_REQUEST and the connection stays usable
    let mut c = d.connect();
    c.handshake();
    for (payload, message) in [
        (&b"not json"[..], "Frame is not valid JSON"),
        (b"[1,2]", "Frame must be a JSON object"),
        (b"null", "Frame must be a JSON object"),
        (b"\"str\"", "Frame must be a JSON object"),
        (b"\xff\xfe\xfd", "Frame is not valid UTF-8"),
        (br#"{"op":"get_token"}"#, "Missing request id or op"),
        (br#"{"id":"x"}"#, "Missing request id or op"),
        (br#"{"id":"x","op":"get_token","payload":{"provider":5}}"#, "provider must be a string"),
        (br#"{"id":"x","op":"get_token","payload":{"provider":"../../x"}}"#, "Invalid provider name"),
        (br#"{"id":"x","op":"get_api_key","payload":"nope"}"#, "payload must be an object"),
    ] {
        c.send_frame(payload).unwrap();
        let r = c.recv().expect("an answer");
        assert_eq!(
            (r["code"].clone(), r["error"].clone()),
            (json!("INVALID_REQUEST"), json!(message)),
            "{r}"
        );
    }
    assert_eq!(c.request("get_api_key", json!({"name":"OPENAI"}))["ok"], true);
    // a request before the handshake: INVALID_REQUEST, then close
    let mut early = d.connect();
    early.send_frame(br#"{"v":1,"id":"1","op":"get_token","payload":{"provider":"anthropic"}}"#).unwrap();
    assert_eq!(early.recv().unwrap()["code"], "INVALID_REQUEST");
    assert!(early.closed());
    // no common version: UNKNOWN_VERSION, then close
    let mut old = d.connect();
    old.send_frame(br#"{"v":3,"op":"handshake","payload":{"minVersion":3,"maxVersion":4}}"#).unwrap();
    assert_eq!(old.recv().unwrap()["code"], "UNKNOWN_VERSION");
    assert!(old.closed());
    check_healthy(&mut healthy);
}

#[test]
fn stalled_frames_and_idle_connections_are_closed() {
    let dir = seeded_with("stall", TOKEN);
    let d = dir.daemon_with_env(SCOPE, &[("LLXPRT_CREDD_IDLE_TIMEOUT_SECS", "2")]);
    let mut healthy = d.connect();
    healthy.handshake();
    let started = Instant::now();
    let mut header_only = d.connect();
    header_only.handshake();
    header_only.send_bytes(&[0, 0]).unwrap(); // half a header
    let mut body_stall = d.connect();
    body_stall.handshake();
    body_stall.send_bytes(&[0, 0, 0, 50, b'{']).unwrap();
    let mut slowloris = d.connect();
    slowloris.handshake();
    let mut idle = d.connect();
    idle.handshake();
    // slowloris: one byte a second never finishes a frame within 5 s
    let bytes = frame(br#"{"v":1,"id":"s","op":"list_api_keys","payload":{}}"#);
    let mut slow_closed = false;
    for b in bytes.iter().take(8) {
        if slowloris.send_bytes(&[*b]).is_err() {
            slow_closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(900));
        healthy.request("list_api_keys", json!({}));
    }
    assert!(idle.closed(), "idle connection closed after the idle timeout");
    assert!(header_only.closed() && body_stall.closed());
    assert!(slow_closed || slowloris.closed(), "slowloris was cut off");
    assert!(started.elapsed() < Duration::from_secs(12));
    assert_eq!(healthy.request("get_api_key", json!({"name":"OPENAI"}))["ok"], true);
}

#[test]
fn rate_limit_lets_a_burst_through_then_says_retry_after() {
    let dir = seeded_with("rate", TOKEN);
    let d = dir.daemon(&["--allow-key", "OPENAI", "--rate-limit", "60"]);
    let mut c = d.connect();
    c.handshake();
    let answers: Vec<_> = (0..120).map(|_| c.request("has_api_key", json!({"name":"OPENAI"}))).collect();
    let limited: Vec<_> = answers.iter().filter(|r| r["code"] == "RATE_LIMITED").collect();
    assert!(answers[..55].iter().all(|r| r["ok"] == true), "a start-up burst passes");
    assert!(!limited.is_empty(), "the sustained rate is capped");
    assert_eq!(limited[0]["retryAfter"], 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(c.request("has_api_key", json!({"name":"OPENAI"}))["ok"], true, "tokens refill");
    let off = dir.daemon(&["--allow-key", "OPENAI", "--rate-limit", "0"]);
    let mut c = off.connect();
    c.handshake();
    assert!((0..300).all(|_| c.request("has_api_key", json!({"name":"OPENAI"}))["ok"] == true));
}

#[test]
fn connection_cap_refuses_politely_and_hundreds_of_idle_connections_do_not_starve_others() {
    let dir = seeded_with("cap", TOKEN);
    let d = dir.daemon(&["--allow-key", "OPENAI", "--max-connections", "200"]);
    let idle: Vec<Raw> = (0..199).map(|_| d.connect()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut last = d.connect();
    last.handshake();
    assert_eq!(last.request("get_api_key", json!({"name":"OPENAI"}))["ok"], true);
    let mut over = d.connect();
    let r = over.recv().expect("a refusal frame");
    assert_eq!(r["code"], "RATE_LIMITED");
    assert!(over.closed());
    drop(idle);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = d.connect();
    again.handshake();
    assert_eq!(again.request("get_api_key", json!({"name":"OPENAI"}))["ok"], true);
}

#[test]
fn capability_token_missing_wrong_and_right() {
    let dir = seeded_with("cap-token", TOKEN);
    let cap = dir.root.join("cap.env");
    let d = dir.daemon(&["--allow-key", "OPENAI", "--capability-file", cap.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(&cap).unwrap().permissions().mode() & 0o777, 0o600);
    let token = cap_token(&cap);
    assert!(token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    for presented in [None, Some("0".repeat(64)), Some(token[..63].to_owned())] {
        let mut c = d.connect();
        let r = c.handshake_with(presented.as_deref());
        assert_eq!((r["ok"].clone(), r["code"].clone()), (json!(false), json!("UNAUTHORIZED")), "{r}");
        assert!(c.closed());
    }
    let mut c = d.connect();
    assert_eq!(c.handshake_with(Some(&token))["ok"], true);
    assert_eq!(c.request("get_api_key", json!({"name":"OPENAI"}))["ok"], true);
    assert!(!d.log_text().contains(&token), "the capability token is in no log");
}

#[test]
fn socket_is_private_and_sigterm_cleans_up() {
    let dir = seeded_with("life", TOKEN);
    let cap = dir.root.join("cap.env");
    let mut d = dir.daemon(&["--allow-key", "OPENAI", "--capability-file", cap.to_str().unwrap()]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.socket), 0o600);
    assert_eq!(mode(d.socket.parent().unwrap()), 0o700);
    let status_file = format!("/proc/{}/status", d.child.id());
    let core = std::fs::read_to_string(format!("/proc/{}/limits", d.child.id())).unwrap();
    assert!(core.lines().any(|l| l.starts_with("Max core file size") && l.contains(" 0 ")), "{core}");
    assert!(std::fs::read_to_string(status_file).is_ok());
    // An idle client does not hold shutdown up: only in-flight requests do.
    let mut idle = d.connect();
    idle.handshake_with(Some(cap_token(&cap).as_str()));
    let started = Instant::now();
    let status = d.terminate();
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(idle.closed(), "the idle client was closed");
    assert!(!d.socket.exists(), "socket removed");
    assert!(!cap.exists(), "capability file removed");
}

fn cap_token(file: &std::path::Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.trim().strip_prefix("LLXPRT_CAPABILITY_TOKEN=").unwrap().to_string()
}

#[test]
fn unsafe_socket_directory_and_live_socket_are_refused() {
    let dir = seeded_with("unsafe", TOKEN);
    let open_dir = dir.root.join("open");
    std::fs::create_dir_all(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llxprt-credd"))
        .args(["-D", "--store", "file", "--allow-key", "K", "--socket"])
        .arg(open_dir.join("x.sock"))
        .env("LLXPRT_DATA_HOME", dir.data())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "the host's directory, not the command line: a failure (1)");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a private directory"));
    let d = dir.daemon(&["--allow-key", "OPENAI"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llxprt-credd"))
        .args(["-D", "--store", "file", "--allow-key", "K", "--socket"])
        .arg(&d.socket)
        .env("LLXPRT_DATA_HOME", dir.data())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = d.connect();
    c.handshake();
    let long = format!("/tmp/{}/x.sock", "d".repeat(120));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llxprt-credd"))
        .args(["-D", "--store", "file", "--allow-key", "K", "--socket", &long])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("limit is 107"));
}

#[test]
fn sh_output_evaluates() {
    let dir = seeded_with("sh", TOKEN);
    let script = format!(
        "eval \"$({} -D --store file --allow-key OPENAI -s --socket {}/sock/e.sock &)\"; echo \"$LLXPRT_CREDENTIAL_SOCKET\"; kill $LLXPRT_CREDD_PID",
        env!("CARGO_BIN_EXE_llxprt-credd"),
        dir.root.display()
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .env("LLXPRT_DATA_HOME", dir.data())
        .env("LLXPRT_LOG_HOME", dir.log())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{}/sock/e.sock", dir.root.display()));
}

#[test]
fn another_uid_is_refused_even_when_the_socket_mode_is_loosened() {
    if !require_root("to connect as another uid") {
        return;
    }
    let dir = seeded_with("peer", TOKEN);
    let d = dir.daemon(&["--allow-key", "OPENAI"]);
    let allowed = dir.daemon(&["--allow-key", "OPENAI", "--allow-uid", "65534"]);
    d.loosen_socket(&dir.root);
    allowed.loosen_socket(&dir.root);
    assert_eq!(as_nobody(&d.socket, &[]), Err("closed".to_owned()));
    assert!(d.log_text().contains("uid=65534") && d.log_text().contains("reason=peer_uid"));
    let answers = as_nobody(&allowed.socket, &[]).expect("admitted with --allow-uid");
    assert_eq!(answers[0]["ok"], true, "{}", answers[0]);
}

#[test]
fn pipelined_requests_are_answered_in_order_and_a_trickled_frame_is_read_whole() {
    let dir = seeded_with("pipeline", TOKEN);
    let d = dir.daemon(SCOPE);
    let mut c = d.connect();
    c.handshake();
    let mut burst = Vec::new();
    for (i, name) in ["OPENAI", "MISSING", "HIDDEN"].iter().enumerate() {
        let body = json!({"v":1,"id":format!("p{i}"),"op":"has_api_key","payload":{"name":name}}).to_string();
        burst.extend_from_slice(&frame(body.as_bytes()));
    }
    c.send_bytes(&burst).unwrap();
    let answers: Vec<_> = (0..3).map(|_| c.recv().unwrap()).collect();
    assert_eq!(
        answers.iter().map(|a| a["id"].clone()).collect::<Vec<_>>(),
        [json!("p0"), json!("p1"), json!("p2")]
    );
    assert_eq!(answers[0]["data"], json!({"exists":true}));
    assert_eq!(answers[1]["data"], json!({"exists":false}));
    assert_eq!(answers[2]["code"], "UNAUTHORIZED");
    let body = json!({"v":1,"id":"slow","op":"get_api_key","payload":{"name":"OPENAI"}}).to_string();
    for chunk in frame(body.as_bytes()).chunks(7) {
        c.send_bytes(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(c.recv().unwrap()["data"]["key"], "sk-PLANTED-KEY");
}
