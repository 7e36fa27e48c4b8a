/*!
Protocol version 2 on one connection (SPEC §12): a small set of threads
per connection in a leader/follower arrangement. One thread at a time holds
the reading side; when it has read a request it passes the reading side on
(starting another thread when none waits) and runs the request itself, so
there is no hand-off between reading and running, and a slow request never
holds up the next frame. Answers go out whole, under one writer lock, as
each finishes.

- At most [`MAX_IN_FLIGHT`] requests in flight: the next one is answered
  `RESOURCE_EXHAUSTED`; an id already in flight `INVALID_REQUEST`
  "Duplicate request id". `cancel` is exempt from both and answered by the
  reading thread itself.
- `cancel {targetId}` of a request in flight answers `{"cancelled":true}`,
  then the target's `CANCELLED` at once; the target's work is told to stop
  through its [`CancelFlag`] and its own answer is dropped when it ends (a
  provider call may finish meanwhile: the host store keeps what it needs).
  An unknown target answers `{"cancelled":false}`.
- The in-flight table decides who answers an id: whoever takes the id out
  of it (the running thread when done, the reading one on cancel) sends its answer, so
  an id gets exactly one answer besides the cancel's own.
- Closing the connection cancels everything in flight; the connection's
  own thread then waits for the others, so the connection's slot is held
  until its work has stopped.
- An idle connection is closed only when nothing is in flight.

Threads are started when none waits for the reading side, up to
[`MAX_WORKERS`] plus the reader (in flight plus cancelled work still
winding down); more work than that is answered `RESOURCE_EXHAUSTED`.
*/
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde_json::{Map, json};

use super::connection::{answer_frame, is_refusal, wire_error};
use super::limits::{PeerKey, Refusals};
use super::reader::{FrameReader, ReadError};
use super::{Shared, dispatch, wire};
use crate::oauth::Owner;
use crate::protocol::message::{self, ErrorCode, Op, Request};

/// Requests in flight on one connection.
pub const MAX_IN_FLIGHT: usize = 16;
/// Worker threads of one connection at most.
pub const MAX_WORKERS: usize = 2 * MAX_IN_FLIGHT;
const VERSION: u64 = 2;

/// Tells a request's work that its answer is no longer wanted.
#[derive(Clone)]
pub struct CancelFlag {
    cancelled: Arc<AtomicBool>,
    cancellable: bool,
}

impl CancelFlag {
    /// The flag of a version-2 request, which `cancel` and closing the
    /// connection can set.
    pub fn new() -> CancelFlag {
        CancelFlag { cancelled: Arc::new(AtomicBool::new(false)), cancellable: true }
    }

    /// The flag of a version-1 request: nothing can cancel it (the
    /// connection is not read while it runs), so long operations are
    /// refused.
    pub fn uncancellable() -> CancelFlag {
        CancelFlag { cancelled: Arc::new(AtomicBool::new(false)), cancellable: false }
    }

    /// Whether the request can be cancelled at all.
    pub fn is_cancellable(&self) -> bool {
        self.cancellable
    }

    /// Whether the request was cancelled (or its connection closed).
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    fn same(&self, other: &CancelFlag) -> bool {
        Arc::ptr_eq(&self.cancelled, &other.cancelled)
    }
}

impl Default for CancelFlag {
    fn default() -> Self {
        CancelFlag::new()
    }
}

/// What the threads of one connection share.
struct Conn {
    shared: Arc<Shared>,
    who: String,
    owner: Owner,
    key: PeerKey,
    writer: Mutex<UnixStream>,
    reading: Mutex<Reading>,
    in_flight: Mutex<HashMap<String, CancelFlag>>,
    refusals: Mutex<Refusals>,
    broken: AtomicBool,
    /// Set once the reading side is done: every thread stops.
    ended: AtomicBool,
    /// Threads started besides the connection's own.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    alive: AtomicUsize,
    /// Threads queued for the reading side.
    waiting: AtomicUsize,
    /// Threads running a request (cancelled ones included).
    busy: AtomicUsize,
}

impl Conn {
    fn in_flight(&self) -> MutexGuard<'_, HashMap<String, CancelFlag>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes one whole answer frame; a failed write ends the connection.
    fn send(&self, id: &str, payload: Vec<u8>) {
        let framed = answer_frame(id, payload, VERSION);
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.broken.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = w.write_all(&framed) {
            crate::log_info!("audit {} op=write outcome=closed reason=\"{e}\"", self.who);
            self.broken.store(true, Ordering::SeqCst);
            let _ = w.shutdown(Shutdown::Both);
        }
    }

