//! Handshake and request parsing and validation: any bytes give a typed
//! request or a typed error, never a panic; every error answer is valid
//! JSON whose `data`, if any, is an object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llxprt_credd::protocol::message::{self, ErrorCode};

fuzz_target!(|data: &[u8]| {
    let _ = message::parse_handshake(data);
    match message::parse_request(data) {
        Ok(req) => {
            assert!(!req.id.is_empty());
            let _ = req.op.name();
        }
        Err(e) => {
            let reply = message::error_response(&e.id, e.code, &e.message, None);
            let v: serde_json::Value = serde_json::from_slice(&reply).expect("error answers are JSON");
            assert_eq!(v["ok"], false);
            assert_ne!(e.code, ErrorCode::NotFound);
        }
    }
});
