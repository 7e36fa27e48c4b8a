//! Several real `llxprt-cred` processes on one store at once: no lost
//! update, no torn file, dead lock holders taken over, live ones waited for.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::host_store::*;

fn file_cmd(dir: &TestDir, args: &[&str]) -> Command {
    let mut cmd = dir.cred(None);
    cmd.arg("--store").arg("file").args(args);
    cmd
}

#[test]
fn concurrent_merges_lose_no_update() {
    let dir = TestDir::new("merge");
    let children: Vec<_> = (0..8)
        .map(|i| {
            let mut cmd = file_cmd(&dir, &["token", "import", "anthropic:team"]);
            cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let body = format!(
                r#"{{"access_token":"a{i}","expiry":1999999999,"token_type":"Bearer","field{i}":"v{i}"}}"#
            );
            use std::io::Write;
            child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
            child
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let shown = ok(dir.run(None, &["--store", "file", "token", "show", "anthropic:team"], ""));
    let v: serde_json::Value = serde_json::from_str(&shown).unwrap();
    for i in 0..8 {
        assert_eq!(v[format!("field{i}")], format!("v{i}"), "field{i} was lost: {shown}");
    }
}

#[test]
fn concurrent_writers_and_deleters_never_tear_a_file() {
    let dir = TestDir::new("tear");
    let deadline = Instant::now() + Duration::from_secs(60);
    let dir = std::sync::Arc::new(dir);
    let handles: Vec<_> = (0..6)
        .map(|w| {
            let d = dir.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for i in 0..6 {
                    let args: &[&str] = match (w + i) % 3 {
                        0 => &["--store", "file", "key", "set", "HOT"],
                        1 => &["--store", "file", "key", "rm", "HOT"],
                        _ => &["--store", "file", "key", "get", "HOT"],
                    };
                    let out = d.run(None, args, &format!("value-{w}-{i}"));
                    seen.push((args[3].to_owned(), out.status.code(), stdout(&out), stderr(&out)));
                    assert!(Instant::now() < deadline);
                }
                seen
            })
        })
        .collect();
    for h in handles {
        for (op, code, out, err) in h.join().unwrap() {
            match op.as_str() {
                "set" => assert_eq!(code, Some(0), "set failed: {err}"),
                "rm" => assert!(matches!(code, Some(0 | 1)), "rm failed: {err}"),
                _ => {
                    assert!(code == Some(1) || out.starts_with("value-"), "get saw {out:?} / {err}");
                    assert!(!err.contains("corrupt"), "a reader saw a torn file: {err}");
                }
            }
        }
    }
    let names: Vec<String> = std::fs::read_dir(dir.keys_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| n == "HOT.enc"), "only whole files remain: {names:?}");
    let locks = dir.log().join("secure-store/locks");
    let left: Vec<_> =
        std::fs::read_dir(&locks).map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "no lock or temp file left: {left:?}");
}

#[test]
fn live_holder_is_waited_for_and_a_killed_one_is_taken_over() {
    let dir = TestDir::new("takeover");
    let locks = dir.log().join("oauth/locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = locks.join("anthropic-refresh.lock");
    // a real process holds the refresh lock (llxprt-code's record format)
    let mut holder = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(&lock, llxprt_lock_record(holder.id())).unwrap();
    let started = Instant::now();
    let mut importer = file_cmd(&dir, &["token", "import", "anthropic"]);
    importer.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut importer = importer.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = importer.stdin.take().unwrap();
        stdin.write_all(br#"{"access_token":"a","expiry":1999999999,"token_type":"Bearer"}"#).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(importer.try_wait().unwrap().is_none(), "the importer must wait for a live holder");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = importer.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(9), "taken over soon after the holder died");
    assert!(!lock.exists(), "the importer released the lock it took over");
    assert!(ok(dir.run(None, &["--store", "file", "token", "list"], "")).starts_with("anthropic:default\t"));
}

#[test]
fn a_lock_whose_pid_was_recycled_is_taken_over() {
    let dir = TestDir::new("recycled");
    let locks = dir.log().join("oauth/locks");
    std::fs::create_dir_all(&locks).unwrap();
    // our own pid is alive, but with a start time far in the past: a recycled pid
    let record =
        llxprt_lock_record(std::process::id()).replace("\"startTimeMs\":", "\"startTimeMs\":1000000,\"x\":");
    std::fs::write(locks.join("codex-refresh.lock"), record).unwrap();
    dir.import_token("codex", r#"{"access_token":"a","expiry":1,"token_type":"Bearer"}"#);
}
