//! Errors that teach: a second daemon for one profile, a credential that
//! looks missing because the keyring could not be reached, and the stale
//! sockets `doctor` finds. Each message names what to do.

use std::process::Stdio;

use crate::harness::*;

fn with_profile(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.set_key("OPENAI", "sk-advice");
    dir.save_profile(
        "work",
        r#"{"version":1,"provider":"openai","ephemeralSettings":{"auth-key-name":"OPENAI"}}"#,
    );
    dir
}

/// `llxprt-credd --store file --profile PROFILE -- true` in exec mode, to
/// its end: its stderr (its log goes to a file).
fn exec_daemon(dir: &TestDir, profile: &str) -> String {
    let out = dir
        .command(env!("CARGO_BIN_EXE_llxprt-credd"))
        .args(["--store", "file", "--no-capability", "--log-file"])
        .arg(dir.root.join("exec.log"))
        .args(["--profile", profile, "--", "true"])
        .env("XDG_RUNTIME_DIR", dir.root.join("run"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stderr(&out)
}

#[test]
fn a_second_daemon_for_the_same_profile_warns_and_names_the_first() {
    let dir = with_profile("advice-dup");
    assert_eq!(exec_daemon(&dir, "work"), "", "alone: no warning");

    let mut first = dir.daemon(&["--profile", "work"]);
    let pid = first.child.id();
    let err = exec_daemon(&dir, "work.json");
    assert!(
        err.contains(&format!("another llxprt-credd (pid {pid}) already serves profile work.json"))
            && err.contains(&format!("LLXPRT_CREDD_PID={pid} llxprt-credd -k")),
        "the warning names the first daemon and how to stop it: {err}"
    );
    assert!(
        std::fs::read_to_string(dir.root.join("exec.log")).unwrap().contains("another llxprt-credd"),
        "and the log has it"
    );

    // The same name in another config directory is another profile.
    let other = with_profile("advice-dup-other");
    assert_eq!(exec_daemon(&other, "work"), "", "another directory's daemon is not a duplicate");
    first.terminate();
}

#[test]
fn a_credential_missing_from_the_files_while_the_keyring_was_unreachable_says_so() {
    let dir = with_profile("advice-keyring");
    // auto, with a session bus that does not exist: the files are searched only
    for args in [&["key", "get", "ANTHROPIC"][..], &["token", "show", "anthropic"], &["key", "rm", "NOPE"]] {
        let out = dir.run(None, &[&["--store", "auto"][..], args].concat(), "");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains("the keyring could not be reached ("), "{args:?}: {err}");
        assert!(err.contains("instead of storing it again"), "{args:?}: {err}");
    }
    // --store file never used a keyring: plain "not stored"
    let out = dir.run(None, &["--store", "file", "key", "get", "ANTHROPIC"], "");
    assert_eq!(stderr(&out), "llxprt-cred: no API key named ANTHROPIC\n");

    // doctor's "not stored" gives the same advice instead of "store it again"
    dir.save_profile(
        "gone",
        r#"{"version":1,"provider":"openai","ephemeralSettings":{"auth-key-name":"GONE"}}"#,
    );
    let out = dir.run(None, &["--store", "auto", "doctor", "--profile", "gone"], "");
    let text = stdout(&out);
    assert!(text.contains("api key GONE: not stored"), "{text}");
    assert!(text.contains("the keyring could not be reached ("), "{text}");
}

#[test]
fn doctor_names_a_stale_credential_socket_and_stale_sockets_in_the_socket_directory() {
    let dir = with_profile("advice-doctor");
    // A socket file nobody listens on: bound, then the listener closed.
    let stale = dir.root.join("old.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let default_dir = dir.root.join("run/llxprt-cred");
    std::fs::create_dir_all(&default_dir).unwrap();
    std::fs::set_permissions(dir.root.join("run"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .unwrap();
    let left = default_dir.join("llxprt-cred-1-dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&left).unwrap());

    let out = dir
        .cred(None)
        .args(["--store", "file", "doctor"])
        .env("LLXPRT_CREDENTIAL_SOCKET", &stale)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "a stale LLXPRT_CREDENTIAL_SOCKET is a problem: {text}");
    assert!(text.contains(&format!("LLXPRT_CREDENTIAL_SOCKET={}: stale", stale.display())), "{text}");
    assert!(text.contains(&format!("rm {}", stale.display())), "the fix: {text}");
    assert!(text.contains(&format!("stale sockets (no daemon listens): {}", left.display())), "{text}");

    // A live daemon's socket is reported as such.
    let mut daemon = dir.daemon(&["--profile", "work"]);
    let out = dir
        .cred(None)
        .args(["--store", "file", "doctor"])
        .env("LLXPRT_CREDENTIAL_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains(": a daemon listens there"), "{text}");
    assert!(text.contains(&format!("daemon running: pid {}: ", daemon.child.id())), "{text}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    daemon.terminate();
}
