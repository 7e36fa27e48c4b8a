/*!
The provider's answer relayed to the client read by read: our own status
line, the provider's headers less hop-by-hop ones, and the body with the
real credential scrubbed out.
*/
#![forbid(unsafe_code)]

use std::io::Write;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use super::Audit;
use super::errors::reason;
use super::watch::ClientWatch;
use crate::inject::upstream::{Exchange, Read2};

/// Response headers that do not go back to the client.
const RESPONSE_DROPPED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "set-cookie",
    "proxy-authenticate",
];

/// Streams the provider's answer to the client, each read at once. An
/// answer that does not end cleanly upstream reaches the client as an
/// abort (the connection closes without the final chunk). Returns whether
/// the connection goes on.
pub(super) fn stream_back(
    mut ex: Exchange,
    writer: &mut UnixStream,
    audit: &mut Audit,
    close: bool,
    mut scrub: Option<crate::inject::scrub::Scrubber>,
    watch: ClientWatch,
) -> bool {
    audit.status = ex.status;
    let length = ex.content_length();
    // Our own reason phrase: the provider's could carry anything.
    let mut head = format!("HTTP/1.1 {} {}\r\n", ex.status, reason(ex.status)).into_bytes();
    for (name, value) in &ex.headers {
        if !RESPONSE_DROPPED.contains(&name.as_str()) {
            let mut value = value.clone();
            if let Some(s) = &scrub {
                s.mask(&mut value);
            }
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(&value);
            head.extend_from_slice(b"\r\n");
        }
    }
    match length {
        Some(n) => head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(if close {
        b"connection: close\r\n\r\n"
    } else {
        b"keep-alive: timeout=60\r\n\r\n"
    });
    if writer.write_all(&head).is_err() {
        watch.stop();
        ex.abort();
        audit.outcome = "aborted-by-client".into();
        return false;
    }
    // A sandbox that goes away while the provider is silent would not be
    // noticed until the next write: the watcher shuts the upstream request
    // down as soon as the client hangs up, so the provider stops
    // generating (and billing).
    let last = match relay(&mut ex, writer, audit, length, close, scrub.as_mut()) {
        Relayed::Over(keep) => {
            let gone = watch.stop();
            ex.release();
            if audit.outcome == "upstream-abort" {
                if gone {
                    // the watcher cut the upstream request because the client left
                    audit.outcome = "aborted-by-client".into();
                }
                // Never the final chunk: the client must see the cut.
                let _ = writer.shutdown(Shutdown::Both);
            }
            return keep;
        }
        Relayed::Last(data) => data,
    };
    // A body of known length has arrived whole: its connection goes back
    // to the pool before the client has the last bytes, so a request the
    // client sends next finds it there. The watcher stops first: it must
    // never shut a pooled connection down.
    let gone = watch.stop();
    audit.usage.feed(b"\n");
    if gone {
        // the watcher has shut the upstream socket: never pooled
        ex.abort();
        audit.outcome = "aborted-by-client".into();
        return false;
    }
    let _ = ex.read(); // the end, without I/O: marks the exchange ended
    ex.release();
    let held = scrub.as_mut().map(|s| s.finish()).unwrap_or_default();
    let tail = [last, held].concat();
    if writer.write_all(&tail).is_err() {
        audit.outcome = "aborted-by-client".into();
        return false;
    }
    audit.bytes_out += tail.len() as u64;
    !close
}

/// How the relay of a body ended.
enum Relayed {
    /// The body was relayed to its end (or cut); whether the connection goes on.
    Over(bool),
    /// A body of known length arrived whole; its last piece (scrubbed, the
    /// held-back tail not yet added) is still to be written.
    Last(Vec<u8>),
}

/// Copies the body, read by read. Returns whether the connection goes on.
fn relay(
    ex: &mut Exchange,
    writer: &mut UnixStream,
    audit: &mut Audit,
    length: Option<u64>,
    close: bool,
    mut scrub: Option<&mut crate::inject::scrub::Scrubber>,
) -> Relayed {
    loop {
        match ex.read() {
            Ok(Read2::Data(data)) => {
                audit.usage.feed(&data);
                let data = match scrub.as_deref_mut() {
                    Some(s) => s.feed(&data),
                    None => data,
                };
                if length.is_some() && ex.complete() {
                    return Relayed::Last(data);
                }
                if data.is_empty() {
                    continue; // all held back: never an empty chunk (it would end the body)
                }
                let sent = if length.is_some() {
                    writer.write_all(&data)
                } else {
                    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
                    chunk.extend_from_slice(&data);
                    chunk.extend_from_slice(b"\r\n");
                    writer.write_all(&chunk)
                };
                if sent.is_err() {
                    ex.abort();
                    audit.outcome = "aborted-by-client".into();
                    return Relayed::Over(false);
                }
                audit.bytes_out += data.len() as u64;
            }
            Ok(Read2::End) => {
                audit.usage.feed(b"\n");
                let held = scrub.as_deref_mut().map(|s| s.finish()).unwrap_or_default();
                let tail = match (held.is_empty(), length) {
                    (true, _) => Ok(()),
                    (false, Some(_)) => writer.write_all(&held),
                    (false, None) => writer
                        .write_all(&[format!("{:x}\r\n", held.len()).as_bytes(), &held, b"\r\n"].concat()),
                };
                audit.bytes_out += held.len() as u64;
                if tail.is_err() || (length.is_none() && writer.write_all(b"0\r\n\r\n").is_err()) {
                    audit.outcome = "aborted-by-client".into();
                    return Relayed::Over(false);
                }
                return Relayed::Over(!close);
            }
            Err(e) => {
                crate::log_warn!("proxy: the provider's answer was cut: {e}");
                ex.abort();
                audit.outcome = "upstream-abort".into();
                return Relayed::Over(false);
            }
        }
    }
}
