//! `make install` / `make uninstall` with DESTDIR and PREFIX, as a
//! packager runs them, copying the binaries this test run built.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::*;
use crate::needs::*;

fn make(target: &str, destdir: &Path, extra: &[&str]) -> std::process::Output {
    let build_dir = Path::new(env!("CARGO_BIN_EXE_llxprt-credd")).parent().unwrap();
    Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["--no-print-directory", target])
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("BUILD_DIR={}", build_dir.display()))
        .args(extra)
        .output()
        .unwrap()
}

/// Every file under `root`, relative, with its permission bits.
fn files(root: &Path) -> Vec<(String, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u32)>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777));
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn make_install_lays_out_the_package_and_uninstall_removes_it() {
    if !tool_tests_enabled("make", "make") {
        return;
    }
    let dir = TestDir::new("install");
    let dest: PathBuf = dir.root.join("dest");
    let out = make("install", &dest, &["PREFIX=/usr"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let expected = [
        ("usr/bin/llxprt-cred", 0o755),
        ("usr/bin/llxprt-credd", 0o755),
        ("usr/bin/llxprt-sandbox", 0o755),
        ("usr/lib/systemd/user/llxprt-credd@.service", 0o644),
        ("usr/lib/systemd/user/llxprt-credd@.socket", 0o644),
        ("usr/share/doc/llxprt-credd/README.md", 0o644),
        ("usr/share/doc/llxprt-credd/docs/DESIGN.md", 0o644),
        ("usr/share/doc/llxprt-credd/docs/PERFORMANCE.md", 0o644),
        ("usr/share/doc/llxprt-credd/docs/TESTING.md", 0o644),
        ("usr/share/man/man1/llxprt-cred.1", 0o644),
        ("usr/share/man/man1/llxprt-credd.1", 0o644),
        ("usr/share/man/man1/llxprt-sandbox.1", 0o644),
        ("usr/share/man/man7/llxprt-credd.7", 0o644),
    ]
    .map(|(p, m)| (p.to_string(), m));
    assert_eq!(files(&dest), expected);
    let version = Command::new(dest.join("usr/bin/llxprt-credd")).arg("--version").output().unwrap();
    assert_eq!(stdout(&version), format!("llxprt-credd {}\n", env!("CARGO_PKG_VERSION")));
    // The wrapper is a command, and it finds the daemon installed beside it
    // even when BINDIR is not on PATH (the machine has no other).
    let wrapper = Command::new(dest.join("usr/bin/llxprt-sandbox"))
        .args(["--profile", "work", "--engine", "true", "image"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TMPDIR", &dir.root)
        .env("XDG_STATE_HOME", dir.root.join("state"))
        .env("HOME", dir.root.join("home"))
        .output()
        .unwrap();
    assert!(
        stderr(&wrapper).contains("llxprt-credd: no profile named \"work\""),
        "the installed wrapper ran the daemon beside it: {}",
        stderr(&wrapper)
    );
    let unit = std::fs::read_to_string(dest.join("usr/lib/systemd/user/llxprt-credd@.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/llxprt-credd -D --no-capability --profile %i\n"), "{unit}");

    let out = make("uninstall", &dest, &["PREFIX=/usr"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(files(&dest), vec![], "uninstall leaves no file behind");

    // Another prefix and BINDIR: the units follow BINDIR.
    let out = make("install", &dest, &["PREFIX=/opt/llxprt", "BINDIR=/opt/llxprt/sbin"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let unit =
        std::fs::read_to_string(dest.join("opt/llxprt/lib/systemd/user/llxprt-credd@.service")).unwrap();
    assert!(unit.contains("\nExecStart=/opt/llxprt/sbin/llxprt-credd -D"), "{unit}");
    assert!(dest.join("opt/llxprt/sbin/llxprt-cred").exists());

    let missing = make("install", &dest, &["BUILD_DIR=/nonexistent"]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("run 'make build' first"), "{}", stderr(&missing));
}

#[test]
fn make_deb_names_missing_prerequisites_and_how_to_install_them() {
    let dir = TestDir::new("deb-prereq");
    // A PATH with only what the script needs to reach its check.
    let bin = dir.root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["dirname", "man"] {
        let real = which(tool).unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    let out = Command::new("/bin/bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-deb.sh"))
        .env_clear()
        .env("PATH", &bin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("make deb needs dpkg lintian systemd to build and check the package"), "{err}");
    assert!(err.contains("sudo apt-get install dpkg lintian systemd"), "the command that fixes it: {err}");
    assert!(stdout(&out).is_empty(), "nothing was built: {}", stdout(&out));
}
