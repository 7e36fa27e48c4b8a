//! The trust boundary (SPEC §11), tried as a compromised sandbox would:
//! every op class refused by default with the store untouched and
//! admitted by exactly its `--permit`; saves that cannot re-point or grow
//! the host's record; logins that cannot replace another account;
//! configuration the sandbox can write that is never read; a SIGHUP that
//! only narrows; a capability token by default; a default socket
//! directory another user cannot block; `--allow-uid` that really admits;
//! and silent connections that cannot hold the slots.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake_provider::{FakeProvider, Reply};
use crate::harness::*;
use crate::host_store::*;
use crate::needs::*;

const USERCODE: &str = "/api/accounts/deviceauth/usercode";
const DEVICE_TOKEN: &str = "/api/accounts/deviceauth/token";

/// Every file under the data directory with its bytes.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    out
}

fn id_token_of(account: &str) -> String {
    jwt(json!({"https://api.openai.com/auth": {"chatgpt_account_id": account}}))
}

/// A store with an OAuth login (refresh token planted) and an API key.
fn seeded(name: &str) -> TestDir {
    let dir = TestDir::new(name);
    let token = json!({"access_token":"at-PLANTED-host","refresh_token":"rt-CANARY-host",
        "expiry": (now() + 7200.0).floor(),"token_type":"Bearer","account_id":"acct-host",
        "id_token":"host.id.token","resource_url":"https://host.example"});
    dir.import_token("claudecode", &token.to_string());
    dir.import_token("codex", &token.to_string());
    dir.set_key("OPENAI", "sk-PLANTED-trust");
    dir
}

const SCOPE: &[&str] = &["--allow", "claudecode", "--allow", "codex", "--allow-key", "OPENAI"];

/// One request of each class beyond reading.
fn mutating_requests() -> Vec<(&'static str, &'static str, Value)> {
    let token = json!({"access_token":"at-sandbox","expiry": (now() + 600.0).floor(),"token_type":"Bearer"});
    vec![
        ("write", "save_token", json!({"provider":"claudecode","token":token})),
        ("write", "remove_token", json!({"provider":"claudecode"})),
        ("refresh", "refresh_token", json!({"provider":"claudecode"})),
        ("login", "oauth_initiate", json!({"provider":"claudecode"})),
        ("login", "oauth_exchange", json!({"session_id":"00","code":"c#s"})),
        ("login", "oauth_poll", json!({"session_id":"00"})),
        ("login", "oauth_cancel", json!({"session_id":"00"})),
    ]
}

#[test]
fn every_class_is_forbidden_by_default_and_admitted_by_exactly_its_permit() {
    let dir = seeded("tb-permit");
    let before = snapshot(&dir.data());
    let d = dir.daemon(SCOPE);
    let mut c = d.connect();
    c.handshake();
    for (class, op, payload) in mutating_requests() {
        let r = c.request(op, payload);
        assert_eq!(r["code"], "FORBIDDEN", "{op}: {r}");
        assert_eq!(
            r["error"],
            format!(
                "Operation {op} is not permitted for the sandbox; the host can allow it with --permit {class}"
            )
        );
    }
    // reads still work, and validation comes before the permission check
    assert_eq!(c.request("get_token", json!({"provider":"claudecode"}))["ok"], true);
    assert_eq!(c.request("get_api_key", json!({"name":"OPENAI"}))["ok"], true);
    let bad = c.request("save_token", json!({"provider":"../x","token":{}}));
    assert_eq!(bad["code"], "INVALID_REQUEST", "{bad}");
    drop(c);
    drop(d);
    assert!(before == snapshot(&dir.data()), "a refused request changed the store");

    for permitted in ["write", "refresh", "login"] {
        let d = dir.daemon(&[SCOPE, &["--permit", permitted]].concat());
        let mut c = d.connect();
        c.handshake();
        for (class, op, payload) in mutating_requests() {
            if op == "remove_token" {
                continue; // keep the login for the next rounds
            }
            let r = c.request(op, payload);
            if class == permitted {
                assert_ne!(r["code"], "FORBIDDEN", "--permit {permitted} admits {op}: {r}");
            } else {
                assert_eq!(r["code"], "FORBIDDEN", "--permit {permitted} does not admit {op}: {r}");
            }
        }
        assert!(d.log_text().contains(&format!("sandbox may read,{permitted}")), "{}", d.log_text());
    }
    let d = dir.daemon(&[SCOPE, &["--permit", "write"]].concat());
    let mut c = d.connect();
    c.handshake();
    assert_eq!(c.request("remove_token", json!({"provider":"claudecode"}))["ok"], true);
    assert!(dir.stored_token("claudecode", None).is_none(), "--permit write admits remove_token");
    // a permit that is not a class is a usage error
    let out = dir.credd_start_failing(&["--allow", "codex", "--permit", "admin"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--permit \"admin\": not a class"), "{}", stderr(&out));
}