    fn audit(&self, op: &str, target: &str, outcome: &'static str, started: Instant) {
        let line = || {
            crate::log_info!(
                "audit {} op={op} target={target} outcome={outcome} duration_us={}",
                self.who,
                started.elapsed().as_micros()
            )
        };
        if !is_refusal(outcome) {
            return line();
        }
        let (own, summary) = self.refusals.lock().unwrap_or_else(|e| e.into_inner()).note(outcome, started);
        if let Some(summary) = summary {
            crate::log_info!("audit {} {summary}", self.who);
        }
        if own {
            line();
        }
    }

    /// Takes `id` out of the in-flight table if it is still this
    /// request's (the id may have been cancelled and reused since).
    fn finish(&self, id: &str, flag: &CancelFlag) -> bool {
        let mut table = self.in_flight();
        if table.get(id).is_some_and(|f| f.same(flag)) {
            table.remove(id);
            true
        } else {
            false
        }
    }

    /// A worker's job: answer `req` unless it was cancelled meanwhile. A
    /// request cancelled before it started does nothing. A panic in the
    /// handler is answered `INTERNAL_ERROR`, so no id is left unanswered.
    fn run(&self, req: Request, flag: CancelFlag, started: Instant) {
        if flag.is_cancelled() {
            self.audit(req.op.name(), "-", "cancelled", started);
            return;
        }
        let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dispatch::handle(&self.shared, &req, self.owner, &flag)
        }));
        let (reply, outcome, target) = handled.unwrap_or_else(|_| {
            crate::log_error!("{}: the {} handler panicked", self.who, req.op.name());
            (wire_error(&req.id, wire::PANICKED), "INTERNAL_ERROR", "-".to_owned())
        });
        if self.finish(&req.id, &flag) && !flag.is_cancelled() {
            self.send(&req.id, reply);
            self.audit(req.op.name(), &target, outcome, started);
        } else {
            self.audit(req.op.name(), &target, "cancelled", started);
        }
    }

    /// `cancel {targetId}`, answered by the reader at once.
    fn cancel(&self, id: &str, target_id: &str, started: Instant) {
        let flag = self.in_flight().remove(target_id);
        let shown: String = target_id.chars().take(16).collect();
        match flag {
            Some(flag) => {
                flag.cancel();
                self.send(id, message::ok_response(id, object(json!({"cancelled": true}))));
                self.send(target_id, wire_error(target_id, wire::CANCELLED));
                self.audit("cancel", &shown, "ok", started);
            }
            None => {
                self.send(id, message::ok_response(id, object(json!({"cancelled": false}))));
                self.audit("cancel", &shown, "not_in_flight", started);
            }
        }
    }

    /// Cancels everything in flight (the connection is closing).
    fn cancel_all(&self) {
        for (_, flag) in self.in_flight().drain() {
            flag.cancel();
        }
    }
}

fn object(v: serde_json::Value) -> Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The connection's reading side: whichever thread holds it reads the next
/// request.
struct Reading {
    reader: FrameReader,
    stream: UnixStream,
}

/// Serves a version-2 connection until it closes, times out or misbehaves.
pub fn serve(
    shared: &Arc<Shared>,
    who: String,
    key: PeerKey,
    owner: Owner,
    reader: FrameReader,
    stream: UnixStream,
) {
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            crate::log_warn!("{who}: cannot clone the socket: {e}");
            return;
        }
    };
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        who,
        owner,
        key,
        writer: Mutex::new(writer),
        reading: Mutex::new(Reading { reader, stream }),
        in_flight: Mutex::new(HashMap::new()),
        refusals: Mutex::new(Refusals::default()),
        broken: AtomicBool::new(false),
        ended: AtomicBool::new(false),
        threads: Mutex::new(Vec::new()),
        alive: AtomicUsize::new(1),
        waiting: AtomicUsize::new(0),
        busy: AtomicUsize::new(0),
    });
    participate(&conn);
    // The connection's slot is held until every thread has stopped.
    loop {
        let handles: Vec<_> = conn.threads.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        if handles.is_empty() {
            break;
        }
        for h in handles {
            let _ = h.join();
        }
    }
    if let Some(summary) = conn.refusals.lock().unwrap_or_else(|e| e.into_inner()).summary() {
        crate::log_info!("audit {} {summary}", conn.who);
    }
}

