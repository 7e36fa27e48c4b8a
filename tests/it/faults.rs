//! The fault suite: real processes, a real keyring and a real fake OAuth
//! server, hurt on purpose. The daemon and `llxprt-cred` killed with
//! SIGKILL mid-refresh and mid-write, gnome-keyring killed or locked while
//! the daemon serves, the fallback directory's disk full, a provider that
//! resets the connection mid-answer, and the wall clock jumping.
//!
//! What every case shows: each request is answered (a value or a clean
//! error code) within a bound, nothing already stored is damaged or lost
//! (above all, no refresh token), and whatever a dead process left behind
//! (lock files, temp files) neither blocks the next writer nor reads as data.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_provider::{FakeProvider, Reply};
use crate::harness::*;
use crate::host_store::*;
use crate::needs::*;
use llxprt_credd::store::{KeyStore, TokenStore};

const PLANTED: &str = "rt-CANARY-planted";

/// An Anthropic-shaped token expiring in `expires_in` seconds, with the planted refresh token.
fn token(access: &str, expires_in: f64) -> String {
    oauth_token(access, PLANTED, expires_in).to_string()
}

fn stored_key(dir: &TestDir, name: &str) -> Option<String> {
    dir.host_store().keys.get_key(name).unwrap().map(|s| s.expose().to_owned())
}

/// A small deterministic generator for the kill moments; the seed is
/// printed so a failing run can be replayed.
struct Moments(u64);

impl Moments {
    fn new() -> Moments {
        let seed = std::env::var("FAULTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("kill moments: FAULTS_SEED={seed}");
        Moments(seed)
    }

    fn below_ms(&mut self, ms: u64) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        Duration::from_millis(self.0 % ms)
    }
}

fn sigkill(pid: u32) {
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
}

/// Files under `dir` (recursively) whose names end with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_ending(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}

/// A daemon whose built-in providers point at `fake`.
fn refresh_daemon(dir: &TestDir, fake: &FakeProvider, args: &[&str], env: &[(&str, &str)]) -> Daemon {
    let url = fake.token_url();
    let mut all = vec![
        ("LLXPRT_CREDD_ANTHROPIC_TOKEN_URL", url.as_str()),
        ("LLXPRT_CREDD_CODEX_TOKEN_URL", url.as_str()),
        ("LLXPRT_CREDD_TIME_SCALE", "0.01"),
    ];
    all.extend_from_slice(env);
    let mut a = vec!["--permit", "refresh,write", "--allow", "anthropic"];
    a.extend_from_slice(args);
    dir.daemon_with_env(&a, &all)
}

fn request_frame(id: &str, op: &str, payload: Value) -> Vec<u8> {
    json!({"v": 1, "id": id, "op": op, "payload": payload}).to_string().into_bytes()
}

/// One request on a fresh connection, with how long the answer took.
fn ask(d: &Daemon, op: &str, payload: Value) -> (Value, Duration) {
    let mut c = d.connect();
    c.handshake();
    let started = Instant::now();
    let r = c.request(op, payload);
    (r, started.elapsed())
}

