//! `llxprt-sandbox` with a real container engine: podman (with runc) runs
//! a local image holding busybox and the built `llxprt-cred`, which asks
//! the daemon through the mounted socket with the capability token, as
//! root in the container and as a non-root container user, with podman run
//! by root (rootful) and by an unprivileged user (rootless, its container
//! uids mapped to subordinate uids). No registry: the image is a tar of a
//! small root file system given to `podman import`.
//!
//! Needs root (it makes the unprivileged user for the rootless runs), and
//! podman, runc, newuidmap (uidmap) and busybox; `.ci/run` installs them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::harness::*;
use crate::needs::*;

const CRED: &str = env!("CARGO_BIN_EXE_llxprt-cred");
const IMAGE: &str = "localhost/llxprt-credd-test:1";
/// The unprivileged host user the rootless runs belong to.
const USER: &str = "llxprt-credd-ct";
/// The image's own user (no entry in its passwd: a bare number).
const IMAGE_UID: u32 = 1000;
const KEY: &str = "sk-CONTAINER-key";
const ACCESS: &str = "at-CONTAINER-token";
const REFRESH: &str = "rt-CANARY-container";

/// What the container runs: every daemon command a sandbox uses, then who
/// it ran as.
const INSIDE: &str = "llxprt-cred status && llxprt-cred get anthropic && llxprt-cred get-key OPENAI \
     && llxprt-cred get-key OTHER; echo uid=$(id -u)";

/// Whether the container tests may run: root, podman, runc, newuidmap,
/// busybox, runuser and socat ([`require`]).
#[track_caller]
fn require_tools() -> bool {
    let mut needs: Vec<_> = ["podman", "runc", "newuidmap", "busybox", "runuser", "socat"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    if !is_root() {
        needs.insert(0, "root (it makes a user for rootless podman)");
    }
    require(
        &needs.join(", "),
        needs.is_empty(),
        "apt-get install podman runc uidmap busybox-static socat, and run it as root",
        SKIP_CONTAINER_TESTS,
    )
}

fn sh(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}{}", stdout(&out), stderr(&out));
    out
}

/// A root file system with busybox and `llxprt-cred` (with the libraries
/// it links), as a tar the engine can import.
fn rootfs_tar(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let busybox = which("busybox").unwrap();
    let socat = which("socat").unwrap();
    for (from, to) in [
        (busybox.as_path(), "bin/busybox"),
        (Path::new(CRED), "usr/bin/llxprt-cred"),
        (socat.as_path(), "usr/bin/socat"),
    ] {
        copy_with_libraries(from, &root, to);
    }
    for applet in ["sh", "id", "echo", "cat", "ls", "wget", "sleep", "grep"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    for d in ["tmp", "run", "proc", "sys", "dev", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let tar = dir.join("rootfs.tar");
    sh(Command::new("tar").arg("-C").arg(&root).arg("-cf").arg(&tar).arg("."));
    std::fs::set_permissions(&tar, std::fs::Permissions::from_mode(0o644)).unwrap();
    tar
}

fn copy_with_libraries(binary: &Path, root: &Path, to: &str) {
    let place = |from: &Path, to: &Path| {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    };
    // Stripped where binutils is installed: a debug build is ~100 MB, which
    // rootless keep-id runs would copy into a new layer each time.
    let dest = root.join(to);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let stripped = Command::new("strip").arg("-o").arg(&dest).arg(binary).status().is_ok_and(|s| s.success());
    if !stripped {
        place(binary, &dest);
    }
    // `ldd` names each library by its absolute path; a static binary has none.
    let out = Command::new("ldd").arg(binary).output().unwrap();
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if word.starts_with('/') && Path::new(word).exists() {
            place(Path::new(word), &root.join(&word[1..]));
        }
    }
}

/// The engine configuration: runc (crun does not work on these machines)
/// and descriptor/process limits a nested container may set.
fn containers_conf(dir: &Path) -> PathBuf {
    let conf = dir.join("containers.conf");
    std::fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         [engine]\nruntime = \"runc\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    conf
}

/// Someone on the host: root, or the unprivileged user through runuser.
struct Host<'a> {
    dir: &'a TestDir,
    user: Option<&'static str>,
    conf: PathBuf,
    /// More environment for the wrapper and the daemon.
    extra_env: Vec<(String, String)>,
}

