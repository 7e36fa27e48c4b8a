//! Hardening (issue 12), item by item, on the real binary: inherited
//! descriptors, stopping without the socket path, the log file, fixed
//! wire texts, limits per peer, logins, files, escaping.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

#[test]
fn the_log_file_is_never_opened_through_a_symlink_and_is_private() {
    let dir = TestDir::new("hd-log");
    ok(dir.run(None, &["--store", "file", "key", "set", "K"], "sk-PLANTED-log"));
    let target = dir.root.join("elsewhere.txt");
    std::fs::write(&target, "untouched\n").unwrap();
    let link = dir.root.join("planted.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = dir.credd_start_failing(&[
        "--no-capability",
        "--allow-key",
        "K",
        "--log-file",
        link.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a symbolic link"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n", "the link's target is untouched");
    // a new log is created 0600; an existing wider one is narrowed to 0600
    let wide = dir.root.join("wide.log");
    std::fs::write(&wide, "").unwrap();
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = dir.daemon_as_is(&dir.socket_path(), &["--no-capability", "--allow-key", "K"], &[]);
    assert_eq!(std::fs::metadata(&d.log).unwrap().permissions().mode() & 0o777, 0o600);
    let out = dir
        .command(env!("CARGO_BIN_EXE_llxprt-credd"))
        .args([
            "-D",
            "--store",
            "file",
            "--no-capability",
            "--allow-key",
            "K",
            "--print-socket",
            "--log-file",
        ])
        .arg(&wide)
        .arg("--socket")
        .arg(dir.socket_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert!(!line.trim().is_empty(), "the daemon started");
    assert_eq!(std::fs::metadata(&wide).unwrap().permissions().mode() & 0o777, 0o600);
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for `child` up to `secs`; a child still running then is killed and
/// the test fails (a daemon that should have refused to start, or stopped).
#[track_caller]
fn finish_within(mut child: Child, secs: u64, what: &str) -> Output {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!("{what}: still running after {secs} s; stderr: {}", stderr(&out));
}

/// `llxprt-credd -D ... ARGS` through `sh -c` with `redirs` appended (to
/// pass or not pass descriptors), stdout and stderr captured.
fn credd_sh(dir: &TestDir, args: &str, redirs: &str) -> Child {
    dir.command("sh")
        .arg("-c")
        .arg(format!(
            "exec {} -D --store file {} --allow-key K --socket {} {args} {redirs}",
            env!("CARGO_BIN_EXE_llxprt-credd"),
            if args.contains("--capability-fd") { "" } else { "--no-capability" },
            dir.socket_path().display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn inherited_descriptors_are_claimed_before_the_daemon_opens_any() {
    let dir = TestDir::new("hd-fds");
    ok(dir.run(None, &["--store", "file", "key", "set", "K"], "sk-PLANTED-fds"));
    let log = dir.root.join("d.log");
    // fd 3 not passed: it must not become the daemon's own log file (which
    // would then receive the readiness line, and the log a client's bytes)
    let out = finish_within(
        credd_sh(&dir, &format!("--log-file {} --ready-fd 3", log.display()), ""),
        10,
        "--ready-fd naming a descriptor nobody passed",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--ready-fd 3: no descriptor 3 was passed in"), "{}", stderr(&out));
    assert!(!log.exists(), "refused before the log file is opened");
    // the same number twice: the readiness reader would get the token
    let out = finish_within(
        credd_sh(&dir, "--ready-fd 4 --capability-fd 4", "4>/dev/null"),
        10,
        "equal descriptors",
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("name the same descriptor"), "{}", stderr(&out));
    // standard descriptors, a read-only descriptor, a directory, a device
    let plain = dir.root.join("plain.txt");
    std::fs::write(&plain, "").unwrap();
    let read_only = format!("3<{}", plain.display());
    for (args, redirs, says) in [
        ("--ready-fd 2", "", "descriptors 0, 1 and 2 cannot be used"),
        ("--capability-fd 0", "", "descriptors 0, 1 and 2 cannot be used"),
        ("--ready-fd 3", read_only.as_str(), "not open for writing"),
        ("--ready-fd 3", "3<.", "is a directory"),
        ("--capability-fd 5", "5</dev/null", "is a character device"),
    ] {
        let out = finish_within(credd_sh(&dir, args, redirs), 10, args);
        assert_eq!(out.status.code(), Some(2), "{args} {redirs}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args} {redirs}: {}", stderr(&out));
    }
}

#[test]
fn sigterm_stops_the_daemon_after_its_socket_file_is_gone() {
    let dir = TestDir::new("hd-term");
    ok(dir.run(None, &["--store", "file", "key", "set", "K"], "sk-PLANTED-term"));
    let mut d = dir.daemon(&["--allow-key", "K"]);
    d.connect().handshake();
    std::fs::remove_file(&d.socket).unwrap();
    let started = Instant::now();
    let _ = std::process::Command::new("kill").args(["-TERM", &d.pid().to_string()]).status();
    let deadline = started + Duration::from_secs(5);
    let mut status = None;
    while Instant::now() < deadline {
        status = d.child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(status.is_some_and(|s| s.success()), "exited within the 5 s grace: {status:?}");
}

#[test]
fn a_store_failure_reaches_the_sandbox_as_a_fixed_text_and_the_host_log_has_the_details() {
    let dir = TestDir::new("hd-wire");
    let token = serde_json::json!({"access_token":"at-x","refresh_token":"rt-PLANTED-wire","expiry":1.0e9,
        "token_type":"Bearer"});
    ok(dir.run(None, &["--store", "file", "token", "import", "anthropic"], &token.to_string()));
    // the refresh lock cannot be taken: a directory where its file goes
    let file = dir.log().join("oauth").join("locks").join("anthropic-refresh.lock");
    std::fs::create_dir_all(&file).unwrap();
    let d = dir.daemon(&["--allow", "anthropic", "--permit", "refresh,write"]);
    let mut c = d.connect();
    c.handshake();
    for op in ["refresh_token", "save_token", "remove_token"] {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let token = serde_json::json!({"access_token":"at-y","expiry":now + 3600,"token_type":"Bearer"});
        let r = c.request(op, serde_json::json!({"provider":"anthropic","token":token}));
        assert_eq!(r["code"], "INTERNAL_ERROR", "{op}: {r}");
        assert_eq!(r["error"], "The credential store failed on the host", "{op}: {r}");
        let text = r.to_string();
        assert!(!text.contains(dir.root.to_str().unwrap()), "no host path crosses: {text}");
    }
    let log = d.log_text();
    assert!(log.contains(file.to_str().unwrap()), "the host log names the file: {log}");
}
