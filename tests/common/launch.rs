//! Starting the real `llxprt-credd` in the foreground on a file store and
//! waiting until it listens. Shared by the integration harness
//! (`tests/it/harness.rs`) and the benchmarks (`benches/credd`), which
//! include this file with `#[path]`; cargo tells both where it built the
//! daemon.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The daemon binary cargo built beside the tests and benchmarks.
pub const CREDD: &str = env!("CARGO_BIN_EXE_llxprt-credd");

/// Runs `cmd` (the daemon binary, with the environment the caller chose)
/// as `llxprt-credd -D --store file --print-socket --log-file LOG --socket
/// SOCKET ARGS` and returns it once it listens: once it has printed its
/// socket path. On failure the daemon is gone and the error says why
/// (with its stderr, when the caller piped that).
pub fn start_foreground(mut cmd: Command, socket: &Path, log: &Path, args: &[&str]) -> Result<Child, String> {
    cmd.args(["-D", "--store", "file", "--print-socket", "--log-file"])
        .arg(log)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    if line.trim().is_empty() {
        let out = child.wait_with_output().map_err(|e| format!("cannot wait for {program}: {e}"))?;
        return Err(format!(
            "the daemon did not start ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if Path::new(line.trim()) != socket {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("the daemon said {:?}, not its socket {}", line.trim(), socket.display()));
    }
    Ok(child)
}
