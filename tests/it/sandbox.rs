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
case $1 in
  info) [ -n "${FAKE_ROOTLESS:-}" ] && echo "[name=rootless]" || echo "[name=seccomp]"; exit 0 ;;
  image)
    # image inspect [--format F] NAME: only "app:1" exists, its user is $FAKE_IMAGE_USER
    [ "${*: -1}" = app:1 ] || exit 125
    [ "$3" = --format ] && echo "${FAKE_IMAGE_USER:-}"
    exit 0 ;;
esac
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
echo "daemon args: $(tr '\0' ' ' < /proc/$LLXPRT_CREDD_PID/cmdline)"
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
    dir.set_key("OPENAI", "sk-SANDBOX");
    dir.set_key("OTHER", "sk-OTHER");
    dir.save_profile(
        "work",
        r#"{"version":1,"provider":"openai","ephemeralSettings":{"auth-key-name":"OPENAI"}}"#,
    );
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
            .env("XDG_STATE_HOME", self.state())
            .env("LLXPRT_CREDD_STORE", "file")
            .env("FAKE_OUT", &self.out)
            .env("FAKE_CRED", CRED)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn state(&self) -> PathBuf {
        self.dir.root.join("state")
    }

    /// The daemon's log, where the wrapper sends it by default.
    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.state().join("llxprt-code/credd.log")).unwrap_or_default()
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
    let me = format!("{}:{}", uid(), gid());
    assert!(report.contains(&format!("rest=--user {me} --rm -it image:tag llxprt\n")), "{report}");
    assert_quiet(&out, &s);
    s.assert_clean();
}

fn uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap()
}

fn gid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::gid(&m)).unwrap()
}

/// The daemon's lines went to its log file, none to the terminal the
/// container shares with the wrapper.
fn assert_quiet(out: &Output, s: &Sandbox) {
    let log = s.daemon_log();
    assert!(log.contains("audit "), "the daemon logged to its file: {log:?}");
    for text in [stdout(out), stderr(out), s.report()] {
        assert!(
            !text.contains("audit ") && !text.contains("llxprt-credd["),
            "a daemon line on the terminal: {text}"
        );
    }
}

