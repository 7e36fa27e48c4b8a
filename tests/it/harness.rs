//! The integration harness: private temp homes, the real binaries, and
//! private Secret Services (a dbus-daemon plus gnome-keyring per test).
//!
//! It also holds the canaries: every secret a test plants is registered
//! here ([`plant`], plus anything carrying the `CANARY` or `PLANTED`
//! markers, plus every capability token a daemon writes), and the harness
//! itself checks every frame [`Raw`] receives and every daemon log file,
//! so a change that leaks one fails whichever test sees it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::launch;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Where a planted secret may appear.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Exposure {
    /// In an answer to the sandbox (an API key, an access token, the
    /// session id and state of the login it started), never in a log line.
    Served,
    /// Nowhere outside the host store and the provider: not in any answer,
    /// not in any log line (refresh tokens, PKCE verifiers, device and
    /// authorization codes, capability tokens).
    Never,
}

/// Markers the existing tests put in their secrets: `CANARY` marks
/// refresh tokens, codes and verifiers (the fake provider's too);
/// `PLANTED` marks API keys and tokens a test stored.
const MARKERS: [(&str, Exposure); 2] = [("CANARY", Exposure::Never), ("PLANTED", Exposure::Served)];

/// Secrets planted by this test process (nextest runs each test in its
/// own process).
static PLANTED: Mutex<Vec<(String, Exposure)>> = Mutex::new(Vec::new());

/// Registers `secret` for the harness-wide leak checks; returns it.
pub fn plant(secret: impl Into<String>, exposure: Exposure) -> String {
    let secret = secret.into();
    assert!(secret.len() >= 6, "a canary this short would match by chance: {secret:?}");
    let mut planted = PLANTED.lock().unwrap_or_else(|e| e.into_inner());
    if !planted.iter().any(|(s, _)| *s == secret) {
        planted.push((secret.clone(), exposure));
    }
    secret
}

/// The registered secrets (and markers) found in `text`: in an answer
/// (`in_answer`) only those that may never cross, in a log all of them.
pub fn leaks(text: &str, in_answer: bool) -> Vec<String> {
    let planted = PLANTED.lock().unwrap_or_else(|e| e.into_inner());
    let markers = MARKERS.iter().map(|(m, e)| (m.to_string(), *e));
    markers
        .chain(planted.iter().cloned())
        .filter(|(s, e)| (!in_answer || *e == Exposure::Never) && text.contains(s.as_str()))
        .map(|(s, e)| format!("{s} ({e:?})"))
        .collect()
}

/// Panics (unless already panicking) when `text`, a log of `what`, holds
/// any registered secret. Secrets are shown only by their registered
/// value, which is a test fixture.
#[track_caller]
pub fn check_log(what: &str, text: &str) {
    let found = leaks(text, false);
    if !found.is_empty() && !std::thread::panicking() {
        let lines: Vec<&str> = text.lines().filter(|l| !leaks(l, false).is_empty()).take(5).collect();
        panic!("canary: {what} leaked {found:?}; lines:\n{}", lines.join("\n"));
    }
}

/// Panics when an answer the daemon sent holds a secret that must never
/// cross the socket.
#[track_caller]
pub fn check_answer(text: &str) {
    let found = leaks(text, true);
    assert!(found.is_empty(), "canary: an answer leaked {found:?}: {text}");
}

/// Checks every `*.log` file directly in `dir`.
fn check_logs_in(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let is_log = path.extension().is_some_and(|x| x == "log");
        if let Some(text) = is_log.then(|| std::fs::read_to_string(&path).ok()).flatten() {
            check_log(&path.display().to_string(), &text);
        }
    }
}

/// A fresh directory with data, log, config and home roots.
pub struct TestDir {
    pub root: PathBuf,
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!("credd-it-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for sub in ["data", "log", "config", "home", "run"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        TestDir { root }
    }

    /// Writes llxprt-code profile `name` (`config/profiles/NAME.json`).
    pub fn save_profile(&self, name: &str, body: &str) {
        let profiles = self.root.join("config/profiles");
        std::fs::create_dir_all(&profiles).unwrap();
        std::fs::write(profiles.join(format!("{name}.json")), body).unwrap();
    }

    pub fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn oauth_dir(&self) -> PathBuf {
        self.data().join("secure-store/llxprt-code-oauth")
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.data().join("provider-keys")
    }

