//! The daemon's life: background mode and `-k`, readiness on a descriptor
//! and through `NOTIFY_SOCKET`, the capability descriptor, exec mode and
//! SIGHUP reload. Real processes throughout.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;

const CREDD: &str = env!("CARGO_BIN_EXE_llxprt-credd");

fn with_key(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    dir.set_key("OPENAI", "sk-PLANTED-KEY");
    dir
}

/// The daemon without a capability token: these tests are about the
/// lifecycle; the token (on by default) has tests of its own.
fn credd(dir: &TestDir) -> Command {
    let mut cmd = credd_with_token(dir);
    cmd.arg("--no-capability");
    cmd
}

/// The daemon with its default capability token.
fn credd_with_token(dir: &TestDir) -> Command {
    let mut cmd = dir.command(CREDD);
    cmd.args(["--store", "file"]);
    cmd
}

fn socket_in(dir: &TestDir, name: &str) -> PathBuf {
    dir.root.join("sock").join(name)
}

/// Kills a background daemon the test started, should the test fail.
struct Reap(i32);

impl Drop for Reap {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
}

fn var(text: &str, name: &str) -> String {
    sh_vars(text).remove(name).unwrap_or_else(|| panic!("{name} in {text}"))
}

#[test]
fn background_mode_prints_sh_commands_serves_and_k_stops_it() {
    let dir = with_key("bg");
    let socket = socket_in(&dir, "bg.sock");
    let log = dir.root.join("bg.log");
    let out = credd(&dir)
        .args(["--allow-key", "OPENAI", "--socket"])
        .arg(&socket)
        .arg("--log-file")
        .arg(&log)
        .env("SHELL", "/bin/bash")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text} {}", stderr(&out));
    assert_eq!(var(&text, "LLXPRT_CREDENTIAL_SOCKET"), socket.to_str().unwrap());
    let pid: i32 = var(&text, "LLXPRT_CREDD_PID").parse().unwrap();
    let _reap = Reap(pid);
    assert!(alive(pid), "the daemon lives on after the parent exits");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(fields[3], pid.to_string(), "the daemon leads its own session: {stat}");
    let mut c = Raw::connect(&socket);
    c.handshake();
    assert_eq!(c.request("get_api_key", json!({"name":"OPENAI"}))["data"]["key"], "sk-PLANTED-KEY");
    drop(c);

    // -k refuses a pid that is not a daemon and leaves it alone.
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let refused =
        dir.command(CREDD).arg("-k").env("LLXPRT_CREDD_PID", sleeper.id().to_string()).output().unwrap();
    assert_eq!(
        refused.status.code(),
        Some(1),
        "the environment names another process: a failure (1); {}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("not llxprt-credd"));
    assert!(sleeper.try_wait().unwrap().is_none(), "the sleeper was not signalled");
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // -k without LLXPRT_CREDD_PID lists the daemons running now
    let which = dir.command(CREDD).arg("-k").env_remove("LLXPRT_CREDD_PID").output().unwrap();
    assert_eq!(which.status.code(), Some(1), "an environment without the pid: a failure (1)");
    let listed = stderr(&which);
    assert!(
        listed.contains(&format!("  pid {pid}: ")) && listed.contains(socket.to_str().unwrap()),
        "{listed}"
    );
    assert!(listed.contains("LLXPRT_CREDD_PID=PID llxprt-credd -k"), "{listed}");
    assert!(alive(pid), "listing stops nothing");

    let killed =
        dir.command(CREDD).args(["-k", "-c"]).env("LLXPRT_CREDD_PID", pid.to_string()).output().unwrap();
    let said = ok(killed);
    assert!(said.contains("unsetenv LLXPRT_CREDENTIAL_SOCKET;"), "{said}");
    assert!(said.contains(&format!("llxprt-credd pid {pid} stopped")));
    assert!(wait_until(Duration::from_secs(1), || !alive(pid)), "-k waits for the daemon to exit");
    assert!(!socket.exists(), "socket removed");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("shutting down"), "{log_text}");
    let unset = dir.command(CREDD).arg("-k").env_remove("LLXPRT_CREDD_PID").output().unwrap();
    assert_eq!(
        unset.status.code(),
        Some(1),
        "an environment without the pid is a failure (1), not a usage error (2)"
    );
    assert!(stderr(&unset).contains("LLXPRT_CREDD_PID is not set"));
}

