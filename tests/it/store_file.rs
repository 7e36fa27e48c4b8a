//! The encrypted file store through the real binary: formats, permissions,
//! and every kind of damaged entry.

use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

fn file_dir(name: &str) -> TestDir {
    TestDir::new(name)
}

fn run(dir: &TestDir, args: &[&str], stdin: &str) -> std::process::Output {
    let mut full = vec!["--store", "file"];
    full.extend_from_slice(args);
    dir.run(None, &full, stdin)
}

#[test]
fn files_are_private_and_named_like_llxprt_code() {
    let dir = file_dir("perms");
    ok(run(
        &dir,
        &["token", "import", "anthropic"],
        r#"{"access_token":"a","expiry":1,"token_type":"Bearer"}"#,
    ));
    ok(run(&dir, &["key", "set", "K.1"], "v"));
    let file = dir.oauth_dir().join("anthropic%3Adefault.enc");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(&dir.oauth_dir()), 0o700);
    assert_eq!(mode(&dir.keys_dir().join("K.1.enc")), 0o600);
    assert_eq!(mode(&dir.data().join("machine_secret")), 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with(r#"{"v":2,"crypto":{"alg":"aes-256-gcm","kdf":"scrypt","N":16384,"r":8,"p":1,"saltLen":16},"data":""#), "{text}");
    assert!(!text.contains("access_token"), "ciphertext, not cleartext");
    let names: Vec<String> = std::fs::read_dir(dir.oauth_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["anthropic%3Adefault.enc"], "no temp files left");
}

#[test]
fn damaged_entries_read_as_absent_and_are_never_deleted() {
    let dir = file_dir("damaged");
    ok(run(&dir, &["key", "set", "GOOD"], "good"));
    let good = std::fs::read(dir.keys_dir().join("GOOD.enc")).unwrap();
    type Damage = Box<dyn Fn(&std::path::Path)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("CORRUPT", Box::new(|p| std::fs::write(p, b"not an envelope").unwrap())),
        (
            "TRUNCATED",
            Box::new({
                let good = good.clone();
                move |p| std::fs::write(p, &good[..good.len() / 2]).unwrap()
            }),
        ),
        (
            "TAMPERED",
            Box::new({
                let text = String::from_utf8(good.clone()).unwrap();
                move |p| std::fs::write(p, text.replacen("\"data\":\"", "\"data\":\"AAAA", 1)).unwrap()
            }),
        ),
        ("ISADIR", Box::new(|p| std::fs::create_dir(p).unwrap())),
    ];
    for (name, damage) in &cases {
        let path = dir.keys_dir().join(format!("{name}.enc"));
        damage(&path);
        let out = run(&dir, &["key", "get", name], "");
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("treated as absent") || err.contains("directory"), "{name}: {err}");
        let warning: String = err.lines().filter(|l| l.contains("warning:")).collect();
        assert!(!warning.contains(name), "the warning names a hash, never the entry: {warning}");
        assert!(path.exists(), "{name} must not be deleted");
    }
    // the good entry is unaffected, and listing still works
    assert_eq!(ok(run(&dir, &["key", "get", "GOOD"], "")), "good\n");
    assert!(ok(run(&dir, &["key", "list"], "")).contains("GOOD\n"));
}

#[test]
fn wrong_machine_secret_is_absent_and_v2_is_never_downgraded() {
    let dir = file_dir("secret");
    ok(run(&dir, &["key", "set", "K"], "v"));
    let file = dir.keys_dir().join("K.enc");
    let before = std::fs::read(&file).unwrap();
    // another valid secret: the file no longer decrypts
    std::fs::write(dir.data().join("machine_secret"), "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=")
        .unwrap();
    assert_eq!(run(&dir, &["key", "get", "K"], "").status.code(), Some(1));
    // an unusable secret: writing would need v1, which must not replace v2
    std::fs::write(dir.data().join("machine_secret"), "garbage").unwrap();
    let out = run(&dir, &["key", "set", "K"], "new");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("v2") && stderr(&out).contains("UNAVAILABLE"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&file).unwrap(), before, "the v2 file is untouched");
}

#[test]
fn missing_secret_is_not_minted_over_existing_v2_files() {
    let dir = file_dir("mint");
    ok(run(&dir, &["key", "set", "K"], "v"));
    std::fs::remove_file(dir.data().join("machine_secret")).unwrap();
    let out = run(&dir, &["key", "set", "OTHER"], "x");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("machine secret cannot be found"), "{}", stderr(&out));
    assert!(!dir.data().join("machine_secret").exists());
}

#[test]
fn hostile_names_are_refused_before_any_storage_call() {
    let dir = file_dir("names");
    for args in [
        &["key", "set", "../x"][..],
        &["key", "get", "a/b"],
        &["key", "get", ""],
        &["token", "show", "../../etc:passwd"],
        &["token", "import", "ok:bad/bucket"],
        &["token", "rm", "x:"],
    ] {
        let out = run(&dir, args, r#"{"access_token":"a","expiry":1,"token_type":"Bearer"}"#);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains("INVALID_NAME"), "{args:?}: {}", stderr(&out));
    }
    let long = "k".repeat(65);
    assert!(stderr(&run(&dir, &["key", "get", &long], "")).contains("INVALID_NAME"));
    assert!(
        !dir.data().join("provider-keys").exists() && !dir.data().join("secure-store").exists(),
        "nothing was created"
    );
}

#[test]
fn key_values_are_normalised_and_empty_values_refused() {
    let dir = file_dir("values");
    ok(run(&dir, &["key", "set", "K"], "  sk-abc \r\n"));
    assert_eq!(ok(run(&dir, &["key", "get", "K"], "")), "sk-abc\n");
    let out = run(&dir, &["key", "set", "E"], " \n");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("empty"));
}

#[test]
fn invalid_tokens_are_refused_with_the_reason() {
    let dir = file_dir("tokens");
    for bad in [
        "{",
        "[]",
        r#"{"access_token":"a","expiry":"soon","token_type":"Bearer"}"#,
        r#"{"access_token":"a","expiry":1,"token_type":"MAC"}"#,
    ] {
        let out = run(&dir, &["token", "import", "p"], bad);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        assert!(stderr(&out).contains("invalid token"), "{bad}: {}", stderr(&out));
    }
}
