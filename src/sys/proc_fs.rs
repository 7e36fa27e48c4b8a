/*!
What `/proc` tells about a process (Linux): whether it is a zombie, when
it started, its command name, and how many threads this process runs.
Plain file reads, so no `unsafe` here; each answer is `None` (or `false`)
where there is no `/proc`.
*/
#![forbid(unsafe_code)]

use super::ProcessId;
use super::process::clock_ticks_per_second;

/// Whether `pid` has exited and waits only to be reaped (Linux
/// `/proc/PID/stat` state `Z`): it holds nothing and will never run again.
pub(super) fn is_zombie(pid: ProcessId) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.0))
        .ok()
        .and_then(|stat| stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3).map(|s| s == "Z")))
        .unwrap_or(false)
}

/// Start time of a process in Unix milliseconds, whole seconds as `ps -o
/// lstart` shows it, computed from `/proc` (Linux only; `None` elsewhere).
pub fn process_start_time_ms(pid: ProcessId) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.0)).ok()?;
    // The command name may contain spaces and parentheses; fields resume
    // after the last ')'. starttime is field 22, i.e. index 19 after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let ticks: u64 = rest.split(' ').nth(19)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    Some((btime + ticks / clock_ticks_per_second()) * 1000)
}

/// Number of threads in this process, where the OS tells (Linux).
pub fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

/// The command name of process `pid` (Linux `/proc/PID/comm`); `None`
/// where the OS does not tell.
pub fn process_name(pid: ProcessId) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{}/comm", pid.0)).ok().map(|s| s.trim_end().to_string())
}
