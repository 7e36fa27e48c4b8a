#!/bin/bash
# The demo: the daemon's main job on the embedded default (the encrypted
# file store) in a throwaway data directory. A demo profile's credentials
# (an API key and an OAuth token) are stored on the host, then the daemon
# serves them to a command in exec mode the way it serves a sandbox: with a
# capability token, only what the profile names, never the refresh token.
# Needs nothing but cargo.
set -eu
cd "$(dirname "$0")/.."
echo "demo: building the release binaries (about three minutes the first time)" >&2
cargo build --release --locked
cred=target/release/llxprt-cred
demo=$(mktemp -d "${TMPDIR:-/tmp}/llxprt-credd-demo.XXXXXX")
trap 'rm -rf "$demo"' EXIT
export LLXPRT_DATA_HOME="$demo/data" LLXPRT_LOG_HOME="$demo/log" LLXPRT_CONFIG_HOME="$demo/config"
export LLXPRT_CREDD_STORE=file
mkdir -p "$LLXPRT_CONFIG_HOME/profiles"
cat > "$LLXPRT_CONFIG_HOME/profiles/demo.json" <<'JSON'
{"version":1,"provider":"claudecode","model":"claude-sonnet-4","auth":{"type":"oauth","buckets":["default"]},"ephemeralSettings":{"auth-key-name":"DEMO_OPENAI_KEY"}}
JSON
set -x
printf 'sk-demo-not-a-real-key\n' | $cred key set DEMO_OPENAI_KEY
$cred key list
$cred key get DEMO_OPENAI_KEY
expiry=$(( $(date +%s) + 3600 ))
printf '{"access_token":"demo-access","refresh_token":"demo-refresh-stays-on-host","expiry":%s,"token_type":"Bearer","scope":"user:inference"}' "$expiry" \
  | $cred token import claudecode
$cred token list
$cred token show claudecode
printf 'sk-outside-the-profile\n' | $cred key set OTHER_KEY
$cred doctor --profile demo
ls -l "$LLXPRT_DATA_HOME/secure-store/llxprt-code-oauth" "$LLXPRT_DATA_HOME/provider-keys"
head -c 120 "$LLXPRT_DATA_HOME/secure-store/llxprt-code-oauth/claudecode%3Adefault.enc"; echo

# The daemon, in exec mode: the command plays the sandbox. Its log goes to
# the terminal here (--log-stderr), so the demo shows the audit lines;
# without it, exec mode logs to ~/.local/state/llxprt-code/credd.log.
target/release/llxprt-credd --profile demo --capability-file "$demo/capability.env" --log-stderr -- sh -c '
  set -x
  cred=target/release/llxprt-cred
  $cred status
  $cred get claudecode
  $cred get-key DEMO_OPENAI_KEY
  $cred get-key OTHER_KEY || echo "OTHER_KEY is outside the demo profile: refused"
'
# How fast the store is: one cold read from the file store (scrypt and
# AES-GCM, what a daemon's first read of a credential costs). The
# benchmarks (`make bench`) measure writes, warm reads and the keyring too.
time $cred key get DEMO_OPENAI_KEY >/dev/null
