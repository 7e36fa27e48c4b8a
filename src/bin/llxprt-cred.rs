//! `llxprt-cred`: parse, run, exit. Everything lives in the library.
#![forbid(unsafe_code)]

/// Every freed block is wiped first: copies of tokens, codes and
/// verifiers in buffers the daemon does not own do not outlive them.
#[global_allocator]
static ALLOCATOR: llxprt_credd::WipeOnFree = llxprt_credd::WipeOnFree;

fn main() {
    std::process::exit(llxprt_credd::cli::cred::main(std::env::args_os()));
}
