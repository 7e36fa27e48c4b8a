/*!
Messages: the handshake, typed requests with their validation, and the
response envelopes. Validation happens here, before any handler runs, so
a wrong type or a hostile name never reaches a store: it becomes
`INVALID_REQUEST` with a message built from fixed text.

The wire codes are in `codes.rs`, the operations and their permission
classes in `op.rs`, the handshake in `handshake.rs`, request parsing and
validation in `parse.rs`, and the response envelopes in `response.rs`.
*/
#![forbid(unsafe_code)]

mod codes;
mod handshake;
mod op;
mod parse;
mod response;
#[cfg(test)]
mod tests;

use serde_json::Value;

pub use super::names::FlowType;
pub use codes::{ErrorCode, FlowFailure};
pub use handshake::{HandshakeRequest, encode_handshake, parse_handshake};
pub use op::{Op, OpClass, Request, encode_request};
pub use parse::{
    MAX_SAVED_ACCESS_TOKEN_BYTES, MAX_SAVED_EXPIRY_DISTANCE_SECONDS, MAX_SAVED_TOKEN_BYTES, RequestError,
    parse_request,
};
pub use response::{
    MalformedResponse, Response, ResponseFrame, decode_response, error_response, for_version,
    handshake_error, handshake_ok, ok_response,
};

fn to_bytes(value: Value) -> Vec<u8> {
    serde_json::to_vec(&value).expect("a JSON value serialises")
}