/// Whether an answer is a value or a clean, coded error.
#[track_caller]
fn assert_clean(r: &Value) {
    let clean = r["ok"] == true
        || (r["ok"] == false
            && r["code"].as_str().is_some_and(|c| !c.is_empty())
            && r["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(clean, "neither a value nor a clean error: {r}");
    assert!(!r.to_string().contains("CANARY"), "an answer leaked a refresh token: {r}");
}

// ---------------------------------------------------------------------------
// 1. SIGKILL during a refresh

#[test]
fn daemon_killed_mid_refresh_leaves_a_lock_the_next_daemon_recovers() {
    let dir = TestDir::new("ft-kill-refresh");
    let fake = FakeProvider::start();
    fake.script([Reply::Hang]);
    dir.import_token("anthropic", &token("at-planted", -10.0));
    let mut first = refresh_daemon(&dir, &fake, &[], &[]);
    let mut c = first.connect();
    c.handshake();
    c.send_frame(&request_frame("r1", "get_token", json!({"provider": "anthropic"}))).unwrap();
    assert!(fake.wait_for(1, Duration::from_secs(10)), "the refresh reached the provider");
    // the refresh is in flight: the daemon holds llxprt-code's refresh lock
    let lock = dir.log().join("oauth/locks/anthropic-refresh.lock");
    let record: Value =
        serde_json::from_slice(&std::fs::read(&lock).expect("the refresh lock is held")).unwrap();
    assert_eq!(record["pid"], first.child.id());
    sigkill(first.child.id());
    assert_eq!(first.child.wait().unwrap().signal(), Some(9));
    assert!(c.recv().is_none(), "the killed daemon's client gets a closed connection, not an answer");
    assert!(lock.exists(), "SIGKILL left the dead owner's lock behind");
    assert_eq!(dir.stored_token("anthropic", None).unwrap()["refresh_token"], PLANTED, "nothing lost yet");
    // a second daemon on the same store takes the dead owner's lock over and refreshes
    let second = refresh_daemon(&dir, &fake, &[], &[]);
    let (r, took) = ask(&second, "get_token", json!({"provider": "anthropic"}));
    assert_eq!(r["data"]["access_token"], "at-refreshed-2", "{r}");
    assert!(took < Duration::from_secs(3), "the dead owner's lock was recovered at once: {took:?}");
    assert_clean(&r);
    let calls = fake.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].field("refresh_token").as_deref(),
        Some(PLANTED),
        "the stored refresh token was intact"
    );
    let s = dir.stored_token("anthropic", None).unwrap();
    assert_eq!(
        (s["access_token"].as_str(), s["refresh_token"].as_str()),
        (Some("at-refreshed-2"), Some("rt-CANARY-rotated-2")),
        "the rotated refresh token was stored"
    );
    assert!(!lock.exists(), "the second daemon released the lock it took over");
    assert!(!second.log_text().contains("CANARY"));
}

// ---------------------------------------------------------------------------
// 2. SIGKILL during a store write, many times at random moments

