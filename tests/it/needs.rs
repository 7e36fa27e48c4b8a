//! What a test needs from the machine, and what it does when that is
//! missing. CI (`bash .ci/run`) runs the suite as root with every tool
//! installed, so a test whose need is missing fails and says what it needs
//! and how to get it; it is skipped only when the person running the suite
//! says so with the need's variable, and then it says so too: a `SKIPPED`
//! line on stderr and in the file `LLXPRT_CREDD_SKIP_LOG` names, which
//! `scripts/run-tests.sh` prints after the run.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{PrivateKeyring, TestDir, stderr, stdout};

/// Skips the tests that need root (they connect as another uid, mount, read
/// another process's memory, or chown).
pub const SKIP_ROOT_TESTS: &str = "LLXPRT_CREDD_SKIP_ROOT_TESTS";
/// Skips the tests that need gnome-keyring, dbus and libsecret-tools.
pub const SKIP_KEYRING_TESTS: &str = "LLXPRT_CREDD_SKIP_KEYRING_TESTS";
/// Skips the tests that need one more program (mandoc, man, make,
/// systemd-socket-activate, faketime).
pub const SKIP_TOOL_TESTS: &str = "LLXPRT_CREDD_SKIP_TOOL_TESTS";
/// Skips the tests that run real containers (root, podman, runc, uidmap,
/// busybox, socat).
pub const SKIP_CONTAINER_TESTS: &str = "LLXPRT_CREDD_SKIP_CONTAINER_TESTS";
/// Where a skipped test also writes its line, when set (scripts/run-tests.sh
/// sets it and prints the file after the run, since the test runner shows
/// a passing test's output only on request).
pub const SKIP_LOG: &str = "LLXPRT_CREDD_SKIP_LOG";

/// Whether a test that needs `what` may go on: `true` when the machine
/// has it (`have`). When it does not, the test fails with a message naming
/// what it needs and `how` to get it, unless `skip_var` is set to 1: then
/// it returns `false` (the test returns at once) after printing a
/// `SKIPPED` line on stderr and to the [`SKIP_LOG`] file.
#[track_caller]
pub fn require(what: &str, have: bool, how: &str, skip_var: &str) -> bool {
    if have {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    if std::env::var(skip_var).as_deref() == Ok("1") {
        let line = format!("SKIPPED {test}: it needs {what} ({skip_var}=1)");
        eprintln!("{line}");
        if let Some(log) = std::env::var_os(SKIP_LOG) {
            let file = std::fs::OpenOptions::new().create(true).append(true).open(log);
            let _ = file.and_then(|mut f| writeln!(f, "{line}"));
        }
        return false;
    }
    panic!(
        "{test} needs {what}: {how}. CI has it (`bash .ci/run` installs every tool and runs the suite \
         as root); run the suite as CI does, or set {skip_var}=1 to skip this test knowingly"
    );
}

/// Whether the tests run as root (CI does).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(|u| u == "0"))
        .unwrap_or(false)
}

/// [`require`] root, for `why`.
#[track_caller]
pub fn require_root(why: &str) -> bool {
    require(&format!("root ({why})"), is_root(), "run it as root", SKIP_ROOT_TESTS)
}