#[test]
fn background_mode_evaluates_in_sh_and_reports_start_failures() {
    let dir = with_key("bgsh");
    let script = format!(
        "eval \"$({CREDD} --store file --allow-key OPENAI --socket {sock})\" || exit 9; \
         test -S \"$LLXPRT_CREDENTIAL_SOCKET\" || exit 8; \
         eval \"$({CREDD} -k)\" || exit 7; echo \"gone:$LLXPRT_CREDENTIAL_SOCKET:$LLXPRT_CREDD_PID\"",
        sock = socket_in(&dir, "e.sock").display()
    );
    let out = dir.command("sh").arg("-c").arg(&script).env("SHELL", "/bin/sh").output().unwrap();
    assert!(stdout(&out).trim().ends_with("stopped\ngone::"), "{} {}", stdout(&out), stderr(&out));

    // A start failure is reported by the parent with the child's message.
    let started = Instant::now();
    let out = credd(&dir)
        .args(["--profile", "no-such-profile", "--socket"])
        .arg(socket_in(&dir, "f.sock"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no-such-profile"), "{}", stderr(&out));
    assert!(!socket_in(&dir, "f.sock").exists());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn ready_fd_gets_the_socket_path_once_it_listens() {
    let dir = with_key("readyfd");
    let socket = socket_in(&dir, "r.sock");
    // fd 3 is the pipe we read; the daemon's stdout goes nowhere.
    let mut child = dir
        .command("sh")
        .arg("-c")
        .arg(format!(
            "exec {CREDD} -D --store file --no-capability --allow-key OPENAI --socket {} --ready-fd 3 3>&1 >/dev/null",
            socket.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    child.stdout.take().unwrap().read_to_string(&mut ready).unwrap();
    assert_eq!(ready, format!("{}\n", socket.display()), "path, newline, then the descriptor closes");
    let mut c = Raw::connect(&socket);
    c.handshake();
    assert_eq!(c.request("has_api_key", json!({"name":"OPENAI"}))["data"]["exists"], true);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    assert!(child.wait().unwrap().success());

    let bad = credd(&dir).args(["-D", "--allow-key", "K", "--ready-fd", "9"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("--ready-fd 9"), "{}", stderr(&bad));
    let std_fd = credd(&dir).args(["-D", "--allow-key", "K", "--ready-fd", "1"]).output().unwrap();
    assert!(stderr(&std_fd).contains("cannot be used"), "{}", stderr(&std_fd));
}

#[test]
fn capability_fd_carries_the_token_the_handshake_needs() {
    let dir = with_key("capfd");
    let socket = socket_in(&dir, "c.sock");
    let cap = dir.root.join("cap.txt");
    let mut child = dir
        .command("sh")
        .arg("-c")
        .arg(format!(
            "exec {CREDD} -D --store file --allow-key OPENAI --print-socket --log-level debug --socket {} --capability-fd 4 4>{}",
            socket.display(),
            cap.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let token = std::fs::read_to_string(&cap).unwrap();
    assert!(token.len() == 65 && token.ends_with('\n'), "64 hex and a newline: {token:?}");
    let token = token.trim_end();
    assert!(token.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let mut c = Raw::connect(&socket);
    assert_eq!(c.handshake_with(None)["code"], "UNAUTHORIZED");
    let mut c = Raw::connect(&socket);
    assert_eq!(c.handshake_with(Some(token))["ok"], true);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains(token), "token never logged");
}

#[test]
fn sd_notify_says_ready_and_stopping() {
    let dir = with_key("notify");
    let notify_path = dir.root.join("notify.sock");
    let listener = UnixDatagram::bind(&notify_path).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut d =
        dir.daemon_with_env(&["--allow-key", "OPENAI"], &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]);
    let mut buf = [0u8; 512];
    let n = listener.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains(&format!("MAINPID={}", d.child.id())), "{msg}");
    // Ready means listening: a client is served at once.
    let mut c = d.connect();
    c.handshake();
    drop(c);
    assert!(d.terminate().success());
    let n = listener.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
}

#[test]
fn exec_mode_runs_the_command_with_the_socket_and_returns_its_status() {
    let dir = with_key("exec");
    let socket = socket_in(&dir, "x.sock");
    let cap = dir.root.join("cap.env");
    let script = r#"test -S "$LLXPRT_CREDENTIAL_SOCKET" || exit 3
grep -q '^LLXPRT_CAPABILITY_TOKEN=[0-9a-f]\{64\}$' "$LLXPRT_CAPABILITY_FILE" || exit 4
env | grep -q LLXPRT_CAPABILITY_TOKEN && exit 5
test "$LLXPRT_CREDD_PID" = "$PPID" || exit 6
exit 7"#;
    let out = credd_with_token(&dir)
        .args(["--allow-key", "OPENAI", "--socket"])
        .arg(&socket)
        .arg("--capability-file")
        .arg(&cap)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(!socket.exists() && !cap.exists(), "socket and capability file removed");

    // The command is served while it runs: it names the socket, the test
    // uses it, then lets the command finish.
    let go = dir.root.join("go");
    let script =
        format!("echo \"$LLXPRT_CREDENTIAL_SOCKET\"; while ! test -e {}; do sleep 0.02; done", go.display());
    let mut child = credd(&dir)
        .args(["--allow-key", "OPENAI", "--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut c = Raw::connect(Path::new(line.trim()));
    c.handshake();
    assert_eq!(c.request("get_api_key", json!({"name":"OPENAI"}))["data"]["key"], "sk-PLANTED-KEY");
    std::fs::write(&go, "").unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!Path::new(line.trim()).exists());

    let missing = credd(&dir).args(["--allow-key", "OPENAI", "--", "/no/such/command"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(127));
    assert!(stderr(&missing).contains("/no/such/command"));
    let mixed = credd(&dir).args(["--allow-key", "OPENAI", "-s", "--", "true"]).output().unwrap();
    assert_eq!(mixed.status.code(), Some(2));
}

#[test]
fn exec_mode_forwards_sigterm_and_propagates_the_signal_exit() {
    let dir = with_key("execsig");
    let socket = socket_in(&dir, "s.sock");
    let mut child = credd(&dir)
        .args(["--allow-key", "OPENAI", "--socket"])
        .arg(&socket)
        .args(["--", "sh", "-c", "trap 'exit 42' TERM; echo up; while :; do sleep 0.05; done"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "up\n");
    let started = Instant::now();
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42), "the command's own exit status");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!socket.exists());

    // A command killed by a signal: 128 + signal, as a shell reports it.
    let out =
        credd(&dir).args(["--allow-key", "OPENAI", "--", "sh", "-c", "kill -KILL $$"]).output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 9));
}

#[test]
fn sighup_applies_a_narrower_profile_at_once_and_a_broken_one_serves_nothing() {
    let dir = with_key("hup");
    dir.set_key("OTHER", "sk-other");
    let profiles = dir.root.join("config/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let write_profile = |key: &str| {
        std::fs::write(
            profiles.join("p.json"),
            format!(r#"{{"version":1,"provider":"openai","ephemeralSettings":{{"auth-key-name":"{key}"}}}}"#),
        )
        .unwrap()
    };
    write_profile("OPENAI");
    let d = dir.daemon(&["--profile", "p", "--allow-key", "OTHER"]);
    let mut c = d.connect();
    c.handshake();
    assert_eq!(c.request("has_api_key", json!({"name":"OPENAI"}))["ok"], true);
    assert_eq!(c.request("has_api_key", json!({"name":"OTHER"}))["ok"], true);
    write_profile("OTHER");
    let hup = || Command::new("kill").args(["-HUP", &d.child.id().to_string()]).status().unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.request("has_api_key", json!({"name":"OPENAI"}))["code"] != "UNAUTHORIZED" {
        assert!(Instant::now() < deadline, "reload did not happen: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.request("has_api_key", json!({"name":"OTHER"}))["ok"], true, "what stayed is served");
    std::fs::write(profiles.join("p.json"), "{not json").unwrap();
    hup();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !d.log_text().contains("serving nothing") {
        assert!(Instant::now() < deadline, "{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        c.request("has_api_key", json!({"name":"OTHER"}))["code"],
        "UNAUTHORIZED",
        "nothing is served"
    );
}

#[test]
fn exec_mode_command_starts_with_no_blocked_signals() {
    // bash keeps the signal mask it inherits; dash resets it, which is why
    // this test runs bash. A blocked SIGTERM would never reach the command.
    let dir = with_key("execmask");
    let out = credd(&dir)
        .args(["--allow-key", "OPENAI", "--", "bash", "-c", "grep SigBlk /proc/$$/status"])
        .output()
        .unwrap();
    assert_eq!(stdout(&out).split_whitespace().last(), Some("0000000000000000"), "{}", stderr(&out));
}

#[test]
fn exec_mode_keeps_its_log_off_the_commands_terminal() {
    let dir = with_key("exec-log");
    let out = credd(&dir)
        .args([
            "--allow-key",
            "OPENAI",
            "--log-level",
            "debug",
            "--",
            "sh",
            "-c",
            "echo child-out; echo child-err >&2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "child-out\n");
    assert_eq!(stderr(&out), "child-err\n", "only the command's own output");
    let file = dir.root.join("home/.local/state/llxprt-code/credd.log");
    let log = std::fs::read_to_string(&file).expect("the default exec-mode log");
    assert!(log.contains("listening on"), "{log}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    // --log-stderr puts it back on the terminal
    let out = credd(&dir).args(["--allow-key", "OPENAI", "--log-stderr", "--", "true"]).output().unwrap();
    assert!(
        stderr(&out).contains("llxprt-credd[") && stderr(&out).contains("listening on"),
        "{}",
        stderr(&out)
    );
    let both = credd(&dir)
        .args(["--allow-key", "OPENAI", "--log-stderr", "--log-file", "/tmp/x", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
}

#[test]
fn a_background_daemon_without_a_log_file_says_where_it_listens_before_it_lets_stderr_go() {
    let dir = with_key("bg-stderr");
    let socket = socket_in(&dir, "bg-stderr.sock");
    // the daemon's default: info lines gathered, written by its own thread
    // later, by which time a background daemon has let go of stderr
    let out = credd(&dir)
        .args(["--allow-key", "OPENAI", "--log-level", "info", "--socket"])
        .arg(&socket)
        .env_remove("LLXPRT_CREDD_LOG_FLUSH_MS")
        .env("SHELL", "/bin/bash")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pid: i32 = var(&stdout(&out), "LLXPRT_CREDD_PID").parse().unwrap();
    let _reap = Reap(pid);
    assert!(
        stderr(&out).contains(&format!("listening on {}", socket.display())),
        "the start-up line reached the terminal: {}",
        stderr(&out)
    );
    let stop = dir.command(CREDD).arg("-k").env("LLXPRT_CREDD_PID", pid.to_string()).output().unwrap();
    assert!(stop.status.success(), "{}", stderr(&stop));
}
