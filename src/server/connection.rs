/*!
One connection: peer check, handshake (which settles the protocol
version), then frames in and responses out with the partial-frame and idle
timeouts and the per-peer rate limits. Version 1 is answered here, one
request at a time, in order; version 2 goes to [`super::concurrent`].
*/
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::limits::{PeerKey, Refusals};
use super::reader::{FrameReader, ReadError};
use super::{FAILED_HANDSHAKE_DELAY, Shared, dispatch, wire};
use crate::oauth::Owner;
use crate::protocol::frame;
use crate::protocol::message::{self, ErrorCode};
use crate::sys::{self, PeerCred};

fn send(stream: &mut UnixStream, payload: &[u8]) -> io::Result<()> {
    let framed = frame::encode_frame(payload).unwrap_or_else(|| {
        frame::encode_frame(&wire_error("unknown", wire::RESPONSE_TOO_LARGE)).expect("a short error frame")
    });
    stream.write_all(&framed)
}

pub(super) fn wire_error(id: &str, e: wire::WireError) -> Vec<u8> {
    message::error_response(id, e.code, e.text, e.retry_after)
}

/// The frame for the answer `payload` to request `id` on a connection of
/// protocol `version`. An answer too large for the version is replaced by
/// an error for the same id (version 1: `RESPONSE_TOO_LARGE`, counting the
/// header as llxprt-code's server does); the connection stays.
pub(super) fn answer_frame(id: &str, payload: Vec<u8>, version: u64) -> Vec<u8> {
    let payload = message::for_version(payload, version);
    let limit = if version == 1 { frame::MAX_FRAME_LEN - frame::HEADER_LEN } else { frame::MAX_FRAME_LEN_V2 };
    if let Some(framed) = (payload.len() <= limit).then(|| frame::encode_frame_max(&payload, limit)).flatten()
    {
        return framed;
    }
    crate::log_warn!("an answer of {} bytes does not fit a version-{version} frame; replaced", payload.len());
    let e = if version == 1 { wire::RESPONSE_TOO_LARGE_V1 } else { wire::RESPONSE_TOO_LARGE };
    let short = message::for_version(wire_error(id, e), version);
    frame::encode_frame(&short)
        .unwrap_or_else(|| frame::encode_frame(&wire_error("unknown", e)).expect("a short error frame"))
}

/// Answers a connection over the cap and closes it.
pub fn refuse_busy(mut stream: UnixStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = send(&mut stream, &wire_error("unknown", wire::TOO_MANY_CONNECTIONS));
}

fn peer_allowed(shared: &Shared, peer: &PeerCred) -> bool {
    peer.uid == sys::current_uid() || peer.uid.0 == 0 || shared.config.allow_uids.contains(&peer.uid)
}

fn token_matches(expected: &str, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| crate::secret::constant_time_eq(expected.as_bytes(), p.as_bytes()))
}

/// Serves one connection until it closes, times out, or misbehaves.
pub fn serve(shared: &Arc<Shared>, conn: u64, mut stream: UnixStream) {
    if shared.stopping.load(Ordering::SeqCst) {
        return;
    }
    let peer = match sys::peer_cred(stream.as_raw_fd()) {
        Ok(p) => p,
        Err(e) => {
            crate::log_warn!("conn={conn} refused: cannot read peer credentials: {e}");
            return;
        }
    };
    let key = PeerKey { uid: peer.uid.0, pid: peer.pid.map_or(-1, |p| p.0) };
    let who = format!("conn={conn} uid={} pid={}", key.uid, key.pid);
    if !peer_allowed(shared, &peer) {
        crate::log_warn!("audit {who} op=connect outcome=refused reason=peer_uid");
        return;
    }
    let _ = stream.set_write_timeout(Some(shared.config.write_timeout));
    crate::log_debug!("{who} connected");
    let idle = shared.config.idle_timeout;
    let mut reader = FrameReader::new();
    let first = match reader.next(&mut stream, idle.min(super::HANDSHAKE_TIMEOUT)) {
        Ok(f) => f.to_vec(),
        Err(e) => {
            crate::log_info!("audit {who} op=handshake outcome=closed reason={e:?}");
            return;
        }
    };
    if !shared.limits.allow(key) {
        crate::log_info!("audit {who} op=handshake outcome=RATE_LIMITED");
        std::thread::sleep(FAILED_HANDSHAKE_DELAY);
        let _ = send(&mut stream, &wire_error("unknown", wire::TOO_MANY_REQUESTS));
        return;
    }
    let (owner, version) = match message::parse_handshake(&first) {
        Ok(h) => {
            let expected = shared.config.capability_token.as_ref();
            if expected
                .is_some_and(|expected| !token_matches(expected.expose(), h.capability_token.as_deref()))
            {
                crate::log_warn!("audit {who} op=handshake outcome=unauthorized");
                std::thread::sleep(FAILED_HANDSHAKE_DELAY);
                let _ = send(
                    &mut stream,
                    &message::handshake_error(wire::BAD_CAPABILITY.code, wire::BAD_CAPABILITY.text),
                );
                return;
            }
            if let Err(e) = send(&mut stream, &message::handshake_ok(h.version)) {
                crate::log_info!("audit {who} op=handshake outcome=closed reason=\"write: {e}\"");
                return;
            }
            // Login sessions belong to this identity: the uid plus the
            // capability token, when the daemon requires one.
            let capability = shared.config.capability_token.as_ref().and(h.capability_token.as_deref());
            (Owner::new(peer.uid.0, capability), h.version)
        }
        Err(e) => {
            crate::log_info!("audit {who} op=handshake outcome={}", e.code.as_str());
            std::thread::sleep(FAILED_HANDSHAKE_DELAY);
            let reply = if e.code == ErrorCode::UnknownVersion {
                message::handshake_error(e.code, &e.message)
            } else {
                message::error_response(&e.id, e.code, &e.message, None)
            };
            let _ = send(&mut stream, &reply);
            return;
        }
    };
    crate::log_debug!("{who} protocol version {version}");
    if version >= 2 {
        reader.set_max_frame(frame::MAX_FRAME_LEN_V2);
        super::concurrent::serve(shared, who, key, owner, reader, stream);
        return;
    }
    let mut refusals = Refusals::default();
    serve_requests(shared, &who, key, owner, &mut reader, &mut stream, &mut refusals);
    if let Some(summary) = refusals.summary() {
        crate::log_info!("audit {who} {summary}");
    }
}

