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
    dir.set_key("K", "sk-PLANTED-log");
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
/// pass or not pass descriptors), stdout and stderr captured. Descriptors
/// 3 to 9 are closed first, so only what `redirs` opens is passed, whatever
/// the test runner itself inherited (a `flock` around it holds one).
fn credd_sh(dir: &TestDir, args: &str, redirs: &str) -> Child {
    dir.command("sh")
        .arg("-c")
        .arg(format!(
            "exec {} -D --store file {} --allow-key K --socket {} {args} 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- {redirs}",
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
    dir.set_key("K", "sk-PLANTED-fds");
    let log = dir.root.join("d.log");
    // fd 3 not passed (closed here, should the test runner have left one
    // open): it must not become the daemon's own log file (which would then
    // receive the readiness line, and the log a client's bytes)
    let out = finish_within(
        credd_sh(&dir, &format!("--log-file {} --ready-fd 3", log.display()), "3>&-"),
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
    dir.set_key("K", "sk-PLANTED-term");
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
    dir.import_token("anthropic", &token.to_string());
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

/// The codes a connection's answers carried, in order ("OK" for `ok:true`).
fn codes(answers: &[serde_json::Value]) -> Vec<String> {
    answers
        .iter()
        .map(|r| if r["ok"] == true { "OK".to_owned() } else { r["code"].as_str().unwrap_or("?").to_owned() })
        .collect()
}

#[test]
fn the_rate_limit_is_per_process_counts_malformed_frames_and_reconnecting_does_not_refill_it() {
    let dir = TestDir::new("hd-rate");
    dir.set_key("K", "sk-PLANTED-rate");
    // 5 per second: one token every 200 ms, far more than this test takes
    let d = dir.daemon(&["--allow-key", "K", "--rate-limit", "5"]);
    let mut c = d.connect();
    c.handshake();
    // 4 tokens left; malformed frames take them like requests do
    for _ in 0..10 {
        c.send_frame(b"{not json").unwrap();
    }
    let answers: Vec<_> = (0..10).map(|_| c.recv().expect("an answer")).collect();
    let got = codes(&answers);
    let invalid = got.iter().filter(|c| *c == "INVALID_REQUEST").count();
    let limited = got.iter().filter(|c| *c == "RATE_LIMITED").count();
    assert!(invalid <= 5 && limited >= 5 && invalid + limited == 10, "{got:?}");
    assert!(answers.iter().filter(|r| r["code"] == "RATE_LIMITED").all(|r| r["retryAfter"] == 1));
    // a new connection from the same process gets no new bucket
    let mut again = d.connect();
    let r = again.handshake_with(None);
    assert_eq!(r["code"], "RATE_LIMITED", "reconnecting does not refill: {r}");
    assert!(again.closed(), "a refused handshake closes");
    // and after a second the bucket has refilled
    std::thread::sleep(Duration::from_millis(1100));
    let mut later = d.connect();
    later.handshake();
    assert_eq!(later.request("has_api_key", serde_json::json!({"name":"K"}))["ok"], true);
    // the refusals were aggregated: not one audit line per refused frame;
    // the count comes when the connection ends
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !d.log_text().contains("not logged singly") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.log_text();
    let single = log.lines().filter(|l| l.contains("outcome=RATE_LIMITED")).count();
    assert!(single <= 3, "at most one line per connection per second: {single}\n{log}");
    let summary = log.lines().find(|l| l.contains("not logged singly")).unwrap_or_default();
    assert!(summary.contains("refused=9") && summary.contains("RATE_LIMITED="), "{log}");
}

#[test]
fn the_daemon_wide_bucket_bounds_many_processes() {
    let dir = TestDir::new("hd-rate-all");
    dir.set_key("K", "sk-PLANTED-rate-all");
    let d = dir.daemon(&["--allow-key", "K", "--rate-limit", "5", "--daemon-rate-limit", "20"]);
    // 12 processes, each within its own limit (a handshake and 3 requests)
    let script = r#"
use IO::Socket::UNIX;
my ($path, $n) = @ARGV;
my @kids;
for my $i (1..$n) {
  my $pid = fork() // die "fork: $!\n";
  if ($pid == 0) {
    my $s = IO::Socket::UNIX->new(Peer => $path) or do { print "CONNECT\n"; exit 0 };
    my @frames = ('{"v":1,"op":"handshake","payload":{"minVersion":1,"maxVersion":1}}',
                  map { '{"v":1,"id":"r' . $_ . '","op":"has_api_key","payload":{"name":"K"}}' } 1..3);
    my $out = '';
    for my $f (@frames) {
      print $s pack('N', length $f) . $f;
      my $h; last unless read($s, $h, 4) == 4;
      my $r; read($s, $r, unpack('N', $h));
      $out .= ($r =~ /"ok":true/ ? 'OK' : ($r =~ /"code":"([A-Z_]+)"/ ? $1 : '?')) . "\n";
    }
    print $out;
    exit 0;
  }
  push @kids, $pid;
}
waitpid($_, 0) for @kids;
"#;
    let out =
        std::process::Command::new("perl").args(["-e", script]).arg(&d.socket).arg("12").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let ok_count = text.lines().filter(|l| *l == "OK").count();
    let limited = text.lines().filter(|l| *l == "RATE_LIMITED").count();
    assert!(
        ok_count <= 24 && limited >= 10,
        "20 per second for all of them: {ok_count} ok, {limited} limited\n{text}"
    );
    assert!(ok_count >= 16, "the daemon's burst passed: {text}");
}

#[test]
fn the_log_file_is_rotated_keeping_one_old_file() {
    let dir = TestDir::new("hd-rotate");
    dir.set_key("K", "sk-PLANTED-rotate");
    let d = dir.daemon_with_env(
        &["--allow-key", "K", "--rate-limit", "0"],
        &[("LLXPRT_CREDD_LOG_ROTATE_BYTES", "4096")],
    );
    let mut c = d.connect();
    c.handshake();
    for _ in 0..200 {
        assert_eq!(c.request("has_api_key", serde_json::json!({"name":"K"}))["ok"], true);
    }
    let old = std::path::PathBuf::from(format!("{}.1", d.log.display()));
    let (now_len, old_len) =
        (std::fs::metadata(&d.log).unwrap().len(), std::fs::metadata(&old).unwrap().len());
    assert!(
        now_len <= 4096 && old_len <= 4096 && old_len > 3000,
        "rotated at the limit: {now_len} / {old_len}"
    );
    assert!(!std::path::Path::new(&format!("{}.2", d.log.display())).exists(), "one old file only");
    assert_eq!(std::fs::metadata(&d.log).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(d.log_text().contains("op=has_api_key"), "the new file is written to");
}

#[test]
fn text_a_sandbox_chose_is_escaped_in_the_log_and_on_the_host_terminal() {
    let dir = TestDir::new("hd-escape");
    let d = dir.daemon(&["--allow", "codex", "--permit", "write"]);
    let mut c = d.connect();
    c.handshake();
    let sneaky = "x\u{2028}fake line\u{202e}reversed\u{1b}[2J";
    let r = c.request(sneaky, serde_json::json!({}));
    assert_eq!(r["code"], "INVALID_REQUEST");
    let r = c.request("cancel", serde_json::json!({"targetId": sneaky}));
    assert_eq!(r["ok"], true, "{r}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let token = serde_json::json!({"access_token":"at-\u{202e}x","expiry":now + 600,"token_type":"Bearer",
        "scope":"read \u{1b}]0;owned\u{7}\u{2028}write"});
    let r = c.request("save_token", serde_json::json!({"provider":"codex","token":token}));
    assert_eq!(r["ok"], true, "{r}");
    let log = d.log_text();
    for bad in ['\u{2028}', '\u{202e}', '\u{1b}'] {
        assert!(!log.contains(bad), "{bad:?} reached the log raw");
    }
    assert!(log.contains("target=x\\u{2028}fake line\\u{202e}reve"), "escaped: {log}");
    let shown = ok(dir.run(None, &["--store", "file", "token", "show", "codex"], ""));
    assert!(shown.is_ascii() && !shown.contains('\u{1b}') && !shown.contains('\u{7}'), "{shown:?}");
    let parsed: serde_json::Value = serde_json::from_str(&shown).expect("still JSON");
    assert_eq!(parsed["scope"], "read \u{1b}]0;owned\u{7}\u{2028}write", "the same value, escaped as JSON");
}

#[test]
fn a_planted_machine_secret_link_is_refused_and_its_target_keeps_its_mode() {
    let dir = TestDir::new("hd-secret");
    dir.set_key("K", "sk-PLANTED-secret");
    let secret = dir.data().join("machine_secret");
    assert!(secret.is_file(), "the file store made a machine secret");
    let elsewhere = dir.root.join("elsewhere");
    std::fs::rename(&secret, &elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &secret).unwrap();
    let out = dir.run(None, &["--store", "file", "key", "get", "K"], "");
    assert_eq!(
        std::fs::metadata(&elsewhere).unwrap().permissions().mode() & 0o777,
        0o644,
        "the link's target was not chmod-ed ({})",
        stderr(&out)
    );
    assert!(!stdout(&out).contains("sk-PLANTED-secret"), "not read through the link");
    assert!(
        std::fs::symlink_metadata(&secret).unwrap().file_type().is_symlink(),
        "the link is left for the user"
    );
}

#[test]
fn audit_lines_are_gathered_written_in_order_before_an_error_and_all_there_at_exit() {
    let dir = TestDir::new("hd-gather");
    ok(dir.run(None, &["--store", "file", "key", "set", "K"], "sk-PLANTED-gather"));
    let token = serde_json::json!({"access_token":"at-x","refresh_token":"rt-PLANTED-gather","expiry":4.0e9,
        "token_type":"Bearer"});
    ok(dir.run(None, &["--store", "file", "token", "import", "anthropic"], &token.to_string()));
    // remove_token will fail at the refresh lock: an error line
    let lock = dir.log().join("oauth").join("locks").join("anthropic-refresh.lock");
    std::fs::create_dir_all(&lock).unwrap();
    let mut d = dir.daemon_with_env(
        &["--allow-key", "K", "--allow", "anthropic", "--permit", "write", "--rate-limit", "0"],
        &[("LLXPRT_CREDD_LOG_FLUSH_MS", "1000")],
    );
    let mut c = d.connect();
    c.handshake();
    let audit = |log: &str, op: &str| log.lines().filter(|l| l.contains(&format!("op={op} "))).count();
    for _ in 0..10 {
        assert_eq!(c.request("has_api_key", serde_json::json!({"name":"K"}))["ok"], true);
    }
    let r = c.request("remove_token", serde_json::json!({"provider":"anthropic"}));
    assert_eq!(r["code"], "INTERNAL_ERROR", "{r}");
    let log = d.log_text();
    let error_at =
        log.find(lock.to_str().unwrap()).unwrap_or_else(|| panic!("the error is written at once:\n{log}"));
    assert_eq!(audit(&log[..error_at], "has_api_key"), 10, "the gathered lines come first, in order:\n{log}");
    for _ in 0..10 {
        assert_eq!(c.request("has_api_key", serde_json::json!({"name":"K"}))["ok"], true);
    }
    let log = d.log_text();
    assert!(audit(&log, "has_api_key") < 20, "later info lines are gathered, not written one by one:\n{log}");
    assert!(
        wait_until(Duration::from_secs(10), || audit(&d.log_text(), "has_api_key") == 20),
        "the logger's thread writes them within its interval:\n{}",
        d.log_text()
    );
    for _ in 0..5 {
        assert_eq!(c.request("has_api_key", serde_json::json!({"name":"K"}))["ok"], true);
    }
    drop(c);
    assert!(d.terminate().success());
    let log = d.log_text();
    assert_eq!(audit(&log, "has_api_key"), 25, "a clean exit writes every gathered line:\n{log}");
    assert_eq!(audit(&log, "remove_token"), 1, "{log}");
}

#[test]
fn with_the_default_interval_audit_lines_reach_the_log_soon_and_rotation_keeps_whole_lines() {
    let dir = TestDir::new("hd-gather-rotate");
    ok(dir.run(None, &["--store", "file", "key", "set", "K"], "sk-PLANTED-gather-rotate"));
    // an empty value is the default interval
    let mut d = dir.daemon_with_env(
        &["--allow-key", "K", "--rate-limit", "0"],
        &[("LLXPRT_CREDD_LOG_ROTATE_BYTES", "4096"), ("LLXPRT_CREDD_LOG_FLUSH_MS", "")],
    );
    let mut c = d.connect();
    c.handshake();
    assert_eq!(c.request("has_api_key", serde_json::json!({"name":"K"}))["ok"], true);
    assert!(
        wait_until(Duration::from_secs(5), || d.log_text().contains("op=has_api_key")),
        "written within the default interval"
    );
    for _ in 0..200 {
        assert_eq!(c.request("has_api_key", serde_json::json!({"name":"K"}))["ok"], true);
    }
    drop(c);
    assert!(d.terminate().success());
    let old = std::path::PathBuf::from(format!("{}.1", d.log.display()));
    let (now, old) = (std::fs::read_to_string(&d.log).unwrap(), std::fs::read_to_string(&old).unwrap());
    assert!(
        now.len() <= 4096 && old.len() <= 4096 && old.len() > 3000,
        "rotated at the limit: {} / {}",
        now.len(),
        old.len()
    );
    for text in [&now, &old] {
        assert!(
            text.ends_with('\n') && text.lines().all(|l| l.starts_with("llxprt-credd[")),
            "whole lines:\n{text}"
        );
    }
    assert!(!std::path::Path::new(&format!("{}.2", d.log.display())).exists(), "one old file only");
}
