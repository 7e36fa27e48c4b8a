/*!
Reading a response body piece by piece as its framing says (none, a
length, chunks, or until the close), and telling a clean end from a cut.
*/
#![forbid(unsafe_code)]

use std::io::{BufRead, Read};
use std::net::Shutdown;

use super::{BodyFraming, Exchange, Read2, UpstreamError, io_error};

impl Exchange {
    /// Whether the response has a known length (forwarded as
    /// `Content-Length`), and what it is.
    pub fn content_length(&self) -> Option<u64> {
        match self.body {
            BodyFraming::None => Some(0),
            BodyFraming::Length(n) => Some(n),
            _ => None,
        }
    }

    /// Whether a body of known length has arrived whole (the next
    /// [`read`](Self::read) is its end, with no I/O).
    pub fn complete(&self) -> bool {
        matches!(self.body, BodyFraming::None | BodyFraming::Length(0))
    }

    /// The next piece of the body as it arrives. An error is a body that
    /// did not end as its framing says (a reset, an early close, a
    /// timeout): the caller passes it on as an abort.
    pub fn read(&mut self) -> Result<Read2, UpstreamError> {
        let piece = self.read_piece();
        if matches!(piece, Ok(Read2::End)) {
            self.ended = true;
        }
        piece
    }

    fn read_piece(&mut self) -> Result<Read2, UpstreamError> {
        match self.body {
            BodyFraming::None | BodyFraming::Length(0) => Ok(Read2::End),
            BodyFraming::Length(left) => {
                let buf = self.reader.fill_buf().map_err(io_error)?;
                if buf.is_empty() {
                    return Err(UpstreamError::Protocol("the body ended short of its length"));
                }
                let n = buf.len().min(left as usize);
                let data = buf[..n].to_vec();
                self.reader.consume(n);
                self.body = BodyFraming::Length(left - n as u64);
                Ok(Read2::Data(data))
            }
            BodyFraming::Close => {
                let buf = self.reader.fill_buf().map_err(io_error)?;
                if buf.is_empty() {
                    self.body = BodyFraming::None;
                    return Ok(Read2::End);
                }
                let data = buf.to_vec();
                let n = data.len();
                self.reader.consume(n);
                Ok(Read2::Data(data))
            }
            BodyFraming::Chunked => self.read_chunk(),
        }
    }

    /// The next piece of a chunked body: as much of the current chunk as
    /// has arrived, at most 64 KiB (a chunk's announced size is never
    /// allocated up front).
    fn read_chunk(&mut self) -> Result<Read2, UpstreamError> {
        const CUT: UpstreamError = UpstreamError::Protocol("the chunked body was cut");
        if self.chunk_left > 0 {
            let buf = self.reader.fill_buf().map_err(io_error)?;
            if buf.is_empty() {
                return Err(CUT);
            }
            let n = buf.len().min(64 * 1024).min(usize::try_from(self.chunk_left).unwrap_or(usize::MAX));
            let data = buf[..n].to_vec();
            self.reader.consume(n);
            self.chunk_left -= n as u64;
            if self.chunk_left == 0 {
                let mut crlf = [0u8; 2];
                self.reader.read_exact(&mut crlf).map_err(|_| CUT)?;
                if &crlf != b"\r\n" {
                    return Err(UpstreamError::Protocol("bad chunk framing"));
                }
            }
            return Ok(Read2::Data(data));
        }
        let mut line = Vec::new();
        let n = (&mut self.reader).take(4096).read_until(b'\n', &mut line).map_err(io_error)?;
        if n == 0 || !line.ends_with(b"\n") {
            return Err(UpstreamError::Protocol("the chunked body was cut"));
        }
        let size_text = line.split(|&b| b == b';' || b == b'\r' || b == b'\n').next().unwrap_or_default();
        let size = std::str::from_utf8(size_text.trim_ascii())
            .ok()
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or(UpstreamError::Protocol("bad chunk size"))?;
        if size == 0 {
            // trailers up to the empty line
            loop {
                line.clear();
                let n = (&mut self.reader).take(4096).read_until(b'\n', &mut line).map_err(io_error)?;
                if n == 0 {
                    return Err(UpstreamError::Protocol("the chunked body was cut"));
                }
                if line == b"\r\n" || line == b"\n" {
                    self.body = BodyFraming::None;
                    return Ok(Read2::End);
                }
            }
        }
        self.chunk_left = size;
        self.read_chunk()
    }

    /// Stops the request: the provider sees the connection close.
    pub fn abort(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}
