/*!
Hardening of the daemon's own process: no core dumps, no ptrace by
processes of the same user, and an allocator that gives large freed
blocks back to the kernel.
*/

use std::io;

use super::cerr;

/// Turns off core dumps and (on Linux) ptrace attachment by non-root
/// processes of the same user: our memory holds secrets.
pub fn harden_process() -> io::Result<()> {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `zero` is a valid rlimit.
    cerr(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) })?;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_DUMPABLE takes one integer argument.
        cerr(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })?;
    }
    Ok(())
}

/// Keeps the allocator from hoarding large buffers (glibc). scrypt takes
/// 16 MiB per decrypt or encrypt; glibc's dynamic mmap threshold would
/// rise to that size after the first one was freed, and from then on
/// every connection thread's arena would keep its own 16 MiB block (the
/// soak test saw 400 MiB idle after 64 connections wrote and read
/// tokens). A fixed threshold (which also turns the dynamic one off) sends
/// such blocks back to the kernel on free; few arenas bound the rest.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt takes two integers and only changes allocator tuning.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}
