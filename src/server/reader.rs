/*!
Reading frames off a connection: a small read-ahead buffer, the idle
timeout before a frame starts and the partial-frame deadline once it has.
Generic over [`FrameSource`] so the same code runs on a socket, in unit
tests and under the fuzzer.
*/
#![forbid(unsafe_code)]

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::PARTIAL_FRAME_TIMEOUT;
use crate::protocol::frame::{self, FrameError, HEADER_LEN};

/// Something frames are read from: a byte stream whose read timeout can
/// be set.
pub trait FrameSource: Read {
    /// Makes the next reads give up after `timeout`.
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()>;
}

impl FrameSource for UnixStream {
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        UnixStream::set_read_timeout(self, Some(timeout))
    }
}

/// Why reading a frame stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection between frames.
    Closed,
    /// Nothing arrived for the idle timeout.
    Idle,
    /// A frame started but did not finish in time.
    Partial,
    /// The header announced an unacceptable length.
    Bad(FrameError),
    /// Another socket error.
    Io(io::Error),
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Bytes read ahead on one connection. A frame usually arrives in one
/// `read`; frames a client pipelines stay here for the next call. The
/// socket's read timeout is changed only when it must be, so a busy
/// connection costs one `read` per request.
pub struct FrameReader {
    /// Zero-filled once as it grows; `start..end` holds unread bytes.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    timeout: Option<Duration>,
    max: usize,
}

/// Smallest read.
const READ_CHUNK: usize = 4096;

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        FrameReader { buf: Vec::new(), start: 0, end: 0, timeout: None, max: frame::MAX_FRAME_LEN }
    }

    /// Accepts frames of up to `max` bytes from now on (the negotiated
    /// version's limit; version 1's until then).
    pub fn set_max_frame(&mut self, max: usize) {
        self.max = max;
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn set_timeout<S: FrameSource>(&mut self, stream: &S, t: Duration) -> Result<(), ReadError> {
        if self.timeout != Some(t) {
            stream.set_read_timeout(t).map_err(ReadError::Io)?;
            self.timeout = Some(t);
        }
        Ok(())
    }

    /// One `read` with room for at least `want` more bytes; the count
    /// read. The buffer grows (and is zero-filled) only when the room is
    /// not there, so a frame trickled in tiny pieces costs no more than
    /// one sent at once.
    fn fill<S: FrameSource>(&mut self, stream: &mut S, want: usize) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let need = self.end + want.max(READ_CHUNK);
        if self.buf.len() < need {
            self.buf.resize(need, 0);
        }
        let got = loop {
            match stream.read(&mut self.buf[self.end..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        self.end += *got.as_ref().unwrap_or(&0);
        got
    }

    /// Reads one frame's body. The first byte may take up to `idle`; from
    /// then on the whole frame must arrive within [`PARTIAL_FRAME_TIMEOUT`].
    pub fn next<S: FrameSource>(&mut self, stream: &mut S, idle: Duration) -> Result<&[u8], ReadError> {
        if self.buffered().is_empty() {
            // A large version-2 frame does not keep its buffer for the
            // connection's life.
            if self.buf.len() > 16 * READ_CHUNK {
                self.buf = Vec::new();
            }
            self.start = 0;
            self.end = 0;
            self.set_timeout(stream, idle)?;
            match self.fill(stream, READ_CHUNK) {
                Ok(0) => return Err(ReadError::Closed),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err(ReadError::Idle),
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
        let deadline = Instant::now() + PARTIAL_FRAME_TIMEOUT;
        loop {
            let have = self.buffered();
            let need = match <[u8; HEADER_LEN]>::try_from(have.get(..HEADER_LEN).unwrap_or(&[])) {
                Ok(header) => {
                    let need = HEADER_LEN + frame::frame_len_max(header, self.max).map_err(ReadError::Bad)?;
                    if have.len() >= need {
                        let body = self.start + HEADER_LEN..self.start + need;
                        self.start += need;
                        return Ok(&self.buf[body]);
                    }
                    need
                }
                Err(_) => HEADER_LEN,
            };
            let missing = need - have.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadError::Partial);
            }
            self.set_timeout(stream, left)?;
            match self.fill(stream, missing) {
                Ok(0) => return Err(ReadError::Partial),
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err(ReadError::Partial),
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

/// An in-memory [`FrameSource`] that hands out its bytes in chunks of the
/// given sizes (then the rest at once), then end of stream. Used by the
/// unit tests and the fuzzer to drive [`FrameReader`] through every split.
#[cfg(test)]
pub struct ChunkedSource {
    data: Vec<u8>,
    chunks: Vec<usize>,
    pos: usize,
}

#[cfg(test)]
impl ChunkedSource {
    /// `data` delivered in reads of at most `chunks[i]` bytes (0 counts as 1).
    pub fn new(data: Vec<u8>, chunks: Vec<usize>) -> Self {
        ChunkedSource { data, chunks, pos: 0 }
    }
}

#[cfg(test)]
impl Read for ChunkedSource {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = if self.chunks.is_empty() { usize::MAX } else { self.chunks.remove(0).max(1) };
        let n = buf.len().min(limit).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
impl FrameSource for ChunkedSource {
    fn set_read_timeout(&self, _timeout: Duration) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(bodies: &[&[u8]]) -> Vec<u8> {
        bodies.iter().flat_map(|b| frame::encode_frame(b).unwrap()).collect()
    }

    fn read_all(data: Vec<u8>, chunks: Vec<usize>) -> (Vec<Vec<u8>>, String) {
        let mut src = ChunkedSource::new(data, chunks);
        let mut reader = FrameReader::new();
        let mut got = Vec::new();
        loop {
            match reader.next(&mut src, Duration::from_secs(1)) {
                Ok(body) => got.push(body.to_vec()),
                Err(e) => return (got, format!("{e:?}")),
            }
        }
    }

    #[test]
    fn frames_survive_every_split() {
        let data = framed(&[b"{}", b"{\"a\":1}", &[b'x'; 5000]]);
        for chunk in [1, 2, 3, 4, 5, 7, 100, 4096, 9000] {
            let (got, end) = read_all(data.clone(), vec![chunk; 10_000]);
            assert_eq!(got.len(), 3, "chunk {chunk}");
            assert_eq!(got[2].len(), 5000);
            assert_eq!(end, "Closed");
        }
    }

    #[test]
    fn bad_lengths_and_truncation() {
        let (got, end) = read_all(vec![0, 0, 0, 0], vec![]);
        assert!(got.is_empty() && end.starts_with("Bad"), "{end}");
        let (_, end) = read_all(vec![0xff, 0xff, 0xff, 0xff, 1], vec![]);
        assert!(end.starts_with("Bad"), "{end}");
        let (_, end) = read_all(vec![0, 0, 0, 10, b'{'], vec![]);
        assert_eq!(end, "Partial");
        let (_, end) = read_all(vec![0, 0], vec![]);
        assert_eq!(end, "Partial");
    }
}
