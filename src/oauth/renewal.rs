/*!
Proactive renewal: one timer per provider:bucket, armed when a refreshable
token is served, firing before the token expires (SPEC §7):

```text
fire at  expiry - max(300 s, floor(remaining * 0.1)) - jitter(0..30 s)
```

One scheduler thread keeps the timers in a binary heap ordered by their
**wall-clock** fire time and sleeps on a condvar until the earliest one,
but never longer than [`RENEWAL_NAP`](super::RENEWAL_NAP): the condvar
measures time on the monotonic clock, which stops while the machine is
suspended, so each wake-up compares the wall clock with the fire times and
a timer that came due during a suspend fires within one nap of the resume.

On success the timer is re-armed from the new expiry; on failure it is
retried after 30 s, doubling up to 30 min, and given up after 10 failures
in a row (until a different token is served). A revoked, removed or
non-refreshable token stops its timer. [`Scheduler::stop`] cancels them
all. The timers live in memory only.
*/
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    RENEWAL_BACKOFF_BASE, RENEWAL_BACKOFF_CAP, RENEWAL_JITTER, RENEWAL_MAX_FAILURES, RENEWAL_MIN_LEAD,
};
use crate::store::names::DEFAULT_BUCKET;

/// What a fired timer reports back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fired {
    /// The token now stored expires at this time: re-arm from it.
    Renewed {
        /// Unix seconds.
        expiry: f64,
    },
    /// Not done yet, and not a failure (inside the refresh cooldown).
    RetryIn(Duration),
    /// A failure that may pass: back off.
    Failed,
    /// Nothing left to renew (removed, revoked, no refresh token).
    Stop,
}

/// Seconds from now until a token with `remaining` seconds of life should
/// be renewed, given a jitter in seconds.
pub fn renewal_delay_seconds(remaining: f64, jitter: f64) -> f64 {
    let lead = RENEWAL_MIN_LEAD.as_secs_f64().max((remaining * 0.1).floor());
    (remaining - lead - jitter).max(0.0)
}

/// Delay after the `failures`-th failure in a row (1-based).
pub fn backoff(failures: u32) -> Duration {
    let doubled = RENEWAL_BACKOFF_BASE.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(RENEWAL_BACKOFF_CAP)
}

/// Runs a fired timer: `(provider, bucket, armed_expiry)`.
pub type FireFn = dyn Fn(&str, Option<&str>, f64) -> Fired + Send + Sync;
/// The wall clock, in Unix seconds.
pub type WallClock = dyn Fn() -> f64 + Send + Sync;

#[derive(Clone)]
struct Timer {
    provider: String,
    bucket: Option<String>,
    armed_expiry: f64,
    failures: u32,
    /// Matches the heap entry that is current; 0 = given up (kept so that
    /// serving the same token again does not restart the failures).
    generation: u64,
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<(u64, u64, String)>>,
    timers: HashMap<String, Timer>,
    next_generation: u64,
    stopped: bool,
    firing: bool,
}

struct Inner {
    state: Mutex<State>,
    wake: Condvar,
    idle: Condvar,
    fire: Box<FireFn>,
    clock: Box<WallClock>,
    scale: f64,
    nap: Duration,
}

/// The renewal timers and their thread.
pub struct Scheduler {
    inner: Arc<Inner>,
}

fn millis(unix_seconds: f64) -> u64 {
    (unix_seconds * 1000.0).max(0.0) as u64
}

/// Drops superseded heap entries (an earlier generation of a timer, or a
/// dropped timer) once they are more than half the heap: re-arming keeps
/// one live entry per provider:bucket instead of piling up old ones.
fn compact(state: &mut State) {
    if state.heap.len() <= 2 * state.timers.len() + COMPACT_SLACK {
        return;
    }
    let timers = &state.timers;
    let live = std::mem::take(&mut state.heap)
        .into_iter()
        .filter(|Reverse((_, generation, key))| timers.get(key).is_some_and(|t| t.generation == *generation));
    state.heap = live.collect();
}