/// Spawns `llxprt-cred --store file ARGS` with `stdin`, kills it after
/// `after`; whether the kill landed before it exited.
fn kill_cred_after(dir: &TestDir, args: &[&str], stdin: &str, after: Duration) -> bool {
    let mut cmd = dir.cred(None);
    cmd.args(["--store", "file"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    std::thread::sleep(after);
    sigkill(child.id());
    child.wait().unwrap().signal() == Some(9)
}

/// The invariant after a killed write: the entry reads back as the old or
/// the new value (never absent, never corrupt), and the rest of the token
/// (the refresh token) is intact.
#[track_caller]
fn check_old_or_new(now: &Option<String>, old: &str, new: &str, what: &str) -> String {
    let v = now.clone().unwrap_or_else(|| panic!("{what} vanished (torn or removed)"));
    assert!(v == old || v == new, "{what} reads {v:?}, neither the old {old:?} nor the new {new:?}");
    v
}

/// Asserts the fallback directories hold only whole entries: every `.enc`
/// decrypts (the store lists exactly the entries written), leftovers are
/// temp files the store ignores, and no `.lock` file is left behind.
fn assert_no_debris(dir: &TestDir, keys: &[&str], tokens: &[&str]) {
    let h = dir.host_store();
    assert_eq!(h.keys.list_keys().unwrap(), keys, "temp files are not listed as keys");
    let listed: Vec<String> = h.tokens.list_providers().unwrap();
    assert_eq!(listed, tokens, "temp files are not listed as tokens");
    for d in [dir.keys_dir(), dir.oauth_dir()] {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let name = e.file_name().into_string().unwrap();
            assert!(name.ends_with(".enc") || name.contains(".enc.tmp."), "unexpected file {name} in {d:?}");
        }
    }
    let temps =
        files_ending(&dir.data(), "").into_iter().filter(|p| p.to_string_lossy().contains(".tmp.")).count();
    eprintln!("temp files left by killed writers (ignored by the store): {temps}");
    let locks = files_ending(&dir.log(), ".lock");
    assert!(locks.is_empty(), "lock files left behind after the last writer: {locks:?}");
}

#[test]
fn cli_writers_killed_at_random_moments_never_tear_an_entry() {
    let dir = TestDir::new("ft-kill-cli");
    // How long a writer lives on this machine (40 ms to 200 ms, depending on
    // the machine): the kill moments are spread over it.
    let started = Instant::now();
    dir.set_key("HOT", "value-0");
    let life_ms = (started.elapsed().as_millis() as u64).max(20);
    dir.import_token("anthropic", &token("at-0", 3600.0));
    let mut moments = Moments::new();
    let (mut key, mut access) = ("value-0".to_owned(), "at-0".to_owned());
    let (mut landed, mut written) = (0, 0);
    for i in 1..=30 {
        // scrypt and the write sit in the second half of a writer's life;
        // a few moments fall after its end (the writer finishes unkilled)
        let after = moments.below_ms(life_ms * 6 / 5);
        if i % 2 == 0 {
            let new = format!("value-{i}");
            landed += usize::from(kill_cred_after(&dir, &["key", "set", "HOT"], &new, after));
            key = check_old_or_new(&stored_key(&dir, "HOT"), &key, &new, "key HOT");
            written += usize::from(key == new);
        } else {
            let new = format!("at-{i}");
            let body =
                json!({"access_token": new, "expiry": (now() + 3600.0).floor(), "token_type": "Bearer"});
            landed += usize::from(kill_cred_after(
                &dir,
                &["token", "import", "anthropic"],
                &body.to_string(),
                after,
            ));
            let t = dir.stored_token("anthropic", None).expect("token vanished (torn or removed)");
            access = check_old_or_new(&t["access_token"].as_str().map(str::to_owned), &access, &new, "token");
            written += usize::from(access == new);
            assert_eq!(t["refresh_token"], PLANTED, "a killed merge lost the refresh token");
        }
    }
    eprintln!("{landed} of 30 writers were killed before they exited; {written} of 30 values were stored");
    assert!(landed >= 5, "too few kills landed to prove anything ({landed})");
    // whatever the dead writers left, the next ones are not blocked
    let started = Instant::now();
    dir.set_key("HOT", "value-final");
    dir.import_token(
        "anthropic",
        &json!({"access_token": "at-final", "expiry": 1999999999, "token_type": "Bearer"}).to_string(),
    );
    assert!(started.elapsed() < Duration::from_secs(4), "blocked by a dead writer: {:?}", started.elapsed());
    assert_eq!(stored_key(&dir, "HOT").as_deref(), Some("value-final"));
    let t = dir.stored_token("anthropic", None).unwrap();
    assert_eq!((t["access_token"].as_str(), t["refresh_token"].as_str()), (Some("at-final"), Some(PLANTED)));
    assert_no_debris(&dir, &["HOT"], &["anthropic"]);
}

#[test]
fn daemon_killed_at_random_moments_during_save_token_never_tears_or_loses() {
    let dir = TestDir::new("ft-kill-daemon");
    dir.import_token("anthropic", &token("at-0", 3600.0));
    let mut moments = Moments::new();
    let mut access = "at-0".to_owned();
    let (mut landed, mut written) = (0, 0);
    for i in 1..=10 {
        let mut d = dir.daemon(&["--permit", "write", "--allow", "anthropic"]);
        let mut c = d.connect();
        c.handshake();
        let new = format!("at-{i}");
        let t = json!({"access_token": new, "expiry": (now() + 3600.0).floor(), "token_type": "Bearer",
            "refresh_token": "rt-CANARY-from-the-sandbox"});
        c.send_frame(&request_frame("s", "save_token", json!({"provider": "anthropic", "token": t})))
            .unwrap();
        std::thread::sleep(moments.below_ms(150));
        sigkill(d.child.id());
        let _ = d.child.wait();
        landed += usize::from(c.recv().is_none());
        let s = dir.stored_token("anthropic", None).expect("token vanished (torn or removed)");
        access = check_old_or_new(&s["access_token"].as_str().map(str::to_owned), &access, &new, "token");
        written += usize::from(access == new);
        assert_eq!(s["refresh_token"], PLANTED, "a killed save lost (or replaced) the refresh token");
    }
    eprintln!("{landed} of 10 saves were killed before their answer; {written} of 10 were stored");
    assert!(landed >= 3, "too few kills landed to prove anything ({landed})");
    let d = dir.daemon(&["--permit", "write", "--allow", "anthropic"]);
    let final_token =
        json!({"access_token": "at-final", "expiry": (now() + 3600.0).floor(), "token_type": "Bearer"});
    let (r, took) = ask(&d, "save_token", json!({"provider": "anthropic", "token": final_token}));
    assert_eq!(r["ok"], true, "{r}");
    assert!(took < Duration::from_secs(3), "blocked by a dead daemon's lock: {took:?}");
    assert_eq!(dir.stored_token("anthropic", None).unwrap()["refresh_token"], PLANTED);
    drop(d);
    assert_no_debris(&dir, &[], &["anthropic"]);
}

// ---------------------------------------------------------------------------
// 4. The fallback directory's disk full

/// A small tmpfs mounted over a directory; unmounted on drop, even when
/// the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(at.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the filesystem holding `dir` until ENOSPC; the filler's path.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    let _ = f.sync_all();
    // the last partial page too
    while f.write(&[0u8]).is_ok_and(|n| n == 1) {}
    filler
}

