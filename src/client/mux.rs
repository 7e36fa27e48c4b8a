/*!
Protocol version 2 on the client's one connection: requests from many
threads go out at once, a reader thread hands each answer to the request
with its id, and a request that runs out of time sends `cancel` for itself
and gives up without harming the connection (SPEC §12; llxprt-code's
client does the same). Answers for ids no request waits for any more (a
cancelled request's late answer) are dropped.

The connection is lost, for every request waiting and every later one,
when the daemon closes it, sends a frame that breaks the response shape,
or a write fails.
*/
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::json;

use crate::protocol::frame::{HEADER_LEN, MAX_FRAME_LEN_V2, encode_frame_max, frame_len_max};
use crate::protocol::message::{ResponseFrame as Frame, decode_response as parse_frame};

/// Why a call did not get its answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum CallError {
    /// The connection is gone.
    Lost,
    /// No answer in time (`cancel` was sent for it).
    TimedOut,
}

/// The shared side of a version-2 connection.
pub(super) struct Mux {
    writer: Mutex<UnixStream>,
    pending: Mutex<HashMap<String, SyncSender<Frame>>>,
    broken: AtomicBool,
    closing: AtomicBool,
}

impl Mux {
    /// Starts the reader thread on a second handle of `stream`.
    pub(super) fn start(stream: &UnixStream) -> std::io::Result<Arc<Mux>> {
        let reader = stream.try_clone()?;
        let writer = stream.try_clone()?;
        reader.set_read_timeout(None)?;
        let mux = Arc::new(Mux {
            writer: Mutex::new(writer),
            pending: Mutex::new(HashMap::new()),
            broken: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        });
        let m = mux.clone();
        std::thread::Builder::new().name("credd-client-reader".into()).spawn(move || m.read_loop(reader))?;
        Ok(mux)
    }

    fn pending(&self) -> MutexGuard<'_, HashMap<String, SyncSender<Frame>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection was lost.
    pub(super) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Closes the connection on purpose (idle close, `close`, drop).
    pub(super) fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.writer.lock().unwrap_or_else(|e| e.into_inner()).shutdown(Shutdown::Both);
    }

    fn fail(&self) {
        if !self.closing.load(Ordering::SeqCst) {
            self.broken.store(true, Ordering::SeqCst);
        }
        let _ = self.writer.lock().unwrap_or_else(|e| e.into_inner()).shutdown(Shutdown::Both);
        // Dropping the senders wakes every waiting request.
        self.pending().clear();
    }

    fn read_loop(&self, mut stream: UnixStream) {
        loop {
            let mut header = [0u8; HEADER_LEN];
            if stream.read_exact(&mut header).is_err() {
                return self.fail();
            }
            let Ok(len) = frame_len_max(header, MAX_FRAME_LEN_V2) else { return self.fail() };
            let mut body = zeroize::Zeroizing::new(vec![0u8; len]);
            if stream.read_exact(&mut body).is_err() {
                return self.fail();
            }
            let Ok(frame) = parse_frame(&body) else {
                crate::log_debug!("credential proxy sent a malformed frame");
                return self.fail();
            };
            let waiting = frame.id.as_ref().and_then(|id| self.pending().remove(id));
            if let Some(tx) = waiting {
                let _ = tx.send(frame);
            }
        }
    }

    fn write(&self, bytes: &[u8], timeout: Duration) -> bool {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let ok = w.set_write_timeout(Some(timeout.max(Duration::from_millis(1)))).is_ok()
            && w.write_all(bytes).is_ok();
        drop(w);
        if !ok {
            self.fail();
        }
        ok
    }

    /// Sends the request `frame` (whose id is `id`) and waits up to
    /// `timeout` for its answer; on timeout sends `cancel` for it.
    pub(super) fn call(&self, id: &str, frame: &[u8], timeout: Duration) -> Result<Frame, CallError> {
        if self.is_broken() {
            return Err(CallError::Lost);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        self.pending().insert(id.to_owned(), tx);
        if !self.write(frame, timeout) {
            self.pending().remove(id);
            return Err(CallError::Lost);
        }
        match rx.recv_timeout(timeout) {
            Ok(frame) => Ok(frame),
            Err(RecvTimeoutError::Disconnected) => Err(CallError::Lost),
            Err(RecvTimeoutError::Timeout) => {
                self.pending().remove(id);
                self.cancel(id);
                Err(CallError::TimedOut)
            }
        }
    }

    /// Sends `cancel` for `target` (its answer, and the target's, are
    /// dropped when they come).
    fn cancel(&self, target: &str) {
        let Ok(id) = crate::random::uuid_v4() else { return };
        let body = json!({"v": 2, "id": id, "op": "cancel", "payload": {"targetId": target}}).to_string();
        if let Some(frame) = encode_frame_max(body.as_bytes(), MAX_FRAME_LEN_V2) {
            self.write(&frame, Duration::from_secs(5));
        }
    }
}