impl Host<'_> {
    fn home(&self) -> PathBuf {
        self.dir.root.join("home")
    }

    /// `program args` as this host user, with the test directory's roots.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let root = &self.dir.root;
        let bin = Path::new(env!("CARGO_BIN_EXE_llxprt-credd")).parent().unwrap();
        let wrapper = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
        let path = format!("{}:{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display(), wrapper.display());
        let env = [
            ("PATH", path),
            ("HOME", self.home().display().to_string()),
            ("TMPDIR", root.join("tmp").display().to_string()),
            ("XDG_RUNTIME_DIR", root.join("run").display().to_string()),
            ("XDG_STATE_HOME", root.join("state").display().to_string()),
            ("LLXPRT_DATA_HOME", self.dir.data().display().to_string()),
            ("LLXPRT_LOG_HOME", self.dir.log().display().to_string()),
            ("LLXPRT_CONFIG_HOME", root.join("config").display().to_string()),
            ("LLXPRT_CREDD_STORE", "file".to_owned()),
            ("CONTAINERS_CONF", self.conf.display().to_string()),
        ];
        let env: Vec<(&str, String)> =
            env.into_iter().chain(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.clone()))).collect();
        let mut cmd = match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--", "env", "-i"]);
                c.args(env.iter().map(|(k, v)| format!("{k}={v}")));
                c.arg(program);
                c
            }
            None => {
                let mut c = Command::new(program);
                c.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
                c
            }
        };
        cmd.args(args).current_dir(root);
        cmd
    }

    fn store(&self, args: &[&str], input: &str) {
        let mut child = self
            .command(CRED, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }

    /// A key, a token and a profile that serves both, and the test image.
    fn prepare(&self, tar: &Path) {
        self.store(&["key", "set", "OPENAI"], KEY);
        self.store(&["key", "set", "OTHER"], "sk-OTHER-not-in-scope");
        let token = format!(
            r#"{{"access_token":"{ACCESS}","refresh_token":"{REFRESH}","expiry":1999999999,"token_type":"Bearer"}}"#
        );
        self.store(&["token", "import", "anthropic"], &token);
        std::fs::write(
            self.dir.root.join("config/profiles/work.json"),
            r#"{"version":1,"provider":"anthropic","auth":{"type":"oauth"},
                "ephemeralSettings":{"auth-key-name":"OPENAI"}}"#,
        )
        .unwrap();
        let change = format!("USER {IMAGE_UID}");
        sh(&mut self.command("podman", &["import", "--change", &change, tar.to_str().unwrap(), IMAGE]));
    }

    /// `llxprt-sandbox --engine podman ARGS -- --rm --network none IMAGE sh -c INSIDE`.
    fn sandbox(&self, args: &[&str]) -> (Output, String) {
        self.sandbox_running(args, INSIDE)
    }

    fn sandbox_running(&self, args: &[&str], script: &str) -> (Output, String) {
        let mut all = vec!["--engine", "podman", "--profile", "work"];
        all.extend(args);
        all.extend(["--", "--rm", "--network", "none", IMAGE, "sh", "-c", script]);
        let out = self.command("llxprt-sandbox", &all).stdin(Stdio::null()).output().unwrap();
        let log =
            std::fs::read_to_string(self.dir.root.join("state/llxprt-code/credd.log")).unwrap_or_default();
        (out, log)
    }
}

/// The container got what its profile allows through the socket, nothing
/// more, as uid `inside`; the daemon's lines went to its log, none to the
/// container's output.
fn assert_served(what: &str, out: &Output, log: &str, inside: u32, peer: u32) {
    let (text, err) = (stdout(out), stderr(out));
    assert_eq!(out.status.code(), Some(0), "{what}: {text}{err}");
    assert!(text.contains("api keys: OPENAI"), "{what}: status: {text}{err}");
    assert!(text.contains(ACCESS), "{what}: the token: {text}{err}");
    assert!(text.contains(KEY), "{what}: the key: {text}{err}");
    assert!(text.contains(&format!("uid={inside}\n")), "{what}: ran as {inside}: {text}{err}");
    assert!(!text.contains("sk-OTHER") && !text.contains(REFRESH), "{what}: too much served: {text}");
    for output in [&text, &err] {
        assert!(
            !output.contains("audit ") && !output.contains("llxprt-credd["),
            "{what}: a daemon line reached the container's output: {output}"
        );
    }
    assert!(
        log.contains(&format!("uid={peer} ")) && log.contains("op=get_api_key"),
        "{what}: the daemon's log names peer uid {peer}: {log}"
    );
}

fn leave_no_processes(user: &str) {
    // A rootless podman keeps a pause process holding its user namespace.
    let _ = Command::new("pkill").args(["-KILL", "-u", user]).status();
}

#[test]
fn rootful_podman_as_container_root_and_as_the_image_user() {
    if !require_tools() {
        return;
    }
    let dir = TestDir::new("container-rootful");
    let host = Host { dir: &dir, user: None, conf: containers_conf(&dir.root), extra_env: vec![] };
    for sub in ["tmp", "state", "config/profiles"] {
        std::fs::create_dir_all(dir.root.join(sub)).unwrap();
    }
    host.prepare(&rootfs_tar(&dir.root));

    let (out, log) = host.sandbox(&[]);
    assert_served("root in the container", &out, &log, 0, 0);

    std::fs::remove_file(dir.root.join("state/llxprt-code/credd.log")).unwrap();
    let (out, log) = host.sandbox(&["--container-user", "image", "--verbose"]);
    assert!(stderr(&out).contains(&format!("uid {IMAGE_UID} in the container, uid {IMAGE_UID} on the host")));
    assert_served("the image's user", &out, &log, IMAGE_UID, IMAGE_UID);

    // llxprt-code's hand-over: the token on descriptor 3, not in the
    // environment; llxprt-cred reads it there as llxprt-code does.
    let script =
        "llxprt-cred get-key OPENAI; echo fd=$LLXPRT_CAPABILITY_FD env=${LLXPRT_CAPABILITY_TOKEN:-unset}";
    let (out, _) = host.sandbox_running(&["--llxprt"], script);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains(&format!("{KEY}\nfd=3 env=unset\n")), "{text}{}", stderr(&out));
}

