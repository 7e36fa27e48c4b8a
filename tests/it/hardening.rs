//! Hardening (issue 12), item by item, on the real binary. So far: the log
//! file is opened without following a symbolic link, mode 0600.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use crate::harness::*;

#[test]
fn the_log_file_is_never_opened_through_a_symlink_and_is_private() {
    let dir = TestDir::new("hd-log");
    ok(dir.run(None, &["--store", "file", "key", "set", "K"], "sk-PLANTED-log"));
    let target = dir.root.join("elsewhere.txt");
    std::fs::write(&target, "untouched\n").unwrap();
    let link = dir.root.join("planted.log");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = dir.credd_start_failing(&[
        "--no-capability",
        "--allow-key",
        "K",
        "--log-file",
        link.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a symbolic link"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched\n", "the link's target is untouched");
    // a new log is created 0600; an existing wider one is narrowed to 0600
    let wide = dir.root.join("wide.log");
    std::fs::write(&wide, "").unwrap();
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o644)).unwrap();
    let d = dir.daemon_as_is(&dir.socket_path(), &["--no-capability", "--allow-key", "K"], &[]);
    assert_eq!(std::fs::metadata(&d.log).unwrap().permissions().mode() & 0o777, 0o600);
    let out = dir
        .command(env!("CARGO_BIN_EXE_llxprt-credd"))
        .args([
            "-D",
            "--store",
            "file",
            "--no-capability",
            "--allow-key",
            "K",
            "--print-socket",
            "--log-file",
        ])
        .arg(&wide)
        .arg("--socket")
        .arg(dir.socket_path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = out;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line)
        .unwrap();
    assert!(!line.trim().is_empty(), "the daemon started");
    assert_eq!(std::fs::metadata(&wide).unwrap().permissions().mode() & 0o777, 0o600);
    let _ = child.kill();
    let _ = child.wait();
}
