#!/bin/bash
# Runs every cargo-fuzz target for SECONDS seconds each (default 60) from a
# working copy of the seed corpus in fuzz/corpus, and prints one line per
# target: run time, executions, and whether it found a crash. Needs a
# nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
set -eu
cd "$(dirname "$0")/.."
seconds=${1:-60}
targets=${FUZZ_TARGETS:-"frame request envelope profile"}
work=target/fuzz-work
mkdir -p "$work"
status=0
printf '| target | seconds | executions | crashes |\n|---|---|---|---|\n'
for t in $targets; do
  rm -rf "$work/$t" && mkdir -p "$work/$t" && cp fuzz/corpus/"$t"/* "$work/$t"/
  log="$work/$t.log"
  if (cd fuzz && cargo +nightly fuzz run "$t" "../$work/$t" -- -max_total_time="$seconds" -print_final_stats=1) >"$log" 2>&1; then
    crashes=0
  else
    crashes=1
    status=1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  printf '| %s | %s | %s | %s |\n' "$t" "$seconds" "${runs:-?}" "$crashes"
  [ "$crashes" = 0 ] || tail -30 "$log" >&2
done
exit $status
