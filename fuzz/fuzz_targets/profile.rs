//! llxprt-code profile files into a scope: any text gives a scope or a
//! usage error, never a panic. Load-balancer members are looked up in an
//! empty private directory.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use llxprt_credd::profile;

fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("llxprt-credd-fuzz-profiles-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&d);
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(scope) = profile::scope_from_text(dir(), "fuzz", text) {
        let _ = scope.describe();
    }
});
