//! contrib/llxprt-sandbox end to end, with a stand-in for docker: a script
//! on PATH that checks the arguments the wrapper gives it, reads the
//! capability env file, and talks to the daemon through the mounted socket
//! directory (from the host side) with `llxprt-cred status`/`get-key`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

const CRED: &str = env!("CARGO_BIN_EXE_llxprt-cred");

/// The stand-in container engine. Its report goes to $FAKE_OUT; with
/// FAKE_MODE=sleep it says so in $FAKE_OUT.ready and sleeps (for signal
/// tests), else it exits 7 (so the test sees the status pass through).
const FAKE_ENGINE: &str = r#"#!/bin/bash
set -u
exec > "$FAKE_OUT" 2>&1
[ "$1" = run ] || { echo "bad: $1"; exit 90; }
[ "$2" = -v ] && [ "$4" = -e ] && [ "$6" = --env-file ] || { echo "bad args: $*"; exit 91; }
volume=$3 socket_env=$5 env_file=$7
shift 7
host_dir=${volume%%:*}
container_dir=${volume#*:}
inside=${socket_env#LLXPRT_CREDENTIAL_SOCKET=}
host_socket=$host_dir/${inside#"$container_dir"/}
echo "volume=$volume"
echo "socket=$inside"
echo "rest=$*"
echo "daemon=$LLXPRT_CREDD_PID"
echo "mounted: $(ls -A "$host_dir")"
echo "env file: $(sed 's/=.*/=.../' "$env_file")"
set -a
. "$env_file"
set +a
"$FAKE_CRED" --socket "$host_socket" status
"$FAKE_CRED" --socket "$host_socket" get-key OPENAI
"$FAKE_CRED" --socket "$host_socket" get-key OTHER || echo "OTHER refused"
LLXPRT_CAPABILITY_TOKEN=0000 "$FAKE_CRED" --socket "$host_socket" status || echo "wrong token refused"
if [ "${FAKE_MODE:-}" = sleep ]; then
  echo started > "$FAKE_OUT.ready"
  exec sleep 30
fi
exit 7
"#;

struct Sandbox {
    dir: TestDir,
    tmp: PathBuf,
    out: PathBuf,
}

fn sandbox(name: &str) -> Sandbox {
    let dir = TestDir::new(name);
    ok(dir.run(None, &["--store", "file", "key", "set", "OPENAI"], "sk-SANDBOX"));
    ok(dir.run(None, &["--store", "file", "key", "set", "OTHER"], "sk-OTHER"));
    let profiles = dir.root.join("config/profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    std::fs::write(
        profiles.join("work.json"),
        r#"{"version":1,"provider":"openai","ephemeralSettings":{"auth-key-name":"OPENAI"}}"#,
    )
    .unwrap();
    let bin = dir.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for engine in ["docker", "podman"] {
        let path = bin.join(engine);
        std::fs::write(&path, FAKE_ENGINE).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let tmp = dir.root.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let out = dir.root.join("engine.out");
    Sandbox { dir, tmp, out }
}

impl Sandbox {
    fn wrapper(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/llxprt-sandbox");
        let credd_dir = Path::new(env!("CARGO_BIN_EXE_llxprt-credd")).parent().unwrap();
        let path = format!(
            "{}:{}:{}",
            self.dir.root.join("bin").display(),
            credd_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = self.dir.command("bash");
        cmd.arg(wrapper)
            .args(args)
            .env("PATH", path)
            .env("TMPDIR", &self.tmp)
            .env("LLXPRT_CREDD_STORE", "file")
            .env("FAKE_OUT", &self.out)
            .env("FAKE_CRED", CRED)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn report(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Nothing of the run is left: the private directory is gone and the
    /// daemon has exited.
    fn assert_clean(&self) {
        let left: Vec<_> = std::fs::read_dir(&self.tmp).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.is_empty(), "left behind in TMPDIR: {left:?}");
        let report = self.report();
        let pid = report.lines().find_map(|l| l.strip_prefix("daemon=")).expect("daemon pid in the report");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{pid}")).exists() {
            assert!(Instant::now() < deadline, "daemon {pid} still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn assert_served(report: &str, tmp: &Path) {
    let volume = report.lines().find_map(|l| l.strip_prefix("volume=")).expect(report);
    let (host, inside) = volume.split_once(':').unwrap();
    assert!(host.starts_with(tmp.to_str().unwrap()), "{report}");
    assert_eq!(inside, "/run/llxprt-cred", "{report}");
    assert!(report.contains("socket=/run/llxprt-cred/credd.sock\n"), "{report}");
    assert!(report.contains("mounted: credd.sock\n"), "only the socket is mounted: {report}");
    assert!(report.contains("env file: LLXPRT_CAPABILITY_TOKEN=...\n"), "{report}");
    assert!(report.contains("api keys: OPENAI\n"), "{report}");
    assert!(report.contains("\nsk-SANDBOX\n"), "{report}");
    assert!(report.contains("OTHER refused"), "{report}");
    assert!(report.contains("wrong token refused"), "{report}");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

#[test]
fn exec_mode_runs_the_container_against_the_daemon_and_cleans_up() {
    let s = sandbox("sandbox-exec");
    let out = run(&mut s.wrapper(&["--profile", "work", "--", "--rm", "-it", "image:tag", "llxprt"], &[]));
    assert_eq!(out.status.code(), Some(7), "the container's status: {}\n{}", stderr(&out), s.report());
    let report = s.report();
    assert_served(&report, &s.tmp);
    assert!(report.contains("rest=--rm -it image:tag llxprt\n"), "{report}");
    s.assert_clean();
}

#[test]
fn background_mode_and_podman_work_the_same() {
    let s = sandbox("sandbox-bg");
    let args = ["--background", "--engine", "podman", "--profile", "work", "image"];
    let out = run(&mut s.wrapper(&args, &[]));
    assert_eq!(out.status.code(), Some(7), "{}\n{}", stderr(&out), s.report());
    assert_served(&s.report(), &s.tmp);
    s.assert_clean();
}

#[test]
fn sigterm_to_the_wrapper_stops_the_container_and_cleans_up() {
    for mode in [&[][..], &["--background"]] {
        let s = sandbox("sandbox-term");
        let mut args = mode.to_vec();
        args.extend(["--profile", "work", "image"]);
        let mut child = s.wrapper(&args, &[("FAKE_MODE", "sleep")]).spawn().unwrap();
        let ready = s.out.with_extension("out.ready");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready.exists() {
            assert!(Instant::now() < deadline, "the container never started: {}", s.report());
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let status = child.wait().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10), "{mode:?}: the wrapper waited for sleep 30");
        assert_eq!(status.code(), Some(128 + 15), "{mode:?}: the container was ended by SIGTERM");
        assert_served(&s.report(), &s.tmp);
        s.assert_clean();
    }
}

#[test]
fn usage_errors() {
    let s = sandbox("sandbox-usage");
    for (args, says) in [
        (&["image"][..], "--profile NAME is required"),
        (&["--profile", "work"], "nothing to run"),
        (&["--profile", "work", "--bogus", "image"], "unknown option --bogus"),
        (&["--profile", "work", "--engine", "nope", "image"], "nope not found"),
    ] {
        let out = run(&mut s.wrapper(args, &[]));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let help = run(&mut s.wrapper(&["--help"], &[]));
    assert!(stdout(&help).contains("Usage: llxprt-sandbox"), "{}", stdout(&help));
    assert!(std::fs::read_dir(&s.tmp).unwrap().next().is_none(), "usage errors leave nothing");
}
