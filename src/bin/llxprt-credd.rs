//! `llxprt-credd`: parse, run, exit. Everything lives in the library.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(llxprt_credd::cli::credd::main(std::env::args_os()));
}
