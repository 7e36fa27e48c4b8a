//! `llxprt-cred`: parse, run, exit. Everything lives in the library.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(llxprt_credd::cli::cred::main(std::env::args_os()));
}
