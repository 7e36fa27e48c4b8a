/*!
Request rate limits (SPEC §3.5, §11.7): a token bucket per peer process
(its uid and pid from `SO_PEERCRED`), so closing and reopening
connections does not refill it, and one bucket for the whole daemon, so
many processes together are bounded too. Every frame counts: handshakes,
requests, and frames that turn out malformed.

Buckets hold one second's worth and start full, so a normal start-up
burst passes. Buckets of processes not seen for a while are forgotten
when the table grows (a forgotten bucket would be full again anyway).
*/
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default requests per second for the whole daemon.
pub const DEFAULT_DAEMON_RATE_PER_SECOND: u32 = 600;
/// Peer buckets are pruned when there are more than this many.
const PRUNE_ABOVE: usize = 256;

/// Who a bucket belongs to: a process (uid and pid as the kernel reported
/// them when it connected).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerKey {
    /// The peer's uid.
    pub uid: u32,
    /// The peer's pid (-1 when the kernel gave none).
    pub pid: i32,
}

/// A token bucket: `rate` tokens per second, holding at most `rate`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(rate: u32, now: Instant) -> Bucket {
        Bucket { rate: f64::from(rate), tokens: f64::from(rate), last: now }
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.last = now;
    }

    /// Whether the bucket would be full again by `now` (its owner has been
    /// quiet for long enough that forgetting it changes nothing).
    fn idle_since(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= Duration::from_secs(1)
    }
}

struct Table {
    peers: HashMap<PeerKey, Bucket>,
    daemon: Option<Bucket>,
}

/// The daemon's rate limits.
pub struct Limits {
    per_peer: Option<u32>,
    enabled: bool,
    table: Mutex<Table>,
}

impl Limits {
    /// `per_peer` requests per second per process and `daemon` for all of
    /// them together; `None` turns a limit off.
    pub fn new(per_peer: Option<u32>, daemon: Option<u32>) -> Limits {
        let now = Instant::now();
        Limits {
            per_peer,
            enabled: per_peer.is_some() || daemon.is_some(),
            table: Mutex::new(Table { peers: HashMap::new(), daemon: daemon.map(|r| Bucket::full(r, now)) }),
        }
    }

    /// Takes one token from `peer`'s bucket and the daemon's; `false`
    /// (and nothing taken) when either is empty.
    pub fn allow(&self, peer: PeerKey) -> bool {
        if !self.enabled {
            return true;
        }
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let Table { peers, daemon } = &mut *table;
        if let Some(d) = daemon.as_mut() {
            d.refill(now);
            if d.tokens < 1.0 {
                return false;
            }
        }
        if let Some(rate) = self.per_peer {
            if peers.len() > PRUNE_ABOVE {
                peers.retain(|_, b| !b.idle_since(now));
            }
            let bucket = peers.entry(peer).or_insert_with(|| Bucket::full(rate, now));
            bucket.refill(now);
            if bucket.tokens < 1.0 {
                return false;
            }
            bucket.tokens -= 1.0;
        }
        if let Some(d) = daemon.as_mut() {
            d.tokens -= 1.0;
        }
        true
    }

    #[cfg(test)]
    /// How many peer buckets are kept (for tests).
    pub fn peers_kept(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(pid: i32) -> PeerKey {
        PeerKey { uid: 1000, pid }
    }

    #[test]
    fn a_peer_gets_its_burst_then_is_refused_and_others_are_not() {
        let l = Limits::new(Some(5), None);
        assert_eq!((0..8).filter(|_| l.allow(peer(1))).count(), 5);
        assert!(l.allow(peer(2)), "another process has its own bucket");
    }

    #[test]
    fn the_daemon_bucket_bounds_many_peers() {
        let l = Limits::new(Some(5), Some(12));
        let allowed = (0..10).map(|p| (0..5).filter(|_| l.allow(peer(p))).count()).sum::<usize>();
        assert_eq!(allowed, 12);
    }

    #[test]
    fn quiet_peers_are_forgotten_when_the_table_grows() {
        let l = Limits::new(Some(5), None);
        for p in 0..=PRUNE_ABOVE as i32 {
            assert!(l.allow(peer(p)));
        }
        assert_eq!(l.peers_kept(), PRUNE_ABOVE + 1);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(l.allow(peer(-5)));
        assert_eq!(l.peers_kept(), 1, "only the new one");
    }

    #[test]
    fn refusals_get_one_line_per_second_with_counts() {
        let mut r = Refusals::default();
        let t0 = Instant::now();
        assert_eq!(r.note("RATE_LIMITED", t0), (true, None));
        for i in 0..50u64 {
            let o = if i % 2 == 0 { "RATE_LIMITED" } else { "INVALID_REQUEST" };
            assert_eq!(r.note(o, t0 + Duration::from_millis(10 + i)), (false, None));
        }
        let (own, summary) = r.note("FORBIDDEN", t0 + Duration::from_millis(1000));
        assert!(own);
        assert_eq!(summary.unwrap(), "refused=50 not logged singly (RATE_LIMITED=25 INVALID_REQUEST=25)");
        assert_eq!(r.summary(), None);
    }

    #[test]
    fn off_means_unlimited() {
        let l = Limits::new(None, None);
        assert!((0..10_000).all(|_| l.allow(peer(1))));
    }
}

/// The audit lines of one connection's refused frames (rate, validity,
/// permission, scope): the first in a second is logged as usual, the rest
/// of that second are counted and logged as one line with the counts.
#[derive(Default)]
pub struct Refusals {
    last_line: Option<Instant>,
    counted: Vec<(&'static str, u32)>,
}

impl Refusals {
    /// Whether this refusal (`outcome`) gets its own audit line now; if not,
    /// it is counted. Returns the summary line of the counted ones when it
    /// is due, to log before this one.
    pub fn note(&mut self, outcome: &'static str, now: Instant) -> (bool, Option<String>) {
        let due = self.last_line.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1));
        if due {
            self.last_line = Some(now);
            (true, self.summary())
        } else {
            match self.counted.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, n)) => *n += 1,
                None => self.counted.push((outcome, 1)),
            }
            (false, None)
        }
    }

    /// The line for what was counted and not yet logged (at most once).
    pub fn summary(&mut self) -> Option<String> {
        if self.counted.is_empty() {
            return None;
        }
        let total: u32 = self.counted.iter().map(|(_, n)| n).sum();
        let parts: Vec<String> = self.counted.drain(..).map(|(o, n)| format!("{o}={n}")).collect();
        Some(format!("refused={total} not logged singly ({})", parts.join(" ")))
    }
}