/// One thread of the connection (leader/follower): take the reading side,
/// read until a request to run, hand the reading side to the next thread
/// (starting one when none waits), run the request, answer, and queue for
/// the reading side again. So a request runs on the thread that read it
/// (no hand-off on the way), and while it runs another thread reads.
fn participate(conn: &Arc<Conn>) {
    loop {
        conn.waiting.fetch_add(1, Ordering::SeqCst);
        let mut reading = conn.reading.lock().unwrap_or_else(|e| e.into_inner());
        conn.waiting.fetch_sub(1, Ordering::SeqCst);
        if conn.ended.load(Ordering::SeqCst) {
            return;
        }
        let next = next_request(conn, &mut reading);
        if next.is_none() {
            conn.ended.store(true, Ordering::SeqCst);
            conn.cancel_all();
            let _ = reading.stream.shutdown(Shutdown::Read);
        }
        drop(reading);
        let Some((req, flag, started)) = next else { return };
        if conn.waiting.load(Ordering::SeqCst) == 0 && conn.alive.load(Ordering::SeqCst) < MAX_WORKERS + 1 {
            let c = conn.clone();
            c.alive.fetch_add(1, Ordering::SeqCst);
            let spawned = std::thread::Builder::new().name("conn-worker".into()).spawn({
                let c = c.clone();
                move || participate(&c)
            });
            match spawned {
                Ok(h) => c.threads.lock().unwrap_or_else(|e| e.into_inner()).push(h),
                Err(e) => {
                    c.alive.fetch_sub(1, Ordering::SeqCst);
                    crate::log_error!("{}: cannot start a thread: {e}", c.who);
                }
            }
        }
        conn.busy.fetch_add(1, Ordering::SeqCst);
        conn.run(req, flag, started);
        conn.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads frames until one is a request to run (answering the others
/// here: refusals, `cancel`); `None` when the connection ends.
fn next_request(conn: &Arc<Conn>, reading: &mut Reading) -> Option<(Request, CancelFlag, Instant)> {
    let shared = &conn.shared;
    let idle = shared.config.idle_timeout;
    let Reading { reader, stream } = reading;
    loop {
        if shared.stopping.load(Ordering::SeqCst) || conn.broken.load(Ordering::SeqCst) {
            return None;
        }
        let body = match reader.next(stream, idle) {
            Ok(b) => b,
            // A request in flight (a long GitHub watch) keeps the
            // connection open however long it takes.
            Err(ReadError::Idle) if !conn.in_flight().is_empty() => continue,
            Err(ReadError::Bad(e)) => {
                crate::log_info!("audit {} op=frame outcome=closed reason=\"{e}\"", conn.who);
                conn.send(
                    "unknown",
                    message::error_response("unknown", ErrorCode::InvalidRequest, &e.to_string(), None),
                );
                return None;
            }
            Err(e) => {
                crate::log_debug!("{} closed: {e:?}", conn.who);
                return None;
            }
        };
        let started = Instant::now();
        let parsed = message::parse_request(body);
        if !shared.limits.allow(conn.key) {
            let (id, op) = match &parsed {
                Ok(req) => (req.id.as_str(), req.op.name()),
                Err(e) => (e.id.as_str(), "invalid"),
            };
            conn.send(id, wire_error(id, wire::TOO_MANY_REQUESTS));
            conn.audit(op, "-", "RATE_LIMITED", started);
            continue;
        }
        let req = match parsed {
            Ok(req) => req,
            Err(e) => {
                conn.send(&e.id, message::error_response(&e.id, e.code, &e.message, None));
                conn.audit("invalid", "-", e.code.as_str(), started);
                continue;
            }
        };
        if let Op::Cancel { target_id } = &req.op {
            conn.cancel(&req.id, target_id, started);
            continue;
        }
        let flag = CancelFlag::new();
        let mut in_flight = conn.in_flight();
        let refused = if in_flight.contains_key(&req.id) {
            Some(wire::DUPLICATE_ID)
        } else if in_flight.len() >= MAX_IN_FLIGHT || conn.busy.load(Ordering::SeqCst) >= MAX_WORKERS {
            Some(wire::TOO_MANY_IN_FLIGHT)
        } else {
            in_flight.insert(req.id.clone(), flag.clone());
            None
        };
        drop(in_flight);
        match refused {
            Some(e) => {
                conn.send(&req.id, wire_error(&req.id, e));
                conn.audit(req.op.name(), "-", e.code.as_str(), started);
            }
            None => return Some((req, flag, started)),
        }
    }
}