#[test]
fn a_sandbox_save_changes_only_the_access_token_and_never_grows_the_record() {
    let dir = seeded("tb-save");
    let d = dir.daemon(&[SCOPE, &["--permit", "write"]].concat());
    let mut c = d.connect();
    c.handshake();
    let expiry = (now() + 600.0).floor();
    let r = c.request(
        "save_token",
        json!({"provider":"claudecode","token":{"access_token":"at-sandbox","expiry":expiry,"token_type":"Bearer",
            "scope":"user:inference","refresh_token":"rt-CANARY-evil","account_id":"acct-evil","id_token":"evil",
            "resource_url":"https://evil.example","planted":"x".repeat(4000)}}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let s = dir.stored_token("claudecode", None).unwrap();
    assert_eq!((s["access_token"].as_str(), s["expiry"].as_f64()), (Some("at-sandbox"), Some(expiry)));
    assert_eq!(s["scope"], "user:inference");
    assert_eq!(s["refresh_token"], "rt-CANARY-host");
    assert_eq!(s["account_id"], "acct-host");
    assert_eq!(s["id_token"], "host.id.token");
    assert_eq!(s["resource_url"], "https://host.example");
    assert!(s.get("planted").is_none(), "unknown fields are not stored");
    // into an empty bucket only the four fields land
    let r = c.request(
        "save_token",
        json!({"provider":"claudecode","bucket":"fresh","token":{"access_token":"at-new","expiry":expiry,
            "token_type":"Bearer","account_id":"acct-evil","refresh_token":"rt-CANARY-evil2"}}),
    );
    assert_eq!(r["ok"], true, "{r}");
    let fresh = dir.stored_token("claudecode", Some("fresh")).unwrap();
    let keys: Vec<&String> = fresh.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["access_token", "expiry", "token_type"], "{fresh}");
    // oversize and out-of-range input: INVALID_REQUEST with the id echoed, nothing stored
    let before = snapshot(&dir.data());
    for (why, token) in [
        (
            "16 KiB",
            json!({"access_token":"a","expiry":expiry,"token_type":"Bearer","pad":"p".repeat(17 * 1024)}),
        ),
        ("8 KiB", json!({"access_token":"a".repeat(8 * 1024 + 1),"expiry":expiry,"token_type":"Bearer"})),
        ("far future", json!({"access_token":"a","expiry":now() + 31.0 * 86400.0,"token_type":"Bearer"})),
        ("far past", json!({"access_token":"a","expiry":now() - 31.0 * 86400.0,"token_type":"Bearer"})),
        ("year 2033", json!({"access_token":"a","expiry":2000000000,"token_type":"Bearer"})),
        ("not a number", json!({"access_token":"a","expiry":"soon","token_type":"Bearer"})),
        ("huge", json!({"access_token":"a","expiry":1e308,"token_type":"Bearer"})),
    ] {
        let r = c.request("save_token", json!({"provider":"claudecode","token":token}));
        assert_eq!(r["code"], "INVALID_REQUEST", "{why}: {r}");
        assert!(r["id"].as_str().unwrap().starts_with("req-"), "{why}: the id is echoed");
    }
    assert!(before == snapshot(&dir.data()), "a refused save changed the store");
}

#[test]
fn a_thousand_sandbox_saves_leave_the_record_the_same_size() {
    // The keyring store: a save costs milliseconds, not a scrypt.
    let Some((dir, kr)) = keyring_test("tb-grow") else { return };
    let token = json!({"access_token":"at-PLANTED-0","refresh_token":"rt-CANARY-grow","expiry":(now() + 600.0).floor(),
        "token_type":"Bearer","account_id":"acct"});
    let out = kr.secret_tool(
        &["store", "--label=t", "service", "llxprt-code-oauth", "username", "claudecode:default"],
        Some(&token.to_string()),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let size = || {
        let out = kr
            .secret_tool(&["lookup", "service", "llxprt-code-oauth", "username", "claudecode:default"], None);
        String::from_utf8_lossy(&out.stdout).len()
    };
    let d = dir.daemon_with_env(
        &["--store", "keyring", "--permit", "write", "--rate-limit", "0", "--allow", "claudecode"],
        &[("DBUS_SESSION_BUS_ADDRESS", kr.address.as_str())],
    );
    let mut c = d.connect();
    c.handshake();
    let expiry = (now() + 600.0).floor();
    let save = |c: &mut Raw, i: usize| {
        let r = c.request(
            "save_token",
            json!({"provider":"claudecode","token":{"access_token":format!("at-PLANTED-{:04}", i % 10),"expiry":expiry,
                "token_type":"Bearer","junk":i,format!("k{i}"):"v".repeat(100)}}),
        );
        assert_eq!(r["ok"], true, "{r}");
    };
    save(&mut c, 0);
    let first = size();
    for i in 1..1000 {
        save(&mut c, i);
    }
    assert_eq!(size(), first, "1000 saves grew the record");
}

/// A daemon whose Codex endpoints point at `fake`.
fn login_daemon(dir: &TestDir, fake: &FakeProvider, args: &[&str]) -> Daemon {
    let b = &fake.base;
    let env = [
        ("LLXPRT_CREDD_CODEX_TOKEN_URL", format!("{b}/oauth/token")),
        ("LLXPRT_CREDD_CODEX_AUTHORIZE_URL", format!("{b}/authorize")),
        ("LLXPRT_CREDD_CODEX_DEVICE_CODE_URL", format!("{b}{USERCODE}")),
        ("LLXPRT_CREDD_CODEX_DEVICE_POLL_URL", format!("{b}{DEVICE_TOKEN}")),
        ("LLXPRT_CREDD_TIME_SCALE", "0.01".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    dir.daemon_with_env(&[&["--permit", "login"], args].concat(), &env)
}

/// Runs a Codex device login for `bucket` to its end; the final poll answer.
fn device_login(c: &mut Raw, bucket: &str) -> Value {
    let r =
        c.request("oauth_initiate", json!({"provider":"codex","bucket":bucket,"flow_type":"device_code"}));
    assert_eq!(r["ok"], true, "{r}");
    let sid = r["data"]["session_id"].as_str().unwrap().to_owned();
    plant(sid.clone(), Exposure::Served);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.request("oauth_poll", json!({"session_id": sid}));
        if r["data"]["status"] != "pending" {
            return r;
        }
        assert!(Instant::now() < deadline, "the login never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn answer_with_account(fake: &FakeProvider, account: &str) {
    fake.script_at(
        "/oauth/token",
        [Reply::Token { expires_in: 3600, rotate: true, id_token: Some(id_token_of(account)) }],
    );
}

#[test]
fn a_sandbox_login_never_replaces_another_accounts_login() {
    let dir = seeded("tb-account");
    let fake = FakeProvider::start();
    let d = login_daemon(&dir, &fake, &["--allow", "codex"]);
    let mut c = d.connect();
    c.handshake();
    let before = dir.stored_token("codex", None).unwrap();
    // approved as another account: ACCOUNT_MISMATCH, nothing stored
    answer_with_account(&fake, "acct-attacker");
    let r = device_login(&mut c, "default");
    assert_eq!(r["ok"], true, "a flow outcome: {r}");
    assert_eq!(
        (r["data"]["status"].as_str(), r["data"]["code"].as_str()),
        (Some("error"), Some("ACCOUNT_MISMATCH"))
    );
    assert_eq!(dir.stored_token("codex", None).unwrap(), before, "the host's login is unchanged");
    // into an empty bucket: stored
    answer_with_account(&fake, "acct-new");
    let r = device_login(&mut c, "empty");
    assert_eq!(r["data"]["status"], "complete", "{r}");
    let s = dir.stored_token("codex", Some("empty")).unwrap();
    assert_eq!(s["account_id"], "acct-new");
    // the same account again: replaced, not merged (no stale field survives)
    let mut planted = s.clone();
    planted["stale"] = json!("from the old login");
    dir.import_token("codex:empty", &planted.to_string());
    answer_with_account(&fake, "acct-new");
    let r = device_login(&mut c, "empty");
    assert_eq!(r["data"]["status"], "complete", "{r}");
    let s2 = dir.stored_token("codex", Some("empty")).unwrap();
    assert_eq!(s2["account_id"], "acct-new");
    assert_ne!(s2["access_token"], s["access_token"]);
    assert!(s2.get("stale").is_none(), "a new login replaces the record: {s2}");
    assert!(d.log_text().contains("would replace another account's login"));
    // a provider that names no account (claudecode): only empty buckets
    assert!(dir.stored_token("claudecode", None).is_some());
}

#[test]
fn a_providers_file_in_the_config_directory_is_never_read() {
    let dir = seeded("tb-providers");
    let fake = FakeProvider::start();
    let expired = json!({"access_token":"at-PLANTED-old","refresh_token":"rt-CANARY-steal","expiry":(now() - 10.0).floor(),
        "token_type":"Bearer"});
    dir.import_token("claudecode:x", &expired.to_string());
    let file = json!({"providers":{"claudecode":{"token_url": fake.token_url()}}}).to_string();
    let planted = dir.root.join("config").join("credd-providers.json");
    std::fs::write(&planted, &file).unwrap();
    // The built-in endpoint is not reachable here; a dead proxy makes sure.
    let env = [
        ("HTTPS_PROXY", "http://127.0.0.1:9"),
        ("ALL_PROXY", "http://127.0.0.1:9"),
        ("LLXPRT_CREDD_TIME_SCALE", "0.01"),
    ];
    let d = dir.daemon_with_env(&["--allow", "claudecode"], &env);
    let mut c = d.connect();
    c.handshake();
    let r = c.request("get_token", json!({"provider":"claudecode","bucket":"x"}));
    assert_ne!(r["ok"], true, "the expired token could not be refreshed: {r}");
    assert_eq!(fake.count(), 0, "the planted token endpoint got the refresh token");
    assert!(d.log_text().contains("credd-providers.json is not read"), "{}", d.log_text());
    drop(c);
    drop(d);
    // the same file named by the host is used
    let named = dir.root.join("host-providers.json");
    std::fs::write(&named, &file).unwrap();
    let d =
        dir.daemon_with_env(&["--allow", "claudecode", "--providers-file", named.to_str().unwrap()], &env);
    let mut c = d.connect();
    c.handshake();
    let r = c.request("get_token", json!({"provider":"claudecode","bucket":"x"}));
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(fake.count(), 1);
}

/// Starts a daemon for profile `name` (its own log), waits for the socket.
fn profile_daemon(dir: &TestDir, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
    dir.daemon_with_env(&[&["--profile", name], extra].concat(), env)
}

fn write_profile(dir: &TestDir, name: &str, body: Value) {
    let p = dir.root.join("config/profiles");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join(format!("{name}.json")), body.to_string()).unwrap();
}

fn hup(d: &Daemon) {
    let before = d.log_text().matches("SIGHUP: scope now").count();
    Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.log_text().matches("SIGHUP: scope now").count() == before {
        assert!(Instant::now() < deadline, "no reload:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_only_narrows_and_a_narrowing_cancels_what_left() {
    let dir = seeded("tb-hup");
    let fake = FakeProvider::start();
    // the poll stays pending until the test lets it finish
    fake.script_at(DEVICE_TOKEN, (0..100).map(|_| Reply::Status(403, "{}".into())));
    write_profile(
        &dir,
        "p",
        json!({"version":1,"provider":"codex","auth":{"type":"oauth","buckets":["a","b"]}}),
    );
    let b = &fake.base;
    let env = [
        ("LLXPRT_CREDD_CODEX_TOKEN_URL", format!("{b}/oauth/token")),
        ("LLXPRT_CREDD_CODEX_DEVICE_CODE_URL", format!("{b}{USERCODE}")),
        ("LLXPRT_CREDD_CODEX_DEVICE_POLL_URL", format!("{b}{DEVICE_TOKEN}")),
        ("LLXPRT_CREDD_TIME_SCALE", "0.01".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let d = profile_daemon(&dir, "p", &["--permit", "login"], &env);
    let mut c = d.connect();
    c.handshake();
    // widening: the new bucket stays out
    write_profile(
        &dir,
        "p",
        json!({"version":1,"provider":"codex","auth":{"type":"oauth","buckets":["a","b","default"]}}),
    );
    hup(&d);
    assert_eq!(c.request("get_token", json!({"provider":"codex"}))["code"], "UNAUTHORIZED");
    assert!(d.log_text().contains("ignored until a restart"));
    // a login in flight for bucket b
    let r = c.request("oauth_initiate", json!({"provider":"codex","bucket":"b","flow_type":"device_code"}));
    assert_eq!(r["ok"], true, "{r}");
    let sid = r["data"]["session_id"].as_str().unwrap().to_owned();
    plant(sid.clone(), Exposure::Served);
    assert!(fake.wait_for(2, Duration::from_secs(5)), "polling started");
    // narrowing: b leaves at once and its login stores nothing
    write_profile(&dir, "p", json!({"version":1,"provider":"codex","auth":{"type":"oauth","buckets":["a"]}}));
    hup(&d);
    assert_eq!(
        c.request("get_bucket_stats", json!({"provider":"codex","bucket":"b"}))["code"],
        "UNAUTHORIZED"
    );
    let polls = fake.calls_to(DEVICE_TOKEN).len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fake.calls_to(DEVICE_TOKEN).len(), polls, "the cancelled login stopped polling");
    assert!(dir.stored_token("codex", Some("b")).is_none(), "nothing stored for the removed bucket");
    assert_ne!(c.request("oauth_poll", json!({"session_id": sid}))["data"]["status"], "complete");
    // a broken profile narrows to nothing
    std::fs::write(dir.root.join("config/profiles/p.json"), "{ not json").unwrap();
    hup(&d);
    assert_eq!(
        c.request("get_bucket_stats", json!({"provider":"codex","bucket":"a"}))["code"],
        "UNAUTHORIZED"
    );
    assert!(d.log_text().contains("serving nothing"));
}

#[test]
fn a_profile_that_names_nothing_servable_is_refused_at_start() {
    let dir = TestDir::new("tb-empty");
    write_profile(
        &dir,
        "inline",
        json!({"version":1,"provider":"openai","ephemeralSettings":{"auth-key":"sk-x"}}),
    );
    let out = dir.credd_start_failing(&["--profile", "inline"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("names nothing this daemon can serve") && e.contains("--allow"), "{e}");
}

/// `llxprt-credd` with the test roots, no `--socket`, and `XDG_RUNTIME_DIR`
/// in the test directory.
fn default_start(dir: &TestDir, args: &[&str]) -> Command {
    let mut cmd = dir.command(env!("CARGO_BIN_EXE_llxprt-credd"));
    let run = dir.root.join("run");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
    cmd.env("XDG_RUNTIME_DIR", &run).args(["--store", "file", "--log-level", "debug", "--log-file"]);
    cmd.arg(dir.root.join("default.log")).args(args);
    cmd
}

#[test]
fn a_default_start_requires_a_capability_token_kept_outside_the_socket_directory() {
    let dir = seeded("tb-cap");
    let out = default_start(&dir, &["--allow", "codex", "-s"]).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let vars = sh_vars(&stdout(&out));
    let socket = PathBuf::from(&vars["LLXPRT_CREDENTIAL_SOCKET"]);
    let cap = PathBuf::from(&vars["LLXPRT_CAPABILITY_FILE"]);
    let pid = vars["LLXPRT_CREDD_PID"].clone();
    let run = dir.root.join("run");
    assert_eq!(socket.parent().unwrap(), run.join("llxprt-cred"), "the socket under XDG_RUNTIME_DIR");
    assert_ne!(cap.parent(), socket.parent(), "the token is not beside the socket");
    assert!(cap.starts_with(&run), "and not under the tmpdir: {}", cap.display());
    assert_eq!(std::fs::metadata(&cap).unwrap().permissions().mode() & 0o777, 0o600);
    let token = plant_capability(&cap);
    let mut raw = Raw::connect(&socket);
    assert_eq!(raw.handshake_with(None)["code"], "UNAUTHORIZED", "a tokenless handshake is refused");
    let mut raw = Raw::connect(&socket);
    assert_eq!(raw.handshake_with(Some(&token))["ok"], true);
    assert_eq!(raw.request("get_token", json!({"provider":"codex"}))["ok"], true);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(&token), "the token is not in argv");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&environ).contains(&token), "nor in the environment");
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while cap.exists() || socket.exists() {
        assert!(Instant::now() < deadline, "the daemon left its files behind");
        std::thread::sleep(Duration::from_millis(20));
    }
    // exec mode: the child is told where the token file is, never the token
    let out =
        default_start(&dir, &["--allow", "codex", "--", "sh", "-c", "env; cat \"$LLXPRT_CAPABILITY_FILE\""])
            .stdin(Stdio::null())
            .output()
            .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let file_line =
        text.lines().find(|l| l.starts_with("LLXPRT_CAPABILITY_FILE=")).expect("the file is named");
    assert!(text.lines().any(|l| l.starts_with("LLXPRT_CAPABILITY_TOKEN=")), "the child can read the file");
    assert!(file_line.contains("llxprt-cred-capability"), "{file_line}");
    let env_part: Vec<&str> = text.lines().filter(|l| !l.starts_with("LLXPRT_CAPABILITY_TOKEN=")).collect();
    let exec_token = text.lines().find_map(|l| l.strip_prefix("LLXPRT_CAPABILITY_TOKEN=")).unwrap();
    plant(exec_token.to_owned(), Exposure::Never);
    assert!(!env_part.join("\n").contains(exec_token), "the token is not in the child's environment");
}

#[test]
fn a_foreign_default_socket_directory_does_not_stop_a_default_start() {
    if !require_root("to give the directory to another uid") {
        return;
    }
    let dir = seeded("tb-foreign");
    let blocked = dir.root.join("run/llxprt-cred");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::set_permissions(&blocked, std::fs::Permissions::from_mode(0o777)).unwrap();
    let status = Command::new("chown").args(["65534:65534"]).arg(&blocked).status().unwrap();
    assert!(status.success());
    let out = default_start(&dir, &["--allow", "codex", "-s", "--no-capability"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let vars = sh_vars(&stdout(&out));
    let socket = PathBuf::from(&vars["LLXPRT_CREDENTIAL_SOCKET"]);
    assert_ne!(socket.parent().unwrap(), blocked, "not in the other user's directory");
    assert!(
        socket.parent().unwrap().to_string_lossy().starts_with(&*blocked.to_string_lossy()),
        "{}",
        socket.display()
    );
    let mut raw = Raw::connect(&socket);
    raw.handshake();
    assert_eq!(raw.request("get_token", json!({"provider":"codex"}))["ok"], true);
    let log = std::fs::read_to_string(dir.root.join("default.log")).unwrap();
    assert!(log.contains("using a private directory of its own"), "{log}");
    Command::new("kill").args(["-TERM", &vars["LLXPRT_CREDD_PID"]]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while socket.parent().unwrap().exists() {
        assert!(Instant::now() < deadline, "the private directory is removed at exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connects as uid 65534 and asks for `codex`'s token; the answer, or
/// what went wrong.
fn get_as_nobody(socket: &Path) -> Result<Value, String> {
    let ask = json!({"v":1,"id":"n1","op":"get_token","payload":{"provider":"codex"}});
    as_nobody(socket, &[ask]).map(|answers| answers[1].clone())
}

#[test]
fn allow_uid_really_admits_that_uid_and_only_it() {
    if !require_root("to connect as uid 65534") {
        return;
    }
    let dir = seeded("tb-uid");
    std::fs::set_permissions(&dir.root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let without = dir.daemon(&["--allow", "codex"]);
    let e = get_as_nobody(&without.socket).expect_err("refused without --allow-uid");
    assert!(e.contains("connect") || e.contains("closed"), "{e}");
    let with = dir.daemon(&["--allow", "codex", "--allow-uid", "65534"]);
    let r = get_as_nobody(&with.socket).expect("admitted with --allow-uid");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["data"]["access_token"], "at-PLANTED-host");
    assert!(with.log_text().contains("uid=65534"));
}

#[test]
fn silent_connections_do_not_keep_a_client_out_past_the_handshake_deadline() {
    let dir = seeded("tb-silent");
    let d = dir.daemon(&["--allow", "codex", "--max-connections", "64"]);
    let silent: Vec<_> =
        (0..64).map(|_| std::os::unix::net::UnixStream::connect(&d.socket).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let admitted = loop {
        let mut raw = Raw::connect(&d.socket);
        raw.stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let hello = json!({"v":2,"op":"handshake","payload":{"minVersion":1,"maxVersion":2}}).to_string();
        let answered =
            raw.send_frame(hello.as_bytes()).is_ok() && raw.recv().is_some_and(|r| r["ok"] == true);
        if answered {
            break started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(13), "still kept out after 13 s");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(admitted > Duration::from_millis(500), "the cap was full at first: {admitted:?}");
    assert!(admitted <= Duration::from_secs(12), "admitted after {admitted:?}");
    drop(silent);
}
