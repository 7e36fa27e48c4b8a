//! The host store against a real gnome-keyring Secret Service, one private
//! bus and keyring per test.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::needs::*;

const SERVICE_KEYS: &str = "llxprt-code-provider-keys";
const SERVICE_OAUTH: &str = "llxprt-code-oauth";

#[test]
fn keyring_round_trip_update_list_delete() {
    let Some((dir, kr)) = keyring_test("kr-roundtrip") else { return };
    let bus = Some(kr.address.as_str());
    ok(dir.run(bus, &["key", "set", "ALPHA"], "sk-alpha-1\n"));
    ok(dir.run(bus, &["key", "set", "BETA"], "sk-beta"));
    assert_eq!(ok(dir.run(bus, &["key", "get", "ALPHA"], "")), "sk-alpha-1\n");
    // stored in the keyring with llxprt-code's attributes, not in a file
    let found = kr.secret_tool(&["lookup", "service", SERVICE_KEYS, "username", "ALPHA"], None);
    assert_eq!(stdout(&found), "sk-alpha-1");
    assert!(!dir.keys_dir().join("ALPHA.enc").exists());
    // update in place: still exactly one item
    ok(dir.run(bus, &["key", "set", "ALPHA"], "sk-alpha-2"));
    assert_eq!(ok(dir.run(bus, &["key", "get", "ALPHA"], "")), "sk-alpha-2\n");
    let all = kr.secret_tool(&["search", "--all", "service", SERVICE_KEYS, "username", "ALPHA"], None);
    assert_eq!(
        stderr(&all).matches("attribute.username = ALPHA").count()
            + stdout(&all).matches("attribute.username = ALPHA").count(),
        1
    );
    assert_eq!(ok(dir.run(bus, &["key", "list"], "")), "ALPHA\nBETA\n");
    ok(dir.run(bus, &["key", "rm", "ALPHA"], ""));
    let gone = dir.run(bus, &["key", "get", "ALPHA"], "");
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        stdout(&kr.secret_tool(&["lookup", "service", SERVICE_KEYS, "username", "ALPHA"], None)).is_empty()
    );
    assert_eq!(ok(dir.run(bus, &["key", "list"], "")), "BETA\n");
    assert!(ok(dir.run(bus, &["doctor"], "")).contains("live backend: OS keyring"));
}

#[test]
fn items_written_by_llxprt_code_are_read_and_sanitized() {
    let Some((dir, kr)) = keyring_test("kr-interop") else { return };
    let bus = Some(kr.address.as_str());
    // @napi-rs/keyring 1.3 writes exactly {service, username}
    let token = r#"{"access_token":"at-1","refresh_token":"rt-PLANTED","expiry":1999999999,"token_type":"Bearer","account_id":"acc-9","id_token":"h.p.s"}"#;
    let stored = kr.secret_tool(
        &[
            "store",
            "--label=keyring:codex:default@llxprt-code-oauth",
            "service",
            SERVICE_OAUTH,
            "username",
            "codex:default",
        ],
        Some(token),
    );
    assert!(stored.status.success(), "{}", stderr(&stored));
    let shown = ok(dir.run(bus, &["token", "show", "codex"], ""));
    assert!(
        shown.contains("\"account_id\": \"acc-9\"") && shown.contains("\"id_token\": \"h.p.s\""),
        "{shown}"
    );
    assert!(!shown.contains("rt-PLANTED") && !shown.contains("refresh_token"), "{shown}");
    assert!(ok(dir.run(bus, &["token", "list"], "")).contains("codex:default\t"));
    // a merge through us keeps the stored refresh token and unknown fields
    ok(dir.run(
        bus,
        &["token", "import", "codex"],
        r#"{"access_token":"at-2","expiry":2000000000,"token_type":"Bearer"}"#,
    ));
    let raw =
        stdout(&kr.secret_tool(&["lookup", "service", SERVICE_OAUTH, "username", "codex:default"], None));
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        (v["access_token"].as_str(), v["refresh_token"].as_str(), v["account_id"].as_str()),
        (Some("at-2"), Some("rt-PLANTED"), Some("acc-9"))
    );
}

