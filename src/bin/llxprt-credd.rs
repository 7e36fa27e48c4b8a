//! `llxprt-credd`: the daemon. Its server (socket, protocol, access
//! control, lifecycle) is the next piece of work; until it lands this
//! binary says so plainly instead of pretending to serve.
#![forbid(unsafe_code)]

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("-V" | "--version") => println!("llxprt-credd {}", env!("CARGO_PKG_VERSION")),
        _ => {
            eprintln!(
                "llxprt-credd: the socket server is not implemented in this build yet; \
                 use llxprt-cred for the host store (see README.md)"
            );
            std::process::exit(2);
        }
    }
}
