//! The encrypted-file envelope decoder (llxprt-code's v1/v2 format) and the
//! file-name rules: no panic on any input; a parsed envelope's version is
//! what `version_of` says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llxprt_credd::store::envelope;

fuzz_target!(|data: &[u8]| {
    let parsed = envelope::parse(data);
    let version = envelope::version_of(data);
    if parsed.is_ok() {
        assert!(version.is_some());
    }
    if let Ok(name) = std::str::from_utf8(data) {
        if let Some(key) = envelope::key_from_file_name(name) {
            let _ = envelope::check_store_key(&key);
        }
        let _ = envelope::file_name(name);
    }
});
