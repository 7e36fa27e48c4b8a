/*!
The wire protocol, pure: bytes in, typed values out, and back. No sockets,
no stores, and no dependency on the OAuth or store modules: the names on the
wire (flow types, name rules) live here, in [`names`]. The server reads frames with [`frame`], parses them with
[`message`], and writes the answers [`message`] builds.

A frame is a 4-byte big-endian length N followed by N bytes of UTF-8 JSON
(one object), with N at most [`MAX_FRAME_LEN`] for protocol version 1 and
[`frame::MAX_FRAME_LEN_V2`] for version 2. The first frame of a connection
is the handshake, which settles the version; every later frame is a
request `{"v":N,"id":..,"op":..,"payload":{..}}` answered by exactly one
response: in order under version 1, as each finishes under version 2.
*/
#![forbid(unsafe_code)]

pub mod answer;
pub mod frame;
pub mod github;
pub mod message;
pub mod names;

pub use frame::{FrameError, HEADER_LEN, MAX_FRAME_LEN, encode_frame, frame_len};
pub use message::{ErrorCode, HandshakeRequest, Op, Request, RequestError};

/// Protocol version 1 (the version of answers built by [`message`]).
pub const PROTOCOL_VERSION: u64 = 1;
/// The highest protocol version this daemon speaks.
pub const MAX_PROTOCOL_VERSION: u64 = 2;
