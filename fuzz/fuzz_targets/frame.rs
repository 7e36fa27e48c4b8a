//! The server's frame reader over every way the bytes can be split: the
//! first byte chooses the read sizes, the rest is the stream. It must never
//! panic, never return a body longer than the protocol allows, and account
//! for every byte it hands out.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use llxprt_credd::protocol::frame::{HEADER_LEN, MAX_FRAME_LEN};
use llxprt_credd::server::reader::{ChunkedSource, FrameReader};

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else { return };
    let chunks = vec![usize::from(split % 16) + 1; stream.len()];
    let mut source = ChunkedSource::new(stream.to_vec(), chunks);
    let mut reader = FrameReader::new();
    let mut consumed = 0;
    while let Ok(body) = reader.next(&mut source, Duration::from_secs(1)) {
        assert!(body.len() <= MAX_FRAME_LEN);
        consumed += HEADER_LEN + body.len();
        assert!(consumed <= stream.len());
    }
});
