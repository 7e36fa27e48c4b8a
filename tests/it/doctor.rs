//! `llxprt-cred doctor`: backend, persistence, machine secret, lock health,
//! a profile's resolved scope, and a fix for each problem, on the real
//! binary with a private file store.

use std::time::{Duration, SystemTime};

use crate::harness::*;

fn doctor(dir: &TestDir, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["--store", "file", "doctor"];
    args.extend(extra);
    let out = dir.run(None, &args, "");
    (out.status.code(), stdout(&out))
}

#[test]
fn doctor_resolves_a_profile_and_says_what_to_do() {
    let dir = TestDir::new("doctor");
    let profiles = dir.root.join("config/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("work.json"),
        r#"{"version":1,"provider":"anthropic","auth":{"type":"oauth","buckets":["team"]},
            "ephemeralSettings":{"auth-key-name":"OPENAI"}}"#,
    )
    .unwrap();
    std::fs::write(profiles.join("empty.json"), r#"{"version":1,"provider":"openai"}"#).unwrap();

    let (code, text) = doctor(&dir, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("live backend: encrypted file"), "{text}");
    assert!(text.contains("machine secret: none yet"), "{text}");
    assert!(text.ends_with("no problems found\n"), "{text}");

    let (code, text) = doctor(&dir, &["--profile", "work"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("profile work: oauth [anthropic:team] keys [OPENAI]\n"), "{text}");
    assert!(
        text.contains("token anthropic:team: not stored\n  fix: log in to anthropic (bucket team)"),
        "{text}"
    );
    assert!(text.contains("api key OPENAI: not stored\n  fix: llxprt-cred key set OPENAI\n"), "{text}");
    assert!(text.ends_with("2 problem(s) found\n"), "{text}");

    dir.set_key("OPENAI", "sk-x");
    let token = r#"{"access_token":"a","refresh_token":"r","expiry":4102444800,"token_type":"Bearer"}"#;
    dir.import_token("anthropic:team", token);
    let (code, text) = doctor(&dir, &["--profile", "work"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("token anthropic:team: stored, expires in"), "{text}");
    assert!(text.contains("refreshed on the host"), "{text}");
    assert!(text.contains("api key OPENAI: stored\n"), "{text}");
    assert!(text.contains(&format!("machine secret: {}", dir.data().join("machine_secret").display())));

    let (code, text) = doctor(&dir, &["--profile", "missing"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("profile missing: no profile named \"missing\" in "), "{text}");
    assert!(text.contains("(profiles there: empty, work)"), "the ones found are listed: {text}");
    assert!(text.contains("fix: save the profile with llxprt-code"), "{text}");
    // a file name is taken for the profile it names
    let (code, text) = doctor(&dir, &["--profile", "work.json"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = doctor(&dir, &["--profile", "empty"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("profile empty: serves nothing\n  fix: "), "{text}");
}

#[test]
fn doctor_reports_stale_locks_and_a_missing_machine_secret() {
    let dir = TestDir::new("doctor-locks");
    dir.set_key("K", "v");
    let locks = dir.log().join("oauth/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = std::fs::File::create(locks.join("anthropic-refresh.lock")).unwrap();
    lock.set_modified(SystemTime::now() - Duration::from_secs(600)).unwrap();
    std::fs::remove_file(dir.data().join("machine_secret")).unwrap();
    let (code, text) = doctor(&dir, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("held for over 5 minutes: anthropic-refresh.lock"), "{text}");
    assert!(
        text.contains("fix: if no llxprt-code or llxprt-credd process is running, delete them"),
        "{text}"
    );
    assert!(text.contains("machine secret: not found, but 1 encrypted files exist"), "{text}");
    assert!(text.ends_with("2 problem(s) found\n"), "{text}");
}

#[test]
fn profile_flag_goes_with_doctor_only() {
    let dir = TestDir::new("doctor-usage");
    let out = dir.run(None, &["--profile", "work", "key", "list"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
