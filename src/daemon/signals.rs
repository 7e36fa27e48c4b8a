/*!
The daemon's signal thread: SIGINT and SIGTERM stop it, SIGHUP re-reads
the scope (which may only narrow); in exec mode all three go to the
command, and the daemon stops when the command exits.
*/
#![forbid(unsafe_code)]

use super::config::ScopeSource;
use super::exec;
use crate::cli::{EXIT_FAILURE, EXIT_OK};
use crate::profile::Scope;
use crate::server;
use crate::sys;

/// The signal thread: stop on SIGINT/SIGTERM, reload on SIGHUP; in exec
/// mode forward all three to the child and stop when it exits. Returns the
/// daemon's exit code.
pub(super) fn watch_signals(
    signals: &sys::SignalSet,
    handle: &server::Handle,
    mut child: Option<std::process::Child>,
    reload: &ScopeSource,
) -> i32 {
    loop {
        let sig = match signals.wait() {
            Ok(sig) => sig,
            Err(e) => {
                crate::log_error!("sigwait failed: {e}");
                handle.stop();
                return EXIT_FAILURE;
            }
        };
        match (&mut child, sig) {
            (Some(c), libc::SIGCHLD) => match c.try_wait() {
                Ok(Some(status)) => {
                    let code = exec::exit_code(status);
                    crate::log_info!("command exited with status {code}: shutting down");
                    handle.stop();
                    return code;
                }
                Ok(None) => {}
                Err(e) => crate::log_warn!("cannot check the command: {e}"),
            },
            (Some(c), sig) => {
                crate::log_info!("signal {sig}: passed to the command");
                if let Err(e) = sys::send_signal(sys::ProcessId(c.id() as i32), sig) {
                    crate::log_warn!("cannot pass signal {sig} to the command: {e}");
                }
            }
            (None, libc::SIGHUP) => {
                // SPEC §11.4: a re-read profile may only narrow; a broken
                // one narrows to nothing.
                let reread = reload.load().unwrap_or_else(|e| {
                    crate::log_error!("SIGHUP: cannot read the profile ({e}): serving nothing until it is fixed and the daemon restarted");
                    Scope::default()
                });
                let (now, wider) = handle.narrow_scope(&reread);
                if wider {
                    crate::log_warn!(
                        "SIGHUP: the profile now names more than at start ({}); what was added is ignored until a restart",
                        reread.describe()
                    );
                }
                crate::log_info!("SIGHUP: scope now {}", now.describe());
            }
            (None, sig) => {
                crate::log_info!("signal {sig}: shutting down");
                handle.stop();
                return EXIT_OK;
            }
        }
    }
}
