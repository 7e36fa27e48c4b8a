//! CPU pinning for the daemon benchmark's same-core and cross-core rows:
//! what `taskset` does, through `sched_setaffinity(2)` (Linux; elsewhere
//! pinning is unsupported and those rows fail).

use std::io;

/// Pins thread `tid` (0 = the calling thread) to `cpus`.
pub fn pin_to_cpus(tid: i32, cpus: &[usize]) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::mem::MaybeUninit;
        // SAFETY: an all-zero cpu_set_t is a valid empty set.
        let mut set = unsafe { MaybeUninit::<libc::cpu_set_t>::zeroed().assume_init() };
        for &cpu in cpus {
            if cpu >= libc::CPU_SETSIZE as usize {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "CPU number out of range"));
            }
            // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so the
            // bit is inside `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc == -1 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (tid, cpus);
        Err(io::Error::new(io::ErrorKind::Unsupported, "CPU pinning is Linux only"))
    }
}

/// Pins every thread of process `pid` (and so the connection threads it
/// starts later) to `cpus`. A thread that ended since the list was read
/// (a connection closed) is skipped.
pub fn pin_process(pid: u32, cpus: &[usize]) -> io::Result<()> {
    for tid in crate::procfs::thread_ids(pid) {
        match pin_to_cpus(tid, cpus) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            other => other?,
        }
    }
    Ok(())
}