#[test]
fn a_full_disk_fails_writes_cleanly_and_damages_nothing() {
    if !require_root("to mount a small tmpfs") {
        return;
    }
    let dir = TestDir::new("ft-disk-full");
    let _mounted = Tmpfs::mount(&dir.data(), "256k").unwrap_or_else(|e| panic!("cannot mount a tmpfs: {e}"));
    let file = |args: &[&str], stdin: &str| dir.run(None, &[&["--store", "file"], args].concat(), stdin);
    ok(file(&["key", "set", "K"], "key-before"));
    ok(file(&["token", "import", "anthropic"], &token("at-before", 3600.0)));
    let before: Vec<(PathBuf, Vec<u8>)> =
        [dir.keys_dir().join("K.enc"), dir.oauth_dir().join("anthropic%3Adefault.enc")]
            .into_iter()
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect();
    let d = dir.daemon(&["--permit", "write", "--allow", "anthropic", "--allow-key", "K"]);
    let filler = fill(&dir.data());
    // llxprt-cred: a clean error naming the cause, exit status 1, no panic
    for (args, stdin) in [
        (&["key", "set", "K"][..], "key-after"),
        (&["key", "set", "NEW"][..], "new-key"),
        (
            &["token", "import", "anthropic"][..],
            r#"{"access_token":"at-after","expiry":1999999999,"token_type":"Bearer"}"#,
        ),
    ] {
        let out = file(args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?} on a full disk: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("No space left on device") && !err.contains("panicked"), "{args:?}: {err}");
    }
    // the daemon: a clean, coded error for the write; reads still served
    let t = json!({"access_token": "at-after", "expiry": (now() + 3600.0).floor(), "token_type": "Bearer"});
    let (r, took) = ask(&d, "save_token", json!({"provider": "anthropic", "token": t}));
    assert_eq!(r["ok"], false, "{r}");
    assert_clean(&r);
    assert!(took < Duration::from_secs(3), "{took:?}");
    eprintln!("save_token on a full disk: {r}");
    assert_eq!(ask(&d, "get_token", json!({"provider": "anthropic"})).0["data"]["access_token"], "at-before");
    assert_eq!(ask(&d, "get_api_key", json!({"name": "K"})).0["data"]["key"], "key-before");
    // what was stored before is byte for byte intact, and no temp file is left
    for (p, bytes) in &before {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{p:?} changed");
    }
    assert_eq!(stored_key(&dir, "K").as_deref(), Some("key-before"));
    assert_eq!(dir.stored_token("anthropic", None).unwrap()["refresh_token"], PLANTED);
    let temps: Vec<_> =
        files_ending(&dir.data(), "").into_iter().filter(|p| p.to_string_lossy().contains(".tmp.")).collect();
    assert!(temps.is_empty(), "a failed write left temp files: {temps:?}");
    assert!(!dir.keys_dir().join("NEW.enc").exists());
    // space again: writes work again
    std::fs::remove_file(filler).unwrap();
    ok(file(&["key", "set", "K"], "key-after"));
    assert_eq!(stored_key(&dir, "K").as_deref(), Some("key-after"));
    let (r, _) = ask(&d, "save_token", json!({"provider": "anthropic", "token": t}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(dir.stored_token("anthropic", None).unwrap()["refresh_token"], PLANTED);
}

// ---------------------------------------------------------------------------
// 3. gnome-keyring killed (and restarted) or locked while the daemon serves

const KEYRING_TIMEOUT_MS: &str = "700";
/// Bound on any one answer while the keyring misbehaves: the keyring
/// timeout plus the slack of a loaded machine.
const ANSWER_BOUND: Duration = Duration::from_secs(4);

fn kill_keyring(kr: &PrivateKeyring) {
    let pid = kr.daemon_pid();
    sigkill(pid as u32);
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)), "gnome-keyring survived SIGKILL");
}

