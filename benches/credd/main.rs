/*!
The benchmarks: how fast the host store is, and how fast and how small the
real daemon is. A cargo bench target with its own `main` (`harness =
false`), so neither the shipped binaries nor the library carry it:

```text
cargo bench --bench credd -- store [--iterations N]
cargo bench --bench credd -- daemon [--iterations N]
cargo bench --bench credd -- refresh
cargo bench --bench credd -- proxy [--iterations N]
cargo bench --bench credd -- soak [--minutes N]
```

Each runs in a private temporary directory and prints Markdown tables. The
daemon benchmarks start the `llxprt-credd` cargo built for this target
(`CARGO_BIN_EXE_llxprt-credd`) through the launcher the integration tests
use (`tests/common/launch.rs`). Nothing here touches real credentials: the
store benchmark's keyring rows use a service of their own and delete what
they wrote.

The library items used are those a host program would use: the host store
(`HostStore`, `Paths`, `Backend`, `resolve_backend`, `SecureStore`,
`MachineSecret`, the keyring handle and its status, the `TokenStore` and
`KeyStore` traits), `OAuthToken`, `SecretString` and the protocol's frame
functions.
*/

mod cpu;
mod daemon;
mod fixture;
#[path = "../../tests/common/launch.rs"]
mod launch;
mod measure;
#[path = "../../tests/common/procfs.rs"]
mod procfs;
mod proxy;
mod refresh;
mod soak;
mod store;

use std::ffi::OsString;

/// What `--help` prints.
const USAGE: &str = "\
Usage: cargo bench --bench credd -- COMMAND [OPTIONS]

Commands:
  store                measure store reads and writes (the keyring rows need a
                       reachable OS keyring; LLXPRT_CREDD_STORE=file skips them)
  daemon               measure the daemon: readiness, memory, get_token round trips
  refresh              measure a refresh storm: 256 clients on one expired token
  proxy                measure inject mode's proxy: requests and streamed events, next
                       to the same sent directly, and memory with 16 streams
  soak [--minutes N]   64 connections of mixed requests at the rate limit for N minutes
                       (default 10); fails if memory, descriptors or threads grow

Options:
  --iterations N       samples per measurement (default: 200; daemon takes 50 times
                       as many round trips per connection)
  --minutes N          soak: how long it runs (default: 10)
  -h, --help           print this help
";

/// Which benchmark to run.
#[derive(Debug, PartialEq)]
pub enum Bench {
    Store,
    Daemon,
    Refresh,
    Proxy,
    Soak { minutes: u64 },
}

/// A parsed command line.
#[derive(Debug, PartialEq)]
pub struct Args {
    bench: Bench,
    /// `--iterations`.
    iterations: usize,
}

/// A positive number, the value of `flag`.
fn positive<T: std::str::FromStr + PartialOrd + Default>(
    parser: &mut lexopt::Parser,
    flag: &str,
) -> Result<T, String> {
    let value = parser.value().map_err(|e| e.to_string())?;
    value
        .to_str()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > T::default())
        .ok_or_else(|| format!("{flag} needs a positive number"))
}

/// Parses the arguments after `--`; `None` for `--help`. Cargo adds
/// `--bench` when it runs a benchmark: accepted and ignored.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Option<Args>, String> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let mut words = Vec::new();
    let mut iterations = 200;
    let mut minutes: Option<u64> = None;
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(None),
            Long("bench") => {}
            Long("iterations") => iterations = positive(&mut parser, "--iterations")?,
            Long("minutes") => minutes = Some(positive(&mut parser, "--minutes")?),
            Value(v) => words.push(v.into_string().map_err(|_| "arguments must be valid UTF-8".to_owned())?),
            _ => return Err(arg.unexpected().to_string()),
        }
    }
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    let bench = match w.as_slice() {
        ["store"] => Bench::Store,
        ["daemon"] => Bench::Daemon,
        ["refresh"] => Bench::Refresh,
        ["proxy"] => Bench::Proxy,
        ["soak"] => Bench::Soak { minutes: minutes.take().unwrap_or(10) },
        [] => return Err("a benchmark is needed: store, daemon, refresh, proxy or soak (see --help)".into()),
        _ => return Err(format!("unknown benchmark: {} (see --help)", words.join(" "))),
    };
    if minutes.is_some() {
        return Err("--minutes goes with soak".into());
    }
    Ok(Some(Args { bench, iterations }))
}

fn main() {
    let args = match parse(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("bench: {e}\n{}", USAGE.lines().next().unwrap_or_default());
            std::process::exit(2);
        }
    };
    let result = match args.bench {
        Bench::Store => store::store(args.iterations).map(|()| 0),
        Bench::Daemon => daemon::daemon(args.iterations * 50).map(|()| 0),
        Bench::Refresh => refresh::refresh().map(|()| 0),
        Bench::Proxy => proxy::proxy(args.iterations).map(|()| 0),
        Bench::Soak { minutes } => soak::soak(minutes),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(1);
        }
    }
}
