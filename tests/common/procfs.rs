//! What `/proc` says about another process (Linux): its resident memory
//! and its threads. Shared by the integration tests and the benchmarks,
//! which include this file with `#[path]`; reading `/proc` needs no
//! `unsafe`.

// Each includer uses a part.
#![allow(dead_code)]

/// Resident set size of process `pid` in KiB (`VmRSS` in
/// `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Thread ids of process `pid` (`/proc/PID/task`).
pub fn thread_ids(pid: u32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}
