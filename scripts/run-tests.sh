#!/bin/bash
# The test command: formatting and lints, then every test (unit and
# integration) through cargo-nextest when it is installed, cargo test
# otherwise, then the two quickest benchmarks with few samples (a few
# seconds), so a benchmark that no longer builds or runs fails here. Run
# it through scripts/with-keyring.sh (as `make test` does) so the keyring
# tests have a Secret Service.
set -eu
cd "$(dirname "$0")/.."
# A test whose need (root, a tool) is missing fails, unless the need's
# LLXPRT_CREDD_SKIP_*_TESTS=1 skips it; the test runner shows a passing
# test's output only on request, so the tests skipped that way are listed
# here at the end.
LLXPRT_CREDD_SKIP_LOG=$(mktemp "${TMPDIR:-/tmp}/llxprt-skipped.XXXXXX")
export LLXPRT_CREDD_SKIP_LOG
trap 'if [ -s "$LLXPRT_CREDD_SKIP_LOG" ]; then echo "Skipped on request:"; sort "$LLXPRT_CREDD_SKIP_LOG"; fi; rm -f "$LLXPRT_CREDD_SKIP_LOG"' EXIT
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# The sandbox-side library alone (`--no-default-features`: no `host`): it
# builds clean, its unit tests pass, and it links none of the host's
# crates (HTTP, TLS, keyring, the envelope's ciphers).
cargo clippy --lib --tests --no-default-features --locked -- -D warnings
cargo test --lib --no-default-features --locked --quiet
if cargo tree -e no-dev --no-default-features --prefix none --locked \
    | grep -E '^(ureq|rustls|rustls-platform-verifier|secret-service|security-framework|scrypt|aes-gcm|httparse) '; then
  echo "run-tests: the client-only build links a host crate (above)" >&2
  exit 1
fi
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
cargo test --locked --bench credd -- store --iterations 5
cargo test --locked --bench credd -- daemon --iterations 1
