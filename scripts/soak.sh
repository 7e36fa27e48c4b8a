#!/bin/sh
# The soak test (not CI): the daemon, built with the release profile, on a
# throwaway file store, 64 connections of mixed requests at the rate limit
# (60 requests/s each) for MINUTES (default 10). Prints memory, descriptors
# and threads at the start, every minute and at the end, and exits 1 if any
# of them grew.
# Usage: scripts/soak.sh [MINUTES]
set -eu
minutes="${1:-10}"
case "$minutes" in
  ''|*[!0-9]*|0) echo "usage: scripts/soak.sh [MINUTES]  (a positive whole number)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
# 64 client sockets plus the daemon's: far below any default limit, but say so if not
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 512 ]; then
  ulimit -n 512 || { echo "soak: raise the open-file limit (ulimit -n) to 512" >&2; exit 2; }
fi
# cargo builds the daemon and the benchmark (benches/credd) first
exec cargo bench --locked --bench credd -- soak --minutes "$minutes"
