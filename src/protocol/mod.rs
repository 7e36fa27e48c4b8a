/*!
The wire protocol, pure: bytes in, typed values out, and back. No sockets,
no stores. The server reads frames with [`frame`], parses them with
[`message`], and writes the answers [`message`] builds.

A frame is a 4-byte big-endian length N followed by N bytes of UTF-8 JSON
(one object), with N at most [`MAX_FRAME_LEN`] for protocol version 1. The
first frame of a connection is the handshake; every later frame is a
request `{"v":1,"id":..,"op":..,"payload":{..}}` answered by exactly one
response in order.
*/
#![forbid(unsafe_code)]

pub mod frame;
pub mod message;

pub use frame::{FrameError, HEADER_LEN, MAX_FRAME_LEN, encode_frame, frame_len};
pub use message::{ErrorCode, HandshakeRequest, Op, Request, RequestError};

/// The protocol version this daemon speaks.
pub const PROTOCOL_VERSION: u64 = 1;