    /// A `llxprt-cred` command with this directory's roots and `bus` as its
    /// session bus (`None`: a bus address that does not exist).
    pub fn cred(&self, bus: Option<&str>) -> Command {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_llxprt-cred"));
        cmd.env("XDG_RUNTIME_DIR", self.root.join("run"))
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                bus.map(str::to_owned).unwrap_or_else(|| format!("unix:path={}/no-bus", self.root.display())),
            )
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `llxprt-cred args` with `stdin` and returns its output.
    pub fn run(&self, bus: Option<&str>, args: &[&str], stdin: &str) -> Output {
        let mut cmd = self.cred(bus);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn llxprt-cred");
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap()
    }
}

impl TestDir {
    /// `program` with a clean environment pointing at this directory's roots.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.root.join("home"))
            .env("LLXPRT_DATA_HOME", self.data())
            .env("LLXPRT_LOG_HOME", self.log())
            .env("LLXPRT_CONFIG_HOME", self.root.join("config"));
        cmd
    }
}

impl Drop for TestDir {
    /// Checks every log file left in the directory (daemons started by
    /// hand included) for planted secrets, then removes it.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            check_logs_in(&self.root);
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "command failed: {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// A private session bus with an unlocked gnome-keyring on it.
pub struct PrivateKeyring {
    pub address: String,
    bus: Child,
    home: PathBuf,
}

impl PrivateKeyring {
    pub fn start(dir: &TestDir) -> PrivateKeyring {
        let home = dir.root.join("kr-home");
        std::fs::create_dir_all(home.join(".local/share")).unwrap();
        let run = dir.root.join("kr-run");
        std::fs::create_dir_all(&run).unwrap();
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .env("HOME", &home)
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_RUNTIME_DIR", &run)
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbus-daemon");
        let mut line = String::new();
        BufReader::new(bus.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let address = line.trim().to_owned();
        assert!(!address.is_empty(), "dbus-daemon printed no address");
        let kr = PrivateKeyring { address, bus, home };
        kr.unlock();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !kr
            .dbus_call(&["org.freedesktop.DBus.NameHasOwner", "string:org.freedesktop.secrets"])
            .contains("true")
        {
            assert!(Instant::now() < deadline, "gnome-keyring never took its bus name");
            std::thread::sleep(Duration::from_millis(50));
        }
        kr
    }

    /// Starts gnome-keyring on this bus unlocked with the test password,
    /// over whatever keyring files its home already holds (it takes the
    /// bus name shortly after).
    pub fn unlock(&self) {
        let mut unlock = self
            .command("gnome-keyring-daemon")
            .args(["--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gnome-keyring-daemon");
        unlock.stdin.take().unwrap().write_all(b"it-password").unwrap();
        unlock.wait().unwrap();
    }

    /// A command on this bus, in the keyring's home.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", &self.home)
            .env("XDG_DATA_HOME", self.home.join(".local/share"))
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        cmd
    }

    fn dbus_call(&self, method_and_args: &[&str]) -> String {
        let out = self
            .command("dbus-send")
            .args(["--session", "--print-reply", "--dest=org.freedesktop.DBus", "/org/freedesktop/DBus"])
            .args(method_and_args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The pid of the keyring daemon.
    pub fn daemon_pid(&self) -> i32 {
        let reply = self.dbus_call(&[
            "org.freedesktop.DBus.GetConnectionUnixProcessID",
            "string:org.freedesktop.secrets",
        ]);
        reply.split_whitespace().last().and_then(|s| s.parse().ok()).expect("keyring pid")
    }

    /// Locks the default ('login') collection, as a screen lock would.
    pub fn lock_collection(&self) {
        let out = self
            .command("dbus-send")
            .args([
                "--session",
                "--print-reply",
                "--dest=org.freedesktop.secrets",
                "/org/freedesktop/secrets",
                "org.freedesktop.Secret.Service.Lock",
                "array:objpath:/org/freedesktop/secrets/collection/login",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "lock failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `secret-tool` against this keyring.
    pub fn secret_tool(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = self
            .command("secret-tool")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("secret-tool (apt-get install libsecret-tools)");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }
}

impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        let pid = self.secrets_owner();
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

impl PrivateKeyring {
    /// The pid owning `org.freedesktop.secrets` on this bus, if any (a
    /// dead or restarting keyring owns none).
    pub fn secrets_owner(&self) -> Option<i32> {
        let out = self
            .command("dbus-send")
            .args(["--session", "--print-reply", "--reply-timeout=1000", "--dest=org.freedesktop.DBus"])
            .args(["/org/freedesktop/DBus", "org.freedesktop.DBus.GetConnectionUnixProcessID"])
            .arg("string:org.freedesktop.secrets")
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).split_whitespace().last()?.parse().ok()
    }
}

/// A unique name for items in shared stores.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst))
}

/// A running daemon (foreground, file store) in a test directory.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl TestDir {
    /// Starts `llxprt-credd -D --store file --print-socket` with `args`.
    pub fn daemon(&self, args: &[&str]) -> Daemon {
        self.daemon_with_env(args, &[])
    }

    pub fn daemon_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        self.daemon_at(&self.socket_path(), args, env)
    }

    /// A fresh socket path in this directory (nothing listens on it yet).
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("sock").join(format!("d{}.sock", COUNTER.fetch_add(1, Ordering::SeqCst)))
    }

    /// Starts a daemon listening on `socket`. Unless `args` ask for a
    /// capability token (`--capability-file`/`--capability-fd`) the daemon
    /// runs with `--no-capability`, so tests of other layers handshake
    /// without one; the default (a token required) has tests of its own
    /// ([`TestDir::daemon_as_is`]).
    pub fn daemon_at(&self, socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let wants_token = args.iter().any(|a| *a == "--capability-file" || *a == "--capability-fd");
        let mut all: Vec<&str> = if wants_token { vec![] } else { vec!["--no-capability"] };
        all.extend_from_slice(args);
        self.daemon_as_is(socket, &all, env)
    }

    /// Starts a daemon listening on `socket` with exactly `args` (besides
    /// the test roots, the file store and the debug log), through the
    /// launcher the benchmarks share (`tests/common/launch.rs`).
    pub fn daemon_as_is(&self, socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let socket = socket.to_path_buf();
        let log = self.root.join(format!("daemon-{}.log", COUNTER.fetch_add(1, Ordering::SeqCst)));
        let mut cmd = self.command(launch::CREDD);
        // The tests read the log while the daemon runs (and check it for
        // planted secrets): each line is written at once, so what they read
        // is complete. The daemon's default, info lines gathered and written
        // together, has tests of its own (`hardening::audit_lines_*`), which
        // set this again.
        cmd.env("LLXPRT_CREDD_LOG_FLUSH_MS", "0");
        cmd.envs(env.iter().copied()).stderr(Stdio::piped());
        let mut all = vec!["--log-level", "debug"];
        all.extend_from_slice(args);
        let child = launch::start_foreground(cmd, &socket, &log, &all).unwrap_or_else(|e| panic!("{e}"));
        if let Some(i) = args.iter().position(|a| *a == "--capability-file") {
            plant_capability(Path::new(args[i + 1]));
        }
        Daemon { child, socket, log }
    }
}

impl TestDir {
    /// Runs `llxprt-credd -D --store file --socket FRESH ARGS` to its end:
    /// for starts that must fail (a daemon that starts would block here).
    pub fn credd_start_failing(&self, args: &[&str]) -> Output {
        self.command(env!("CARGO_BIN_EXE_llxprt-credd"))
            .args(["-D", "--store", "file", "--socket"])
            .arg(self.socket_path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn llxprt-credd")
    }
}

/// Registers the capability token in an env file the daemon wrote (it
/// never crosses back and is never logged); returns it.
pub fn plant_capability(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("capability file");
    let token = text.trim().strip_prefix("LLXPRT_CAPABILITY_TOKEN=").expect("capability env file");
    plant(token, Exposure::Never)
}

impl Daemon {
    pub fn connect(&self) -> Raw {
        Raw::connect(&self.socket)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, waits, and checks the whole log for planted secrets.
    #[track_caller]
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let status = self.child.wait().unwrap();
        self.check_log();
        status
    }

