/*!
Frame codec: `u32` big-endian length, then that many bytes. The length is
checked from the 4 header bytes alone, before anything is allocated.
*/
#![forbid(unsafe_code)]

use std::fmt;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;
/// Largest payload accepted or sent under protocol version 1.
pub const MAX_FRAME_LEN: usize = 65_536;
/// Largest payload accepted or sent under protocol version 2 (4 MiB).
pub const MAX_FRAME_LEN_V2: usize = 4_194_304;

/// The largest payload of protocol `version`.
pub fn max_frame_len(version: u64) -> usize {
    if version >= 2 { MAX_FRAME_LEN_V2 } else { MAX_FRAME_LEN }
}

/// Why a frame header is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A zero-length frame (no JSON object fits in zero bytes).
    Empty,
    /// Longer than [`MAX_FRAME_LEN`].
    TooLarge(u32),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => f.write_str("empty frame"),
            FrameError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds the limit"),
        }
    }
}

/// The payload length announced by a header, if acceptable (version 1).
pub fn frame_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    frame_len_max(header, MAX_FRAME_LEN)
}

/// The payload length announced by a header, if it is at most `max`.
pub fn frame_len_max(header: [u8; HEADER_LEN], max: usize) -> Result<usize, FrameError> {
    let n = u32::from_be_bytes(header);
    if n == 0 {
        return Err(FrameError::Empty);
    }
    if n as usize > max {
        return Err(FrameError::TooLarge(n));
    }
    Ok(n as usize)
}

/// A frame carrying `payload` (version 1). `None` when the payload is too
/// large to send.
pub fn encode_frame(payload: &[u8]) -> Option<Vec<u8>> {
    encode_frame_max(payload, MAX_FRAME_LEN)
}

/// A frame carrying `payload` of at most `max` bytes.
pub fn encode_frame_max(payload: &[u8], max: usize) -> Option<Vec<u8>> {
    if payload.is_empty() || payload.len() > max {
        return None;
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_vectors() {
        assert_eq!(encode_frame(b"{}").unwrap(), [0, 0, 0, 2, b'{', b'}']);
        assert_eq!(frame_len([0, 1, 0, 0]), Ok(65_536));
        assert_eq!(frame_len([0, 1, 0, 1]), Err(FrameError::TooLarge(65_537)));
        assert_eq!(frame_len([0xff; 4]), Err(FrameError::TooLarge(u32::MAX)));
        assert_eq!(frame_len([0; 4]), Err(FrameError::Empty));
        assert!(encode_frame(&vec![b' '; MAX_FRAME_LEN + 1]).is_none());
        assert!(encode_frame(b"").is_none());
        assert_eq!(frame_len_max([0, 0x40, 0, 0], MAX_FRAME_LEN_V2), Ok(4_194_304));
        assert_eq!(frame_len_max([0, 0x40, 0, 1], MAX_FRAME_LEN_V2), Err(FrameError::TooLarge(4_194_305)));
        assert!(encode_frame_max(&vec![b' '; 100_000], MAX_FRAME_LEN_V2).is_some());
    }
}
