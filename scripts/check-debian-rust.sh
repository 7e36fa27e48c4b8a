#!/bin/bash
# Builds the project with Debian's own packaged Rust (1.85, `rustc-web` and
# `cargo-web` in bookworm main; Debian 13's rustc is the same version), so
# a distribution can package it with its toolchain. Installs the pinned
# packages when they are missing (Debian 12), then a release build of both
# binaries into target/debian-rust and a smoke run of each.
set -eu
cd "$(dirname "$0")/.."
version=1.85.0+dfsg3-1~deb12u3
rustc=/usr/bin/rustc
cargo=/usr/bin/cargo
if ! "$rustc" --version 2>/dev/null | grep -q '^rustc 1\.85\.'; then
  if [ "$(id -u)" != 0 ]; then
    echo "$0: needs Debian's Rust 1.85; install it with:" >&2
    echo "  sudo apt-get install rustc-web=$version cargo-web=$version libstd-rust-web-dev=$version" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    "rustc-web=$version" "cargo-web=$version" "libstd-rust-web-dev=$version"
fi
"$rustc" --version
"$cargo" --version
# Debian's cargo and rustc only: rustup's proxies stay off PATH.
env -u RUSTUP_TOOLCHAIN -u RUSTC -u RUSTDOC -u CARGO \
  PATH=/usr/bin:/bin RUSTC="$rustc" CARGO_TARGET_DIR=target/debian-rust \
  "$cargo" build --release --locked
for b in llxprt-credd llxprt-cred; do
  target/debian-rust/release/$b --version
done
echo "check-debian-rust: good (built with $("$rustc" --version))"
