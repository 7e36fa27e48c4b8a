/*!
The client watcher: a thread that polls the client for a hang-up while a
request is upstream and shuts the upstream socket so the provider stops.
*/
#![forbid(unsafe_code)]

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::sys;

/// Watches the client for a hang-up while a request is upstream. The
/// upstream socket is shut down only while the watch runs: once stopped
/// (or dropped) it never touches it again, since the connection may go
/// back to the pool.
pub(super) struct ClientWatch {
    done: Arc<std::sync::Mutex<bool>>,
    gone: Arc<std::sync::atomic::AtomicBool>,
}

impl ClientWatch {
    pub(super) fn start(client: &UnixStream, upstream: &std::net::TcpStream) -> ClientWatch {
        use std::sync::atomic::AtomicBool;
        let done = Arc::new(std::sync::Mutex::new(false));
        let gone = Arc::new(AtomicBool::new(false));
        if let Some((client, upstream)) = client.try_clone().ok().zip(upstream.try_clone().ok()) {
            let (done, gone) = (done.clone(), gone.clone());
            let spawned = std::thread::Builder::new().name("proxy-watch".into()).spawn(move || {
                use std::os::fd::AsFd;
                let stopped = || *done.lock().unwrap_or_else(|e| e.into_inner());
                while !stopped() {
                    if matches!(
                        sys::peer_hung_up(client.as_fd(), Duration::from_millis(50)),
                        Ok(true) | Err(_)
                    ) {
                        let stopped = done.lock().unwrap_or_else(|e| e.into_inner());
                        if !*stopped {
                            gone.store(true, Ordering::SeqCst);
                            let _ = upstream.shutdown(Shutdown::Both);
                        }
                        return;
                    }
                }
            });
            if let Err(e) = spawned {
                crate::log_warn!("proxy: cannot watch the client: {e}");
            }
        }
        ClientWatch { done, gone }
    }

    /// Stops the watch (its thread ends within its 50 ms poll, on its own:
    /// joining it would add that to every response); whether the client
    /// had gone.
    pub(super) fn stop(self) -> bool {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.gone.load(Ordering::SeqCst)
    }
}

impl Drop for ClientWatch {
    fn drop(&mut self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
    }
}