#[test]
fn rootless_podman_as_the_user_as_container_root_and_as_the_image_user() {
    if !require_tools() {
        return;
    }
    if Command::new("id").arg(USER).output().map(|o| !o.status.success()).unwrap_or(true) {
        // useradd gives the new user a subordinate uid and gid range.
        sh(Command::new("useradd").args(["--create-home", "--shell", "/bin/sh", USER]));
    }
    let uid: u32 =
        String::from_utf8_lossy(&sh(Command::new("id").args(["-u", USER])).stdout).trim().parse().unwrap();
    let dir = TestDir::new("container-rootless");
    let conf = containers_conf(&dir.root);
    for sub in ["tmp", "state", "config/profiles"] {
        std::fs::create_dir_all(dir.root.join(sub)).unwrap();
    }
    let tar = rootfs_tar(&dir.root);
    sh(Command::new("chown").args(["-R", USER]).arg(&dir.root));
    std::fs::set_permissions(dir.root.join("run"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let host = Host { dir: &dir, user: Some(USER), conf, extra_env: vec![] };
    // The engine keeps its images in the user's real home, not the test's.
    host.prepare(&tar);

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let (out, log) = host.sandbox(&[]);
        assert_served("keep-id: the user's own uid", &out, &log, uid, uid);

        let (out, log) = host.sandbox(&["--container-user", "0"]);
        assert_served("container root is the user", &out, &log, 0, uid);

        // The image's uid maps to a subordinate uid, which the wrapper
        // finds in the user namespace map and the daemon admits.
        let (out, log) = host.sandbox(&["--container-user", "image", "-v"]);
        let err = stderr(&out);
        let mapped: u32 = err
            .split(&format!("uid {IMAGE_UID} in the container, uid "))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no mapping reported: {err}"));
        assert_ne!(mapped, IMAGE_UID, "rootless: the image's uid is not the host's");
        assert_ne!(mapped, uid);
        assert_served("the image's user, mapped", &out, &log, IMAGE_UID, mapped);
    }));
    leave_no_processes(USER);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn inject_mode_in_a_container_without_a_network_reaches_the_provider_only_through_the_proxy() {
    if !require_tools() {
        return;
    }
    let dir = TestDir::new("container-inject");
    let upstream = crate::fake_stream::FakeStream::start();
    let host = Host {
        dir: &dir,
        user: None,
        conf: containers_conf(&dir.root),
        extra_env: vec![("LLXPRT_CREDD_UPSTREAM_API_ANTHROPIC_COM_URL".into(), upstream.base.clone())],
    };
    for sub in ["tmp", "state", "config/profiles"] {
        std::fs::create_dir_all(dir.root.join(sub)).unwrap();
    }
    host.prepare(&rootfs_tar(&dir.root));
    // Inside: the key's sentinel from the socket (the token on descriptor
    // 3), then a request through the relay; `--network none`, so the proxy
    // is the only way out.
    let script = "grep -q 'api.anthropic.com' /etc/hosts && echo mapped; S=$(llxprt-cred get-key OPENAI); \
        echo sentinel=${S%${S#????????????????????????}}; \
        for i in 1 2 3 4 5 6 7 8 9 10; do \
          wget -q -O - --header \"x-api-key: $S\" --header 'content-type: application/json' \
            --post-data '{\"model\":\"m\",\"max_tokens\":1}' http://127.0.0.1:18080/api.anthropic.com/v1/messages && break; \
          sleep 0.3; done; echo; echo env=${LLXPRT_CAPABILITY_TOKEN:-unset}";
    let (out, log) = host.sandbox_running(&["--inject"], script);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{text}{err}");
    assert!(text.contains("mapped\n"), "api.anthropic.com maps to the relay: {text}{err}");
    assert!(text.contains("sentinel=sk-ant-api03-llx"), "the sandbox holds a sentinel: {text}{err}");
    assert!(!text.contains(KEY), "the real key never entered the container: {text}");
    assert!(text.contains("{\"ok\":true}"), "the provider answered through the relay: {text}{err}");
    assert!(text.contains("env=unset\n"), "{text}");
    let request = upstream.last();
    assert_eq!(request.all("x-api-key"), [KEY], "the real key was added on the host");
    assert!(!request.contains("llxprtcredd"), "no sentinel reached the provider");
    assert!(log.contains("audit proxy") && log.contains("route=api.anthropic.com"), "{log}");
}