/// Restarts gnome-keyring as a session would: any instance D-Bus activated
/// meanwhile (locked: nobody gave it the password) is stopped, and a new one
/// is unlocked with the password over the same keyring files.
fn restart_keyring(kr: &PrivateKeyring) {
    if let Some(pid) = kr.secrets_owner() {
        sigkill(pid as u32);
        std::thread::sleep(Duration::from_millis(200));
    }
    kr.unlock();
    let deadline = Instant::now() + Duration::from_secs(10);
    while kr.secrets_owner().is_none() {
        assert!(Instant::now() < deadline, "gnome-keyring did not come back");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asks `op` and checks the answer is a value or a clean error in time;
/// the answer.
#[track_caller]
fn ask_in_time(d: &Daemon, what: &str, op: &str, payload: Value) -> Value {
    let (r, took) = ask(d, op, payload);
    eprintln!("{what}: {op} -> {r} in {took:?}");
    assert_clean(&r);
    assert!(took < ANSWER_BOUND, "{what}: {op} took {took:?}");
    r
}

fn keyring_daemon(dir: &TestDir, kr: &PrivateKeyring, store: &str) -> Daemon {
    dir.daemon_with_env(
        &[
            "--store",
            store,
            "--permit",
            "write",
            "--allow",
            "anthropic",
            "--allow-key",
            "RING",
            "--allow-key",
            "RING2",
        ]
        .iter()
        .chain(&["--allow-key", "FILEKEY"])
        .copied()
        .collect::<Vec<_>>(),
        &[
            ("DBUS_SESSION_BUS_ADDRESS", kr.address.as_str()),
            ("LLXPRT_CREDD_KEYRING_TIMEOUT_MS", KEYRING_TIMEOUT_MS),
        ],
    )
}

/// Stores RING and RING2 and a token in the keyring, FILEKEY in the file.
fn seed_keyring(dir: &TestDir, kr: &PrivateKeyring) {
    let bus = Some(kr.address.as_str());
    ok(dir.run(bus, &["key", "set", "RING"], "ring-value"));
    ok(dir.run(bus, &["key", "set", "RING2"], "ring2-value"));
    ok(dir.run(bus, &["token", "import", "anthropic"], &token("at-ring", 3600.0)));
    ok(dir.run(bus, &["--store", "file", "key", "set", "FILEKEY"], "file-value"));
    assert!(!dir.keys_dir().join("RING.enc").exists(), "RING lives in the keyring");
}

/// What was in the keyring before the fault is still there, whole.
fn assert_keyring_intact(kr: &PrivateKeyring) {
    let lookup = |service: &str, user: &str| {
        stdout(&kr.secret_tool(&["lookup", "service", service, "username", user], None))
    };
    assert_eq!(lookup("llxprt-code-provider-keys", "RING"), "ring-value");
    assert_eq!(lookup("llxprt-code-provider-keys", "RING2"), "ring2-value");
    let t: Value = serde_json::from_str(&lookup("llxprt-code-oauth", "anthropic:default"))
        .expect("the token item is JSON");
    assert_eq!((t["access_token"].as_str(), t["refresh_token"].as_str()), (Some("at-ring"), Some(PLANTED)));
}

fn keyring_setup(name: &str) -> Option<(TestDir, PrivateKeyring)> {
    let (dir, kr) = keyring_test(name)?;
    seed_keyring(&dir, &kr);
    Some((dir, kr))
}

#[test]
fn keyring_killed_and_restarted_under_an_auto_daemon() {
    let Some((dir, kr)) = keyring_setup("ft-kr-kill-auto") else { return };
    let d = keyring_daemon(&dir, &kr, "auto");
    assert_eq!(
        ask_in_time(&d, "healthy", "get_api_key", json!({"name": "RING"}))["data"]["key"],
        "ring-value"
    );
    assert_eq!(
        ask_in_time(&d, "healthy", "get_token", json!({"provider": "anthropic"}))["data"]["access_token"],
        "at-ring"
    );
    kill_keyring(&kr);
    // every request is answered, in time: a value, or a clean error
    for _ in 0..2 {
        ask_in_time(&d, "keyring dead", "get_api_key", json!({"name": "RING2"}));
        ask_in_time(&d, "keyring dead", "get_api_key", json!({"name": "RING"}));
        ask_in_time(&d, "keyring dead", "get_token", json!({"provider": "anthropic"}));
    }
    let r = ask_in_time(&d, "keyring dead", "get_api_key", json!({"name": "FILEKEY"}));
    assert_eq!(r["data"]["key"], "file-value", "the file store still answers: {r}");
    restart_keyring(&kr);
    assert_keyring_intact(&kr);
    for op in [("get_api_key", json!({"name": "RING"})), ("get_token", json!({"provider": "anthropic"}))] {
        ask_in_time(&d, "keyring restarted", op.0, op.1);
    }
    // auto latched onto the file store when the D-Bus-activated stand-in
    // answered LOCKED (llxprt-code's rule): RING2 is then not found
    ask_in_time(&d, "keyring restarted", "get_api_key", json!({"name": "RING2"}));
    assert_eq!(
        ask_in_time(&d, "keyring restarted", "get_api_key", json!({"name": "FILEKEY"}))["data"]["key"],
        "file-value"
    );
    // a fresh process reads everything where it was
    let bus = Some(kr.address.as_str());
    assert_eq!(ok(dir.run(bus, &["key", "get", "RING"], "")), "ring-value\n");
    assert_eq!(ok(dir.run(bus, &["key", "get", "FILEKEY"], "")), "file-value\n");
    assert!(!d.log_text().contains("CANARY"));
}

#[test]
fn keyring_killed_under_a_keyring_daemon_gives_clean_errors_and_no_damage() {
    let Some((dir, kr)) = keyring_setup("ft-kr-kill-forced") else { return };
    let d = keyring_daemon(&dir, &kr, "keyring");
    assert_eq!(
        ask_in_time(&d, "healthy", "get_api_key", json!({"name": "RING"}))["data"]["key"],
        "ring-value"
    );
    kill_keyring(&kr);
    let r = ask_in_time(&d, "keyring dead", "get_api_key", json!({"name": "RING2"}));
    assert_eq!(r["ok"], false, "an uncached read cannot be served from a dead keyring: {r}");
    ask_in_time(&d, "keyring dead", "get_token", json!({"provider": "anthropic"}));
    let t = json!({"access_token": "at-new", "expiry": (now() + 3600.0).floor(), "token_type": "Bearer"});
    let r = ask_in_time(&d, "keyring dead", "save_token", json!({"provider": "anthropic", "token": t}));
    assert!(
        !dir.oauth_dir().join("anthropic%3Adefault.enc").exists(),
        "keyring mode never writes the file: {r}"
    );
    restart_keyring(&kr);
    if r["ok"] == false {
        assert_keyring_intact(&kr);
    }
    // the restarted keyring serves the still-running daemon again, at once
    let r = ask_in_time(&d, "keyring restarted", "get_api_key", json!({"name": "RING2"}));
    assert_eq!(r["data"]["key"], "ring2-value", "keyring mode recovers without a restart: {r}");
    let t = json!({"access_token": "at-after", "expiry": (now() + 3600.0).floor(), "token_type": "Bearer"});
    let r = ask_in_time(&d, "keyring restarted", "save_token", json!({"provider": "anthropic", "token": t}));
    assert_eq!(r["ok"], true, "{r}");
    let item =
        kr.secret_tool(&["lookup", "service", "llxprt-code-oauth", "username", "anthropic:default"], None);
    let v: Value = serde_json::from_str(&stdout(&item)).unwrap();
    assert_eq!((v["access_token"].as_str(), v["refresh_token"].as_str()), (Some("at-after"), Some(PLANTED)));
    let bus = Some(kr.address.as_str());
    assert_eq!(ok(dir.run(bus, &["--store", "keyring", "key", "get", "RING"], "")), "ring-value\n");
}

#[test]
fn collection_locked_mid_run_auto_falls_back_and_keyring_mode_says_locked() {
    let Some((dir, kr)) = keyring_setup("ft-kr-lock") else { return };
    let auto = keyring_daemon(&dir, &kr, "auto");
    let forced = keyring_daemon(&dir, &kr, "keyring");
    for d in [&auto, &forced] {
        assert_eq!(
            ask_in_time(d, "unlocked", "get_api_key", json!({"name": "RING"}))["data"]["key"],
            "ring-value"
        );
    }
    kr.lock_collection();
    // auto: the file store answers; a write goes to the file, never to a prompt
    let r = ask_in_time(&auto, "locked, auto", "get_api_key", json!({"name": "FILEKEY"}));
    assert_eq!(r["data"]["key"], "file-value");
    ask_in_time(&auto, "locked, auto", "get_api_key", json!({"name": "RING2"}));
    let t = json!({"access_token": "at-while-locked", "expiry": (now() + 3600.0).floor(), "token_type": "Bearer"});
    let r = ask_in_time(&auto, "locked, auto", "save_token", json!({"provider": "anthropic", "token": t}));
    assert_eq!(r["ok"], true, "auto saves to the file while the collection is locked: {r}");
    assert!(dir.oauth_dir().join("anthropic%3Adefault.enc").exists());
    // keyring mode: a clean error (the wire keeps store details to the log), in time
    for _ in 0..2 {
        let r = ask_in_time(&forced, "locked, keyring", "get_api_key", json!({"name": "RING2"}));
        assert_eq!(r["code"], "INTERNAL_ERROR", "{r}");
    }
    assert!(forced.log_text().contains("locked (LOCKED)"), "the log says why");
    // unlocked again (a restart with the password, as a session unlock does):
    // nothing in the keyring was touched, and keyring mode serves again at once
    restart_keyring(&kr);
    assert_keyring_intact(&kr);
    let r = ask_in_time(&forced, "unlocked again, keyring", "get_api_key", json!({"name": "RING2"}));
    assert_eq!(r["data"]["key"], "ring2-value", "keyring mode recovers without a restart: {r}");
    // auto latched onto the file store for the rest of its life (llxprt-code's rule)
    ask_in_time(&auto, "unlocked again, auto", "get_api_key", json!({"name": "RING2"}));
    assert!(!auto.log_text().contains("CANARY") && !forced.log_text().contains("CANARY"));
}

// ---------------------------------------------------------------------------
// 5. A token endpoint that breaks the answer itself (what FakeProvider's
//    scripts cannot: a reset or a short body mid-response, HTML with 200)

#[derive(Clone, Copy, Debug)]
enum Broken {
    /// Headers and part of the body, then a TCP reset.
    ResetMidBody,
    /// Headers promising more body than is sent, then a clean close.
    ShortBody,
    /// 200 with an HTML page (a captive portal, a proxy's error page).
    Html200,
}

/// A token endpoint on 127.0.0.1 that answers every call `how` (it
/// stops when the server is dropped); its URL and the number of calls so
/// far.
fn broken_endpoint(how: Broken) -> (LoopbackServer, String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Read;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = LoopbackServer::start(move |mut stream, _| {
        counter.fetch_add(1, Ordering::SeqCst);
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8192];
        let _ = stream.read(&mut buf);
        let partial = r#"{"access_token":"at-torn","refresh_token":"rt-CANARY-torn","#;
        let answer = match how {
            Broken::ResetMidBody | Broken::ShortBody => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{partial}"
            ),
            Broken::Html200 => {
                let body = "<!DOCTYPE html><html><body>Sign in to the Wi-Fi rt-CANARY-portal</body></html>";
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
        };
        let _ = stream.write_all(answer.as_bytes());
        let _ = stream.flush();
        if let Broken::ResetMidBody = how {
            std::thread::sleep(Duration::from_millis(50));
            reset_on_close(&stream);
        }
    });
    let url = format!("http://{}/oauth/token", server.authority);
    (server, url, calls)
}

#[test]
fn a_token_endpoint_that_breaks_mid_answer_is_a_clean_error_and_keeps_the_refresh_token() {
    for (how, max_calls) in [(Broken::ResetMidBody, 3), (Broken::ShortBody, 3), (Broken::Html200, 1)] {
        let dir = TestDir::new("ft-broken-answer");
        let (_endpoint, url, calls) = broken_endpoint(how);
        dir.import_token("anthropic", &token("at-planted", -10.0));
        let d = dir.daemon_with_env(
            &["--allow", "anthropic"],
            &[("LLXPRT_CREDD_ANTHROPIC_TOKEN_URL", url.as_str()), ("LLXPRT_CREDD_TIME_SCALE", "0.01")],
        );
        let (r, took) = ask(&d, "get_token", json!({"provider": "anthropic"}));
        let n = calls.load(std::sync::atomic::Ordering::SeqCst);
        eprintln!("{how:?}: {r} after {n} calls in {took:?}");
        assert_clean(&r);
        assert_eq!(r["code"], "INTERNAL_ERROR", "{how:?}: {r}");
        assert!(r["error"].as_str().unwrap().starts_with("Token refresh failed"), "{how:?}: {r}");
        assert!((1..=max_calls).contains(&n), "{how:?}: {n} calls");
        assert!(took < Duration::from_secs(5), "{how:?}: {took:?}");
        let s = dir.stored_token("anthropic", None).unwrap();
        assert_eq!(
            (s["access_token"].as_str(), s["refresh_token"].as_str()),
            (Some("at-planted"), Some(PLANTED))
        );
        assert!(!d.log_text().contains("CANARY"), "{how:?}: the log repeated the broken body");
    }
}

// ---------------------------------------------------------------------------
// 6. The wall clock jumping backward and forward under the daemon
//    (libfaketime; the monotonic clock is left alone, as on a real host)

#[test]
fn wall_clock_jumps_backward_and_forward() {
    let dir = TestDir::new("ft-clock");
    let Some(clock) = FakeWallClock::new(&dir) else { return };
    let fake = FakeProvider::start();
    dir.import_token("anthropic", &token("at-planted", 3600.0));
    let d = refresh_daemon(&dir, &fake, &[], &clock.env());
    let get = || ask(&d, "get_token", json!({"provider": "anthropic"})).0;
    assert_eq!(get()["data"]["access_token"], "at-planted");
    // a day backward: the token looks longer-lived; served as is, no refresh, no panic
    clock.set("-1d");
    let r = get();
    assert_eq!(r["data"]["access_token"], "at-planted", "{r}");
    assert_eq!(fake.count(), 0);
    // two hours forward (a suspend): the token looks expired and is refreshed on read,
    // its new expiry counted from the daemon's (jumped) clock
    clock.set("+2h");
    let r = get();
    assert_eq!(r["data"]["access_token"], "at-refreshed-1", "{r}");
    let lifetime = r["data"]["expiry"].as_f64().unwrap() - (now() + 7200.0);
    assert!((3590.0..3610.0).contains(&lifetime), "expiry from the jumped clock: {lifetime}");
    // back again, past the (scaled, monotonic) cooldown: a token expired by the
    // daemon's clock is refreshed, not refused as cooling down for hours
    clock.set("-1d");
    std::thread::sleep(Duration::from_millis(400));
    let h = dir.host_store();
    let mut m = h.tokens.get_token("anthropic", None).unwrap().unwrap().fields().clone();
    m["expiry"] = json!((now() - 86400.0 - 10.0).floor());
    h.tokens.save_token("anthropic", None, &llxprt_credd::token::OAuthToken::from_map(m).unwrap()).unwrap();
    let r = get();
    assert_eq!(r["data"]["access_token"], "at-refreshed-2", "{r}");
    assert_eq!(fake.count(), 2);
    assert_eq!(fake.calls()[1].field("refresh_token").as_deref(), Some("rt-CANARY-rotated-1"));
    assert_eq!(dir.stored_token("anthropic", None).unwrap()["refresh_token"], "rt-CANARY-rotated-2");
    assert!(!d.log_text().contains("CANARY"));
}