/// Stale heap entries tolerated besides one per timer before compacting.
const COMPACT_SLACK: usize = 16;

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn scaled(&self, d: Duration) -> f64 {
        d.as_secs_f64() * self.scale
    }

    /// Puts `timer` (a new generation of it) on the heap `delay` seconds
    /// of wall-clock time from now.
    fn schedule(&self, state: &mut State, key: String, mut timer: Timer, delay: f64) {
        state.next_generation += 1;
        timer.generation = state.next_generation;
        let at = millis((self.clock)() + delay);
        state.heap.push(Reverse((at, timer.generation, key.clone())));
        state.timers.insert(key, timer);
        compact(state);
        self.wake.notify_all();
    }

    fn arm_delay(&self, expiry: f64) -> f64 {
        let jitter = crate::random::below(RENEWAL_JITTER.as_millis() as u64) as f64 / 1000.0;
        renewal_delay_seconds(expiry - (self.clock)(), jitter) * self.scale
    }

    fn run(&self) {
        let mut state = self.lock();
        loop {
            if state.stopped {
                return;
            }
            while let Some(Reverse((_, generation, key))) = state.heap.peek() {
                if state.timers.get(key).map(|t| t.generation) == Some(*generation) {
                    break;
                }
                state.heap.pop();
            }
            let now = millis((self.clock)());
            let wait = match state.heap.peek() {
                None => self.nap,
                Some(Reverse((at, _, _))) if *at > now => self.nap.min(Duration::from_millis(at - now)),
                Some(_) => {
                    let Some(Reverse((_, generation, key))) = state.heap.pop() else { continue };
                    let Some(timer) = state.timers.get(&key).cloned() else { continue };
                    state.firing = true;
                    drop(state);
                    let fired = (self.fire)(&timer.provider, timer.bucket.as_deref(), timer.armed_expiry);
                    state = self.lock();
                    state.firing = false;
                    self.idle.notify_all();
                    if state.stopped {
                        return;
                    }
                    if state.timers.get(&key).map(|t| t.generation) == Some(generation) {
                        self.after_fire(&mut state, key, timer, fired);
                    }
                    continue;
                }
            };
            state = self.wake.wait_timeout(state, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn after_fire(&self, state: &mut State, key: String, mut timer: Timer, fired: Fired) {
        match fired {
            Fired::Renewed { expiry } => {
                timer.armed_expiry = expiry;
                timer.failures = 0;
                let delay = self.arm_delay(expiry);
                self.schedule(state, key, timer, delay);
            }
            Fired::RetryIn(d) => self.schedule(state, key, timer, d.as_secs_f64()),
            Fired::Failed => {
                timer.failures += 1;
                if timer.failures >= RENEWAL_MAX_FAILURES {
                    crate::log_warn!(
                        "renewal {key}: gave up after {} failures in a row; the token is refreshed again when it is read near expiry",
                        timer.failures
                    );
                    timer.generation = 0;
                    state.timers.insert(key, timer);
                } else {
                    let delay = self.scaled(backoff(timer.failures));
                    crate::log_info!("renewal {key}: failure {}; next try in {:.1} s", timer.failures, delay);
                    self.schedule(state, key, timer, delay);
                }
            }
            Fired::Stop => {
                state.timers.remove(&key);
            }
        }
    }
}

impl Scheduler {
    /// Starts the scheduler thread. `scale` multiplies every delay (a
    /// test knob; 1 in production), `nap` is the longest sleep between
    /// wall-clock checks, `clock` the wall clock.
    pub fn start(
        fire: Box<FireFn>,
        clock: Box<WallClock>,
        scale: f64,
        nap: Duration,
    ) -> std::io::Result<Scheduler> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
            fire,
            clock,
            scale,
            nap,
        });
        let runner = inner.clone();
        std::thread::Builder::new().name("renewal".into()).spawn(move || runner.run())?;
        Ok(Scheduler { inner })
    }

    /// Arms the timer of `provider:bucket` for a token expiring at
    /// `expiry`, unless it is already armed for that token.
    pub fn arm(&self, provider: &str, bucket: Option<&str>, expiry: f64) {
        let key = format!("{provider}:{}", bucket.unwrap_or(DEFAULT_BUCKET));
        let mut state = self.inner.lock();
        if state.stopped || state.timers.get(&key).is_some_and(|t| t.armed_expiry == expiry) {
            return;
        }
        let delay = self.inner.arm_delay(expiry);
        crate::log_debug!("renewal {key}: armed, fires in {delay:.1} s");
        let timer = Timer {
            provider: provider.to_owned(),
            bucket: bucket.map(str::to_owned),
            armed_expiry: expiry,
            failures: 0,
            generation: 0,
        };
        self.inner.schedule(&mut state, key, timer, delay);
    }

    /// Drops the timers whose provider:bucket `keep` refuses; how many.
    /// Their heap entries go with the next compaction, or are skipped
    /// when they come up (a stale generation).
    pub fn retain(&self, keep: &dyn Fn(&str, Option<&str>) -> bool) -> usize {
        let mut state = self.inner.lock();
        let before = state.timers.len();
        state.timers.retain(|_, t| keep(&t.provider, t.bucket.as_deref()));
        compact(&mut state);
        before - state.timers.len()
    }

    #[cfg(test)]
    /// Entries on the heap, live and superseded (for tests).
    pub fn heap_len(&self) -> usize {
        self.inner.lock().heap.len()
    }

    #[cfg(test)]
    /// How many timers are armed (given-up ones not counted).
    pub fn armed(&self) -> usize {
        self.inner.lock().timers.values().filter(|t| t.generation != 0).count()
    }

    /// Cancels every timer and ends the thread (after a renewal in
    /// progress, which is not interrupted).
    pub fn stop(&self) {
        let mut state = self.inner.lock();
        state.stopped = true;
        state.timers.clear();
        state.heap.clear();
        self.inner.wake.notify_all();
    }

    /// Waits up to `timeout` for a renewal in progress. Whether none is.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.inner.lock();
        while state.firing {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self.inner.idle.wait_timeout(state, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn the_formula_is_the_spec_one() {
        // an hour left: lead 360 s, so 3240 s minus the jitter
        assert_eq!(renewal_delay_seconds(3600.0, 0.0), 3240.0);
        assert_eq!(renewal_delay_seconds(3600.0, 29.5), 3210.5);
        // ten minutes left: lead 300 s
        assert_eq!(renewal_delay_seconds(600.0, 10.0), 290.0);
        // a day left: lead 10 %
        assert_eq!(renewal_delay_seconds(86400.0, 0.0), 77760.0);
        // due already, or expired: now
        assert_eq!(renewal_delay_seconds(200.0, 0.0), 0.0);
        assert_eq!(renewal_delay_seconds(-50.0, 0.0), 0.0);
    }

    #[test]
    fn re_arming_keeps_the_heap_bounded() {
        let (_, clock) = jumping_clock();
        let (_, fire) = recorder(|_| Fired::Stop);
        let s = Scheduler::start(fire, clock, 1.0, Duration::from_secs(60)).unwrap();
        let now = crate::token::now_unix_seconds();
        for i in 0..10_000 {
            s.arm("anthropic", None, now + 3600.0 + f64::from(i));
            s.arm("codex", Some("work"), now + 7200.0 + f64::from(i));
        }
        assert_eq!(s.armed(), 2);
        assert!(s.heap_len() <= 2 * 2 + COMPACT_SLACK + 1, "superseded entries compacted: {}", s.heap_len());
        s.retain(&|p, _| p == "codex");
        assert_eq!(s.armed(), 1);
    }

    #[test]
    fn backoff_doubles_from_30_s_up_to_30_min() {
        let secs: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 960, 1800, 1800, 1800, 1800]);
    }

    /// A wall clock that can jump, as it does over a suspend.
    fn jumping_clock() -> (Arc<AtomicU64>, Box<WallClock>) {
        let offset = Arc::new(AtomicU64::new(0));
        let o = offset.clone();
        (offset, Box::new(move || crate::token::now_unix_seconds() + o.load(Ordering::SeqCst) as f64))
    }

    type Log = Arc<Mutex<Vec<(String, f64, Instant)>>>;

    fn recorder(outcome: impl Fn(usize) -> Fired + Send + Sync + 'static) -> (Log, Box<FireFn>) {
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let fire = move |p: &str, b: Option<&str>, e: f64| {
            let mut log = l.lock().unwrap();
            log.push((format!("{p}:{}", b.unwrap_or("default")), e, Instant::now()));
            outcome(log.len())
        };
        (log, Box::new(fire))
    }

    fn wait_for(log: &Log, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while log.lock().unwrap().len() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn a_timer_that_came_due_during_a_suspend_fires_on_the_next_wall_clock_check() {
        let (offset, clock) = jumping_clock();
        let (log, fire) = recorder(|_| Fired::Stop);
        // real time scale, but the wall clock is checked every 50 ms
        let s = Scheduler::start(fire, clock, 1.0, Duration::from_millis(50)).unwrap();
        let now = crate::token::now_unix_seconds();
        s.arm("anthropic", None, now + 3600.0);
        std::thread::sleep(Duration::from_millis(200));
        assert!(log.lock().unwrap().is_empty(), "not due for 53 minutes");
        // the machine sleeps for an hour: the monotonic clock does not move, the wall clock does
        let jumped = Instant::now();
        offset.store(3300, Ordering::SeqCst);
        assert!(wait_for(&log, 1, Duration::from_secs(2)), "fired after the resume");
        assert!(log.lock().unwrap()[0].2.duration_since(jumped) < Duration::from_millis(500));
        assert_eq!(log.lock().unwrap()[0].1, now + 3600.0, "fired for the token it was armed for");
    }

    #[test]
    fn success_re_arms_failure_backs_off_and_stop_cancels() {
        let (_, clock) = jumping_clock();
        let now = crate::token::now_unix_seconds();
        // 1: failure, 2: renewed to an expiry that is due at once, 3: stop
        let (log, fire) = recorder(move |n| match n {
            1 => Fired::Failed,
            2 => Fired::Renewed { expiry: now + 100.0 },
            _ => Fired::Stop,
        });
        // a scale of 1/1000: the 30 s backoff is 30 ms
        let s = Scheduler::start(fire, clock, 0.001, Duration::from_millis(20)).unwrap();
        s.arm("codex", Some("work"), now + 10.0);
        assert!(wait_for(&log, 3, Duration::from_secs(3)));
        let log = log.lock().unwrap().clone();
        assert_eq!(log[0].0, "codex:work");
        let gap = log[1].2.duration_since(log[0].2);
        assert!(gap >= Duration::from_millis(29), "backed off 30 s (scaled): {gap:?}");
        assert_eq!(log[2].1, now + 100.0, "re-armed for the renewed token");
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(s.armed(), 0, "Stop removed the timer");
    }

    #[test]
    fn gives_up_after_ten_failures_until_another_token_is_served() {
        let (_, clock) = jumping_clock();
        let (log, fire) = recorder(|_| Fired::Failed);
        let s = Scheduler::start(fire, clock, 0.0001, Duration::from_millis(10)).unwrap();
        let expiry = crate::token::now_unix_seconds() + 1.0;
        s.arm("anthropic", None, expiry);
        assert!(wait_for(&log, 10, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(log.lock().unwrap().len(), 10, "stopped after ten");
        s.arm("anthropic", None, expiry);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(log.lock().unwrap().len(), 10, "the same token does not restart it");
        s.arm("anthropic", None, expiry + 60.0);
        assert!(wait_for(&log, 11, Duration::from_secs(2)), "a new token does");
        s.stop();
        assert_eq!(s.armed(), 0);
    }
}