#[test]
fn a_container_user_that_is_not_ours_is_run_as_asked_and_admitted() {
    let s = sandbox("sandbox-uid");
    let out = run(&mut s.wrapper(&["--profile", "work", "--container-user", "4321:99", "--", "image"], &[]));
    assert_eq!(out.status.code(), Some(7), "{}\n{}", stderr(&out), s.report());
    let report = s.report();
    assert!(report.contains("rest=--user 4321:99 image\n"), "{report}");
    assert!(report.contains(" --allow-uid 4321 "), "the daemon admits uid 4321: {report}");
    assert_served(&report, &s.tmp);
    s.assert_clean();

    // The image's own user: found by asking the engine, nothing added to the run.
    let s = sandbox("sandbox-image-user");
    let args = [
        "--profile",
        "work",
        "--container-user",
        "image",
        "-v",
        "--",
        "--rm",
        "-w",
        "/src",
        "app:1",
        "llxprt",
    ];
    let out = run(&mut s.wrapper(&args, &[("FAKE_IMAGE_USER", "2345:2345")]));
    assert_eq!(out.status.code(), Some(7), "{}\n{}", stderr(&out), s.report());
    let report = s.report();
    assert!(report.contains("rest=--rm -w /src app:1 llxprt\n"), "{report}");
    assert!(report.contains(" --allow-uid 2345 "), "{report}");
    assert!(stderr(&out).contains("uid 2345 in the container, uid 2345 on the host"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("running: docker run -v "),
        "--verbose shows the command: {}",
        stderr(&out)
    );
    s.assert_clean();

    // An image running as root needs no --allow-uid.
    let s = sandbox("sandbox-image-root");
    let out = run(&mut s.wrapper(&["--profile", "work", "--container-user", "image", "app:1"], &[]));
    assert_eq!(out.status.code(), Some(7), "{}\n{}", stderr(&out), s.report());
    assert!(!s.report().contains("--allow-uid"), "{}", s.report());
    s.assert_clean();
}

#[test]
fn llxprt_mode_moves_the_token_to_descriptor_3_through_the_image_shell() {
    let s = sandbox("sandbox-llxprt");
    let args = ["--profile", "work", "--llxprt", "--", "--rm", "-it", "app:1"];
    let out = run(&mut s.wrapper(&args, &[]));
    assert_eq!(out.status.code(), Some(7), "{}\n{}", stderr(&out), s.report());
    let report = s.report();
    let me = format!("{}:{}", uid(), gid());
    assert!(
        report.contains(&format!("rest=--user {me} --rm -it --entrypoint /bin/sh app:1 -c cap=")),
        "{report}"
    );
    assert!(report.contains("\nexec \"$@\" sh llxprt\n"), "llxprt is the default command: {report}");

    let out = run(&mut s.wrapper(&["--profile", "work", "--llxprt", "nothere"], &[]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--llxprt: no image found"), "{}", stderr(&out));
}

#[test]
fn rootless_docker_runs_as_container_root_which_is_the_user() {
    let s = sandbox("sandbox-rootless");
    let out = run(&mut s.wrapper(&["--profile", "work", "image"], &[("FAKE_ROOTLESS", "1")]));
    assert_eq!(out.status.code(), Some(7), "{}\n{}", stderr(&out), s.report());
    assert!(s.report().contains("rest=--user 0:0 image\n"), "{}", s.report());
    s.assert_clean();
}

#[test]
fn an_explicit_log_file_is_used_and_the_default_one_is_not() {
    let s = sandbox("sandbox-log");
    let log = s.dir.root.join("mine.log");
    let out = run(&mut s.wrapper(&["--profile", "work", "--log-file", log.to_str().unwrap(), "image"], &[]));
    assert_eq!(out.status.code(), Some(7), "{}\n{}", stderr(&out), s.report());
    assert!(std::fs::read_to_string(&log).unwrap().contains("audit "));
    assert!(s.daemon_log().is_empty(), "the default log stays untouched");
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
        (&["--profile", "work", "--container-user", "node", "image"], "must be host, image or UID[:GID]"),
    ] {
        let out = run(&mut s.wrapper(args, &[]));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    let out = run(&mut s.wrapper(&["--profile", "work", "--container-user", "image", "nothere"], &[]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no image found among the run arguments"), "{}", stderr(&out));
    let help = run(&mut s.wrapper(&["--help"], &[]));
    assert!(stdout(&help).contains("Usage: llxprt-sandbox"), "{}", stdout(&help));
    assert!(std::fs::read_dir(&s.tmp).unwrap().next().is_none(), "usage errors leave nothing");
}

#[test]
fn inject_mode_starts_the_proxy_runs_the_relay_and_points_llxprt_at_it() {
    let s = sandbox("sandbox-inject");
    let args = [
        "--profile",
        "work",
        "--inject",
        "--",
        "--rm",
        "--network",
        "none",
        "app:1",
        "llxprt",
        "--profile-load",
        "work",
    ];
    let out = run(&mut s.wrapper(&args, &[]));
    assert_eq!(out.status.code(), Some(7), "{}\n{}", stderr(&out), s.report());
    let report = s.report();
    assert!(report.contains(" --inject --proxy-socket "), "the daemon runs in inject mode: {report}");
    assert!(report.contains("mounted: credd.sock\nproxy.sock\n"), "both sockets, nothing else: {report}");
    // the sandbox gets a sentinel in place of the key
    let served = report.lines().find(|l| l.starts_with("sk-")).expect(&report).to_owned();
    assert!(served.starts_with("sk-llxprtcredd") && !report.contains("sk-SANDBOX"), "{report}");
    assert!(
        report.contains("--entrypoint /bin/sh app:1 -c cap=${LLXPRT_CAPABILITY_TOKEN:?no capability token}\nunset LLXPRT_CAPABILITY_TOKEN\ncommand -v socat"),
        "the relay starts once the token is out of the environment: {report}"
    );
    assert!(
        report.contains("socat TCP-LISTEN:18080,bind=127.0.0.1,reuseaddr,fork,nodelay \"UNIX-CONNECT:${LLXPRT_CREDENTIAL_SOCKET%/*}/proxy.sock\" &"),
        "the relay: {report}"
    );
    assert!(
        report.contains(
            "exec \"$@\" sh llxprt --baseurl http://127.0.0.1:18080/api.openai.com/v1 --profile-load work\n"
        ),
        "llxprt-code is pointed at the relay: {report}"
    );
    s.assert_clean();

    // An Anthropic profile maps the host name so llxprt-code keeps the subscription.
    let s = sandbox("sandbox-inject-anthropic");
    s.dir.save_profile("claude", r#"{"version":1,"provider":"claudecode","auth":{"type":"oauth"}}"#);
    let out = run(&mut s.wrapper(&["--profile", "claude", "--inject", "app:1"], &[]));
    let report = s.report();
    assert!(
        report.contains("--add-host api.anthropic.com:127.0.0.1 -e HTTP_PROXY= "),
        "{}\n{report}",
        stderr(&out)
    );
    assert!(
        report.contains(" -e all_proxy= --entrypoint /bin/sh app:1"),
        "engine-added proxies emptied: {report}"
    );
    assert!(
        report.contains("sh llxprt --baseurl http://api.anthropic.com:18080/api.anthropic.com\n"),
        "{report}"
    );
    s.assert_clean();

    // What would bypass the proxy is refused before anything starts.
    let s = sandbox("sandbox-inject-refused");
    for (args, says) in [
        (
            &["--profile", "work", "--inject", "--", "-e", "OPENAI_API_KEY=sk-x", "app:1"][..],
            "do not pass OPENAI_API_KEY",
        ),
        (
            &["--profile", "work", "--inject", "--", "--env=HTTPS_PROXY=http://p", "app:1"],
            "do not pass HTTPS_PROXY",
        ),
        (
            &["--profile", "work", "--inject", "--", "-eGEMINI_API_KEY=x", "app:1"],
            "do not pass GEMINI_API_KEY",
        ),
        (
            &["--profile", "work", "--inject", "--", "--env-file", "keys.env", "app:1"],
            "--env-file could pass a key",
        ),
        (&["--allow-key", "OPENAI", "--inject", "app:1"], "--inject needs --profile NAME"),
    ] {
        let out = run(&mut s.wrapper(args, &[]));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    s.dir.save_profile("qwen", r#"{"version":1,"provider":"qwen","auth":{"type":"oauth"}}"#);
    let out = run(&mut s.wrapper(&["--profile", "qwen", "--inject", "app:1"], &[]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("provider 'qwen' has no proxy route"), "{}", stderr(&out));
    assert!(std::fs::read_dir(&s.tmp).unwrap().next().is_none(), "refusals leave nothing");
}