/// [`require`] a private Secret Service: dbus-daemon, gnome-keyring and
/// secret-tool.
#[track_caller]
pub fn keyring_tests_enabled() -> bool {
    let missing: Vec<_> = ["dbus-daemon", "gnome-keyring-daemon", "dbus-send", "secret-tool"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .collect();
    require(
        &format!("a Secret Service ({} missing)", missing.join(", ")),
        missing.is_empty(),
        "apt-get install gnome-keyring dbus dbus-daemon dbus-bin libsecret-tools",
        SKIP_KEYRING_TESTS,
    )
}

/// [`require`] the program `tool`, from the Debian package `package`.
#[track_caller]
pub fn tool_tests_enabled(tool: &str, package: &str) -> bool {
    require(tool, which(tool).is_some(), &format!("apt-get install {package}"), SKIP_TOOL_TESTS)
}

/// A wall clock a test can jump under a daemon: libfaketime preloaded into
/// the daemon alone, reading its offset from a file at every call, with
/// the monotonic clock left alone (as a suspend or a clock step leaves it).
pub struct FakeWallClock {
    lib: String,
    file: String,
}

impl FakeWallClock {
    /// A clock at the real time, its offset file in `dir`; `None` when
    /// tests that need faketime are skipped on request ([`require`]).
    #[track_caller]
    pub fn new(dir: &TestDir) -> Option<FakeWallClock> {
        if !tool_tests_enabled("faketime", "faketime") {
            return None;
        }
        let out = Command::new("dpkg").args(["-L", "libfaketime"]).output().ok();
        let listed = out.map(|o| stdout(&o)).unwrap_or_default();
        let lib = listed.lines().find(|p| p.ends_with("/libfaketime.so.1"));
        let lib = lib.expect("libfaketime.so.1 (apt-get install faketime)").to_owned();
        let file = dir.root.join("clock").to_string_lossy().into_owned();
        let clock = FakeWallClock { lib, file };
        clock.set("+0");
        Some(clock)
    }

    /// Moves the daemon's wall clock to `offset` from the real time, in
    /// libfaketime's words: `+0`, `-1d`, `+2h`, `+3300` (seconds).
    pub fn set(&self, offset: &str) {
        std::fs::write(&self.file, format!("{offset}\n")).unwrap();
    }

    /// The environment that puts a daemon on this clock.
    pub fn env(&self) -> [(&str, &str); 4] {
        [
            ("LD_PRELOAD", self.lib.as_str()),
            ("FAKETIME_TIMESTAMP_FILE", self.file.as_str()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
    }
}

/// A test directory with a private, unlocked keyring of its own; `None`
/// when keyring tests are skipped on request.
#[track_caller]
pub fn keyring_test(name: &str) -> Option<(TestDir, PrivateKeyring)> {
    if !keyring_tests_enabled() {
        return None;
    }
    let dir = TestDir::new(name);
    let kr = PrivateKeyring::start(&dir);
    Some((dir, kr))
}

pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(tool)).find(|p| p.is_file())
}

/// Stands for a test whose need is missing everywhere; run (and only run)
/// by [`a_missing_need_fails_the_test_unless_skipped_on_request`].
#[test]
#[ignore = "run by a_missing_need_fails_the_test_unless_skipped_on_request"]
fn a_test_that_needs_what_no_machine_has() {
    if !require("a tool no machine has", false, "it cannot be had", "LLXPRT_CREDD_SKIP_SELF_TEST") {
        return;
    }
    unreachable!("require let a test without its need go on");
}

/// [`require`] itself can fail: a missing need fails the test with a
/// message saying how to get it or skip it, and an opt-out is said
/// aloud on stderr and in the skip log.
#[test]
fn a_missing_need_fails_the_test_unless_skipped_on_request() {
    let dir = TestDir::new("require");
    let skip_log = dir.root.join("skipped");
    let run = |skip: &str| {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "needs::a_test_that_needs_what_no_machine_has", "--ignored", "--nocapture"])
            .env("LLXPRT_CREDD_SKIP_SELF_TEST", skip)
            .env(SKIP_LOG, &skip_log)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let failed = run("");
    let text = format!("{}{}", stdout(&failed), stderr(&failed));
    assert!(!failed.status.success(), "{text}");
    assert!(
        text.contains(
            "needs::a_test_that_needs_what_no_machine_has needs a tool no machine has: it cannot be had"
        ) && text.contains("set LLXPRT_CREDD_SKIP_SELF_TEST=1 to skip this test knowingly"),
        "{text}"
    );
    assert!(!skip_log.exists(), "a failure is no skip");
    let skipped = run("1");
    let line = "SKIPPED needs::a_test_that_needs_what_no_machine_has: it needs a tool no machine has \
                (LLXPRT_CREDD_SKIP_SELF_TEST=1)";
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert!(stderr(&skipped).contains(line), "{}", stderr(&skipped));
    assert_eq!(std::fs::read_to_string(&skip_log).unwrap(), format!("{line}\n"));
}
