//! Socket activation: a daemon started by `systemd-socket-activate` (the
//! systemd protocol without a running systemd) serves on the socket it was
//! given, leaves that socket in place, and hides `LISTEN_*` from its
//! command; a descriptor that is not a listening Unix socket is refused.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::*;
use crate::needs::*;

const CREDD: &str = env!("CARGO_BIN_EXE_llxprt-credd");
const CRED: &str = env!("CARGO_BIN_EXE_llxprt-cred");

/// A store with one API key, and a private directory for the socket.
fn seeded(name: &str) -> (TestDir, PathBuf) {
    let dir = TestDir::new(name);
    dir.set_key("OPENAI", "sk-ACTIVATED");
    let sock_dir = dir.root.join("sock");
    std::fs::create_dir_all(&sock_dir).unwrap();
    std::fs::set_permissions(&sock_dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    (dir, sock_dir.join("activated.sock"))
}

/// `systemd-socket-activate -l SOCKET` running `llxprt-credd ARGS` with
/// the test directory's store. It binds the socket itself and execs the
/// daemon in place on the first connection.
fn activate(dir: &TestDir, socket: &Path, args: &[&str]) -> Child {
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.arg("-l").arg(socket);
    for (k, v) in [
        ("HOME", dir.root.join("home")),
        ("LLXPRT_DATA_HOME", dir.data()),
        ("LLXPRT_LOG_HOME", dir.log()),
        ("LLXPRT_CONFIG_HOME", dir.root.join("config")),
    ] {
        cmd.arg("-E").arg(format!("{k}={}", v.display()));
    }
    cmd.arg("-E").arg(format!("PATH={}", std::env::var("PATH").unwrap_or_default()));
    // As the systemd unit does: a socket-activated daemon starts too late to
    // hand out a capability token.
    cmd.arg(CREDD).args(["--store", "file", "--log-level", "debug", "--no-capability"]).args(args);
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "systemd-socket-activate never bound {}", socket.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn a_socket_activated_daemon_serves_clients_and_leaves_the_socket() {
    if !tool_tests_enabled("systemd-socket-activate", "systemd") {
        return;
    }
    let (dir, socket) = seeded("activation");
    let log = dir.root.join("credd.log");
    let log_arg = log.to_str().unwrap();
    let mut child = activate(&dir, &socket, &["-D", "--allow-key", "OPENAI", "--log-file", log_arg]);
    for _ in 0..2 {
        let mut client = Raw::connect(&socket);
        let r = client.handshake().request("get_api_key", json!({"name": "OPENAI"}));
        assert_eq!(r["data"]["key"], "sk-ACTIVATED", "{r}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(&format!("listening on {}", socket.display())), "{text}");
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}\n{text}");
    assert!(socket.exists(), "the service manager's socket is its to remove");
}

#[test]
fn exec_mode_under_activation_hides_listen_variables_from_the_command() {
    if !tool_tests_enabled("systemd-socket-activate", "systemd") {
        return;
    }
    let (dir, socket) = seeded("activation-exec");
    let env_file = dir.root.join("command.env");
    let key_file = dir.root.join("command.key");
    let script =
        format!("env > '{}'; exec '{CRED}' get-key OPENAI > '{}'", env_file.display(), key_file.display());
    let mut child = activate(&dir, &socket, &["--allow-key", "OPENAI", "--", "sh", "-c", &script]);
    // The first connection starts the daemon, which starts the command.
    let mut client = Raw::connect(&socket);
    assert_eq!(client.handshake_with(None)["ok"], true);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(!env.contains("LISTEN_"), "{env}");
    assert!(env.contains(&format!("LLXPRT_CREDENTIAL_SOCKET={}", socket.display())), "{env}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), "sk-ACTIVATED\n");
}

/// Runs the daemon with `LISTEN_PID` naming it and `fd3` (shell
/// redirection syntax) on descriptor 3.
fn with_fake_activation(dir: &TestDir, fd3: &str, args: &str) -> std::process::Output {
    let script = format!("LISTEN_PID=$$ LISTEN_FDS=1 exec '{CREDD}' --store file {args} {fd3}");
    dir.command("sh").args(["-c", &script]).stdin(Stdio::null()).output().unwrap()
}

#[test]
fn a_descriptor_that_is_not_a_listening_unix_socket_is_refused() {
    let (dir, _) = seeded("activation-bad");
    let out = with_fake_activation(&dir, "3</dev/null", "-D --allow-key OPENAI");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("socket activation: descriptor 3"), "{}", stderr(&out));
    let out = with_fake_activation(&dir, "3</dev/null", "--allow-key OPENAI");
    assert_eq!(out.status.code(), Some(2), "background mode: {}", stderr(&out));
    assert!(stderr(&out).contains("needs -D"), "{}", stderr(&out));
    let out = with_fake_activation(&dir, "3</dev/null", "-D --allow-key OPENAI --ready-fd 3");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--ready-fd 3"), "{}", stderr(&out));
}
