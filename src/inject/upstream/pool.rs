/*!
Upstream connections kept between requests: one pool for all origins,
taken by origin, and given back only after an answer that ended cleanly.
*/
#![forbid(unsafe_code)]

use std::io::BufReader;
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use super::connect::Stream;
use super::{Exchange, Origin};

/// How long an idle upstream connection is kept for the next request
/// (providers close theirs after about a minute).
pub const POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle upstream connections kept at most.
const POOL_MAX: usize = 16;

/// An upstream connection between requests.
pub(super) struct Idle {
    origin: Origin,
    since: std::time::Instant,
    pub(super) reader: BufReader<Stream>,
    pub(super) socket: TcpStream,
}

/// Idle connections whose last answer ended cleanly, by origin.
fn pool() -> &'static std::sync::Mutex<Vec<Idle>> {
    static POOL: OnceLock<std::sync::Mutex<Vec<Idle>>> = OnceLock::new();
    POOL.get_or_init(|| std::sync::Mutex::new(Vec::new()))
}

/// An idle connection to `origin`, the freshest first; stale ones dropped.
pub(super) fn take_idle(origin: &Origin) -> Option<Idle> {
    let mut idle = pool().lock().unwrap_or_else(|e| e.into_inner());
    idle.retain(|c| c.since.elapsed() < POOL_IDLE);
    let at = idle.iter().rposition(|c| c.origin == *origin)?;
    Some(idle.remove(at))
}

impl Exchange {
    /// Done with the answer: the connection goes back to the pool when the
    /// body ended cleanly, the provider keeps it open and nothing more
    /// arrived; otherwise it closes.
    pub fn release(self) {
        if !(self.ended && self.reusable && self.reader.buffer().is_empty()) {
            return;
        }
        let mut idle = pool().lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|c| c.since.elapsed() < POOL_IDLE);
        if idle.len() >= POOL_MAX {
            idle.remove(0);
        }
        idle.push(Idle {
            origin: self.origin,
            since: std::time::Instant::now(),
            reader: self.reader,
            socket: self.socket,
        });
    }
}