    /// Fails the test when the log so far holds a planted secret.
    #[track_caller]
    pub fn check_log(&self) {
        check_log(&format!("the daemon log {}", self.log.display()), &self.log_text());
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens the socket and its directories (from `root` down) to every
    /// uid, so that only the daemon's own peer check stands between
    /// another user and it.
    pub fn loosen_socket(&self, root: &Path) {
        use std::os::unix::fs::PermissionsExt;
        for p in [root, self.socket.parent().unwrap()] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    }
}

impl Drop for Daemon {
    /// Kills the daemon, then checks its whole log (not when the test is
    /// already failing: a second panic would abort).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.check_log();
    }
}

/// `payload` as one frame of the protocol: its length (4 bytes, big-endian),
/// then the payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// A raw protocol client: frames by hand, so tests can also send garbage.
pub struct Raw {
    pub stream: std::os::unix::net::UnixStream,
    next: usize,
}

impl Raw {
    pub fn connect(path: &Path) -> Raw {
        let stream = std::os::unix::net::UnixStream::connect(path).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Raw { stream, next: 0 }
    }

    /// A client on a stream the test connected itself.
    pub fn from_stream(stream: std::os::unix::net::UnixStream) -> Raw {
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Raw { stream, next: 0 }
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send_frame(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.send_bytes(&frame(payload))
    }

    /// The next response, or `None` when the daemon closed the connection.
    /// Every frame is checked for secrets that must never cross.
    #[track_caller]
    pub fn recv(&mut self) -> Option<serde_json::Value> {
        use std::io::Read;
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        self.stream.read_exact(&mut body).ok()?;
        check_answer(&String::from_utf8_lossy(&body));
        Some(serde_json::from_slice(&body).expect("daemon sends JSON"))
    }

    /// Whether the daemon has closed the connection (EOF within the timeout).
    pub fn closed(&mut self) -> bool {
        use std::io::Read;
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }

    /// A version-1 handshake (one request at a time, answers in order):
    /// what most tests want from a raw client.
    pub fn handshake_with(&mut self, token: Option<&str>) -> serde_json::Value {
        self.handshake_range(token, 1, 1)
    }

    /// A handshake offering versions `min..=max`; the answer.
    pub fn handshake_range(&mut self, token: Option<&str>, min: u64, max: u64) -> serde_json::Value {
        let mut payload = serde_json::json!({"minVersion": min, "maxVersion": max});
        if let Some(t) = token {
            payload["capabilityToken"] = t.into();
        }
        let frame = serde_json::json!({"v": max, "op": "handshake", "payload": payload});
        self.send_frame(frame.to_string().as_bytes()).unwrap();
        self.recv().expect("handshake answer")
    }

    pub fn handshake(&mut self) -> &mut Self {
        let r = self.handshake_with(None);
        assert_eq!(r["ok"], true, "{r}");
        self
    }

    /// A handshake offering 1..=2, as llxprt-code's client does; version 2
    /// must be settled.
    pub fn handshake_v2(&mut self) -> &mut Self {
        let r = self.handshake_range(None, 1, 2);
        assert_eq!((r["ok"].clone(), r["data"]["version"].clone()), (true.into(), 2.into()), "{r}");
        self
    }

    /// Sends a request with this id without waiting for the answer.
    pub fn send_request(&mut self, id: &str, op: &str, payload: serde_json::Value) {
        let frame = serde_json::json!({"v": 2, "id": id, "op": op, "payload": payload});
        self.send_frame(frame.to_string().as_bytes()).unwrap();
    }

    pub fn request(&mut self, op: &str, payload: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let id = format!("req-{}", self.next);
        let frame = serde_json::json!({"v": 1, "id": id, "op": op, "payload": payload});
        self.send_frame(frame.to_string().as_bytes()).unwrap();
        let r = self.recv().expect("response");
        assert_eq!(r["id"], id.as_str(), "{r}");
        r
    }
}

/// Connects to `socket` as uid/gid 65534 (nobody; through `setpriv`, so
/// the test must run as root), does a version-1 handshake and sends each of
/// `requests` (whole frames) in turn. The answers, the handshake's first;
/// or what went wrong: `connect: ...` when the connection was refused,
/// `closed` when the daemon closed it instead of answering.
pub fn as_nobody(socket: &Path, requests: &[serde_json::Value]) -> Result<Vec<serde_json::Value>, String> {
    // perl-base is essential on Debian, and needs nothing from our home.
    let script = r#"
use IO::Socket::UNIX;
$SIG{PIPE} = "IGNORE";
my $s = IO::Socket::UNIX->new(Peer => shift @ARGV) or die "connect: $!\n";
sub rt { my $b = shift; print $s pack('N', length $b) . $b; my $h; read($s, $h, 4) == 4 or die "closed\n";
         my $n = unpack('N', $h); my $r; read($s, $r, $n) == $n or die "closed\n"; return $r; }
print rt('{"v":1,"op":"handshake","payload":{"minVersion":1,"maxVersion":1}}'), "\n";
print rt($_), "\n" for @ARGV;
"#;
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "perl", "-e", script])
        .arg(socket)
        .args(requests.iter().map(serde_json::Value::to_string))
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux) and perl");
    if !out.status.success() {
        return Err(stderr(&out).trim().to_owned());
    }
    let answers: Vec<serde_json::Value> =
        stdout(&out).lines().map(|l| serde_json::from_str(l).expect("the daemon sends JSON")).collect();
    for a in &answers {
        check_answer(&a.to_string());
    }
    Ok(answers)
}

/// The variables a daemon's `-s` output sets (`NAME='value'; export NAME;`
/// lines), by name.
pub fn sh_vars(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split(';').next()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

/// The first line of `lines` that is a URL (what `llxprt-cred login`
/// shows the user to open).
pub fn first_url(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> String {
    loop {
        let line = lines.next().expect("the URL is shown").unwrap();
        if line.trim_start().starts_with("http") {
            return line.trim().to_owned();
        }
    }
}

/// The canary check itself can fail: markers and planted secrets are
/// found where they may not be, and only there.
#[test]
fn canaries_catch_what_they_should_and_only_that() {
    let key = plant("sk-test-served-key-42", Exposure::Served);
    let verifier = plant("ver-test-never-42", Exposure::Never);
    assert!(
        leaks(&format!(r#"{{"data":{{"key":"{key}"}}}}"#), true).is_empty(),
        "a served key may be answered"
    );
    assert_eq!(leaks(&format!("audit op=get_api_key key={key}"), false).len(), 1, "but never logged");
    assert_eq!(leaks(&format!(r#"{{"error":"{verifier}"}}"#), true).len(), 1, "a verifier never crosses");
    assert_eq!(leaks(r#"{"refresh_token":"rt-CANARY-x"}"#, true).len(), 1, "the CANARY marker never crosses");
    assert_eq!(leaks("key sk-PLANTED-KEY", false).len(), 1, "the PLANTED marker is never logged");
    assert!(leaks("audit conn=1 op=get_token target=anthropic:default outcome=ok", false).is_empty());
    let logged = std::panic::catch_unwind(|| check_log("a test log", "debug: leaked ver-test-never-42"));
    assert!(logged.is_err(), "check_log fails the test");
}

/// The writable memory regions of process `pid` that hold `needle` (read
/// through `/proc/PID/mem`, which needs root or the same uid with ptrace
/// allowed): each as its `/proc/PID/maps` line.
pub fn memory_holding(pid: u32, needle: &[u8]) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("the process's maps");
    let mut mem =
        std::fs::File::open(format!("/proc/{pid}/mem")).expect("the process's memory (run as root)");
    let mut found = Vec::new();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else { continue };
        if !perms.starts_with("rw") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (u64::from_str_radix(start, 16).unwrap(), u64::from_str_radix(end, 16).unwrap());
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        if let Some(at) = buf.windows(needle.len()).position(|w| w == needle) {
            let around = &buf[at.saturating_sub(160)..(at + needle.len() + 160).min(buf.len())];
            found.push(format!("{line}\n    near: {:?}", String::from_utf8_lossy(around)));
        }
    }
    found
}

/// Closes `stream` with a TCP RST (SO_LINGER 0) instead of a FIN once it
/// is dropped: a provider or token endpoint that resets mid-answer.
pub fn reset_on_close(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor and a correctly sized `linger` value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

/// A TCP server on 127.0.0.1 (a free port) for the fake providers: every
/// connection goes to `serve` on a thread of its own, with a flag that is
/// set once the server is dropped (for answers that hang until then).
pub struct LoopbackServer {
    /// `127.0.0.1:PORT`.
    pub authority: String,
    stopping: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LoopbackServer {
    pub fn start(
        serve: impl Fn(std::net::TcpStream, &std::sync::atomic::AtomicBool) + Send + Sync + 'static,
    ) -> LoopbackServer {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let authority = listener.local_addr().unwrap().to_string();
        let stopping = Arc::new(AtomicBool::new(false));
        let (stop, serve) = (stopping.clone(), Arc::new(serve));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (stop, serve) = (stop.clone(), serve.clone());
                std::thread::spawn(move || serve(stream, &stop));
            }
        });
        LoopbackServer { authority, stopping }
    }
}

impl Drop for LoopbackServer {
    /// Stops accepting (a connection of its own wakes the accept loop) and
    /// sets the flag the connections still being served see.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(self.authority.as_str());
    }
}

/// Whether process `pid` is running (it exists and is not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// Polls `done` every 10 ms for up to `within`; whether it came true.
pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
