/*!
The store benchmark (`store`): how fast the host store is. Runs in a
private temporary data directory (and, for the keyring rows, a dedicated
keyring service that is cleaned up afterwards), so it never touches real
credentials. Prints a Markdown table of percentiles.
*/

use std::sync::Arc;
use std::time::Instant;

use llxprt_credd::secret::SecretString;
use llxprt_credd::store::{Backend, HostStore, KeyringStatus, MachineSecret, SecureStore, resolve_backend};

use crate::fixture::{Result, paths, temp_root};
use crate::measure::{Summary, fmt_duration, summarise};

const BENCH_SERVICE: &str = "llxprt-credd-bench";
const BENCH_VALUE: &str = r#"{"access_token":"bench-access","expiry":1893456000,"token_type":"Bearer","refresh_token":"bench-refresh"}"#;

fn time(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<Summary> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(summarise(&mut samples))
}

fn row(name: &str, s: &Summary) {
    println!(
        "| {name} | {} | {} | {} | {} |",
        s.n,
        fmt_duration(s.p50),
        fmt_duration(s.p90),
        fmt_duration(s.p99)
    );
}

/// Runs the store benchmark. The keyring rows use the keyring the
/// backend in force (`LLXPRT_CREDD_STORE`, else auto) would use.
pub fn store(iterations: usize) -> Result<()> {
    let root = temp_root()?;
    let paths = paths(&root);
    let host = HostStore::open_at(paths.clone(), resolve_backend(None)?)?;
    let secret = Arc::new(MachineSecret::new(None, paths.machine_secret_file(), paths.credential_lock_dir()));
    let file_store = || {
        SecureStore::new(
            BENCH_SERVICE,
            paths.data.join("bench"),
            Backend::File,
            None,
            secret.clone(),
            paths.credential_lock_dir(),
        )
    };
    let value = SecretString::from(BENCH_VALUE);
    let slow_n = iterations.clamp(1, 30);
    println!("| operation | samples | p50 | p90 | p99 |");
    println!("|---|---|---|---|---|");
    let store = file_store();
    row(
        "file write (scrypt + AES-GCM + fsync + rename)",
        &time(slow_n, || Ok(store.set("k", &value).map(|_| ())?))?,
    );
    row("cold file read (scrypt + AES-GCM)", &time(slow_n, || Ok(file_store().get("k").map(|_| ())?))?);
    row("warm cached read", &time(iterations * 50, || Ok(store.get("k").map(|_| ())?))?);
    let mut keyring_rows = 0;
    if let Some(keyring) = host.keyring.as_ref().filter(|k| k.status() == KeyringStatus::Ready) {
        let v = value.clone();
        row(
            "keyring write (Secret Service round trip)",
            &time(slow_n, || {
                let v = v.clone();
                Ok(keyring.call(move |k| k.set(BENCH_SERVICE, "bench", &v))?)
            })?,
        );
        row(
            "keyring read, uncached",
            &time(iterations, || Ok(keyring.call(|k| k.get(BENCH_SERVICE, "bench")).map(|_| ())?))?,
        );
        let _ = keyring.call(|k| k.delete(BENCH_SERVICE, "bench"));
        keyring_rows = 2;
    }
    let _ = std::fs::remove_dir_all(&root);
    if keyring_rows == 0 {
        println!("\n(no OS keyring reachable: keyring rows skipped)");
    }
    Ok(())
}
