//! The one integration test binary: the real `llxprt-cred` (and later the
//! daemon) in private directories, against real gnome-keyring instances.

mod abuse;
mod activation;
mod advice;
mod claudecode;
mod client;
mod container;
mod daemon;
mod docs;
mod doctor;
mod fake_provider;
mod fake_stream;
mod faults;
mod github;
mod hardening;
mod harness;
mod host_store;
mod inject;
mod install;
#[path = "../common/launch.rs"]
mod launch;
mod lifecycle;
mod login;
mod needs;
#[path = "../common/procfs.rs"]
mod procfs;
mod protocol_v2;
mod refresh;
mod sandbox;
mod store_file;
mod store_keyring;
mod store_processes;
mod trust;