#[test]
fn keyring_wins_and_list_is_the_union() {
    let Some((dir, kr)) = keyring_test("kr-union") else { return };
    let bus = Some(kr.address.as_str());
    ok(dir.run(bus, &["--store", "file", "key", "set", "SHARED"], "from-file"));
    ok(dir.run(bus, &["--store", "file", "key", "set", "FILEONLY"], "f"));
    assert!(
        kr.secret_tool(
            &["store", "--label=x", "service", SERVICE_KEYS, "username", "SHARED"],
            Some("from-keyring")
        )
        .status
        .success()
    );
    assert!(
        kr.secret_tool(&["store", "--label=y", "service", SERVICE_KEYS, "username", "RINGONLY"], Some("r"))
            .status
            .success()
    );
    assert_eq!(ok(dir.run(bus, &["key", "get", "SHARED"], "")), "from-keyring\n");
    assert_eq!(ok(dir.run(bus, &["--store", "file", "key", "get", "SHARED"], "")), "from-file\n");
    assert_eq!(ok(dir.run(bus, &["key", "list"], "")), "FILEONLY\nRINGONLY\nSHARED\n");
    // delete removes the keyring item and the fallback file
    ok(dir.run(bus, &["key", "rm", "SHARED"], ""));
    assert!(!dir.keys_dir().join("SHARED.enc").exists());
    assert_eq!(dir.run(bus, &["key", "get", "SHARED"], "").status.code(), Some(1));
}

#[test]
fn locked_collection_falls_back_in_auto_and_fails_clearly_in_keyring_mode() {
    let Some((dir, kr)) = keyring_test("kr-locked") else { return };
    let bus = Some(kr.address.as_str());
    ok(dir.run(bus, &["--store", "file", "key", "set", "K"], "file-value"));
    kr.lock_collection();
    let auto = dir.run(bus, &["key", "get", "K"], "");
    assert_eq!(ok(auto.clone()), "file-value\n");
    assert!(
        stderr(&auto).contains("LOCKED") && stderr(&auto).contains("encrypted file store"),
        "one clear notice: {}",
        stderr(&auto)
    );
    assert_eq!(stderr(&auto).matches("LOCKED").count(), 1);
    // writes in auto go to the file, never to a prompt
    ok(dir.run(bus, &["key", "set", "K2"], "v2"));
    assert!(dir.keys_dir().join("K2.enc").exists());
    let forced = dir.run(bus, &["--store", "keyring", "key", "get", "K"], "");
    assert_eq!(forced.status.code(), Some(1));
    assert!(stderr(&forced).contains("LOCKED"), "{}", stderr(&forced));
}

#[test]
fn no_secret_service_falls_back_and_keyring_mode_says_so() {
    if !keyring_tests_enabled() {
        return;
    }
    let dir = TestDir::new("kr-none");
    ok(dir.run(None, &["key", "set", "K"], "v"));
    assert!(dir.keys_dir().join("K.enc").exists());
    assert_eq!(ok(dir.run(None, &["key", "get", "K"], "")), "v\n");
    let forced = dir.run(None, &["--store", "keyring", "key", "get", "K"], "");
    assert_eq!(forced.status.code(), Some(1));
    assert!(stderr(&forced).contains("cannot reach the Secret Service"), "{}", stderr(&forced));
    let doctor = dir.run(None, &["--store", "keyring", "doctor"], "");
    assert_eq!(doctor.status.code(), Some(1));
    assert!(stdout(&doctor).contains("OS keyring is unavailable"));
}

#[test]
fn stalled_keyring_does_not_hang_a_caller_beyond_the_timeout() {
    let Some((dir, kr)) = keyring_test("kr-stall") else { return };
    let bus = Some(kr.address.as_str());
    ok(dir.run(bus, &["--store", "file", "key", "set", "K"], "file-value"));
    let pid = kr.daemon_pid().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let started = Instant::now();
    let mut cmd = dir.cred(bus);
    cmd.env("LLXPRT_CREDD_KEYRING_TIMEOUT_MS", "700").args(["key", "get", "K"]);
    let out = cmd.output().unwrap();
    let took = started.elapsed();
    std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert_eq!(ok(out), "file-value\n");
    assert!(took < Duration::from_secs(3), "a stalled bus held the caller for {took:?}");
    let mut cmd = dir.cred(bus);
    std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    cmd.env("LLXPRT_CREDD_KEYRING_TIMEOUT_MS", "700").args(["--store", "keyring", "key", "get", "K"]);
    let started = Instant::now();
    let out = cmd.output().unwrap();
    std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("TIMEOUT"), "{}", stderr(&out));
}

#[test]
fn file_mode_never_touches_the_keyring() {
    let Some((dir, kr)) = keyring_test("kr-filemode") else { return };
    let bus = Some(kr.address.as_str());
    ok(dir.run(bus, &["--store", "file", "key", "set", "F"], "v"));
    assert!(dir.data().join("machine_secret").exists(), "file mode keeps its machine secret in the file");
    assert!(dir.keys_dir().join("F.enc").exists());
    for (service, user) in [("llxprt-code-machine-secret", "default"), (SERVICE_KEYS, "F")] {
        assert!(stdout(&kr.secret_tool(&["lookup", "service", service, "username", user], None)).is_empty());
    }
    // an auto-mode reader finds the file entry through the same secret
    assert_eq!(ok(dir.run(bus, &["key", "get", "F"], "")), "v\n");
}
