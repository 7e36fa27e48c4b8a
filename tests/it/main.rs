//! The one integration test binary: the real `llxprt-cred` (and later the
//! daemon) in private directories, against real gnome-keyring instances.

mod client;
mod daemon;
mod fake_provider;
mod harness;
mod lifecycle;
mod refresh;
mod store_file;
mod store_keyring;
mod store_processes;