/// Whether an outcome is a refusal, whose audit lines are aggregated.
pub(super) fn is_refusal(outcome: &str) -> bool {
    matches!(
        outcome,
        "RATE_LIMITED"
            | "INVALID_REQUEST"
            | "FORBIDDEN"
            | "UNAUTHORIZED"
            | "RESOURCE_EXHAUSTED"
            | "INVALID_PARAM"
            | "UNKNOWN_OP"
    )
}

/// The request loop of a connection past its handshake.
fn serve_requests(
    shared: &Shared,
    who: &str,
    key: PeerKey,
    owner: Owner,
    reader: &mut FrameReader,
    stream: &mut UnixStream,
    refusals: &mut Refusals,
) {
    let idle = shared.config.idle_timeout;
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let body = match reader.next(stream, idle) {
            Ok(b) => b,
            Err(ReadError::Bad(e)) => {
                crate::log_info!("audit {who} op=frame outcome=closed reason=\"{e}\"");
                let _ = send(
                    stream,
                    &message::error_response("unknown", ErrorCode::InvalidRequest, &e.to_string(), None),
                );
                return;
            }
            Err(ReadError::Io(e)) => {
                crate::log_debug!("{who} socket error: {e}");
                return;
            }
            Err(e) => {
                crate::log_debug!("{who} closed: {e:?}");
                return;
            }
        };
        let started = Instant::now();
        let parsed = message::parse_request(body);
        let allowed = shared.limits.allow(key);
        let id = match &parsed {
            Ok(req) => req.id.clone(),
            Err(e) => e.id.clone(),
        };
        let (reply, op, outcome, target) = match parsed {
            _ if !allowed => {
                let id = match &parsed {
                    Ok(req) => req.id.as_str(),
                    Err(e) => e.id.as_str(),
                };
                let op = parsed.as_ref().map_or("invalid", |r| r.op.name());
                (wire_error(id, wire::TOO_MANY_REQUESTS), op, "RATE_LIMITED", "-".to_owned())
            }
            Err(e) => (
                message::error_response(&e.id, e.code, &e.message, None),
                "invalid",
                e.code.as_str(),
                "-".into(),
            ),
            Ok(req) => {
                let (reply, outcome, target) =
                    dispatch::handle(shared, &req, owner, &super::concurrent::CancelFlag::uncancellable());
                (reply, req.op.name(), outcome, target)
            }
        };
        let line = |what: &str| {
            crate::log_info!(
                "audit {who} op={op} target={what} outcome={outcome} duration_us={}",
                started.elapsed().as_micros()
            )
        };
        if is_refusal(outcome) {
            let (own, summary) = refusals.note(outcome, started);
            if let Some(summary) = summary {
                crate::log_info!("audit {who} {summary}");
            }
            if own {
                line(&target);
            }
        } else {
            line(&target);
        }
        if let Err(e) = stream.write_all(&answer_frame(&id, reply, 1)) {
            crate::log_info!("audit {who} op=write outcome=closed reason=\"{e}\"");
            return;
        }
    }
}
