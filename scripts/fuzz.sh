#!/usr/bin/env bash
# Fuzzes duplex-proto and duplex-hub's delta decoder: builds every cargo-fuzz target of fuzz/ and runs each for
# SECONDS_PER_TARGET seconds (default 20), starting from the seeds in
# fuzz/seeds/<target>/ and the corpus earlier runs left in target/fuzz-corpus/<target>/.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Fails if any target finds a crash, a panic, a leak or a unit slower than 10 s; the
# input is saved under fuzz/artifacts/<target>/ and the log under target/fuzz-logs/.
# Prints per target the executions (libFuzzer's stat::number_of_executed_units),
# executions per second and the corpus size.
#
# Runs on the stable toolchain: cargo-fuzz passes -Z flags, which RUSTC_BOOTSTRAP=1
# lets a stable rustc accept. Installs cargo-fuzz (pinned) if it is missing.
#
# Environment:
#   DUPLEX_FUZZ_SANITIZER   address (default) or none
#
# With the default 20 s, the seven targets take about 2.5 minutes plus the build (about
# 5 minutes from scratch on 2 cores, seconds when nothing changed).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${1:-20}"
SANITIZER="${DUPLEX_FUZZ_SANITIZER:-address}"
CARGO_FUZZ_VERSION=0.13.1
CORPUS="$ROOT/target/fuzz-corpus"
LOGS="$ROOT/target/fuzz-logs"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

case "$SECONDS_PER_TARGET" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

cd "$ROOT/fuzz"
mapfile -t TARGETS < <(cargo fuzz list)
echo "fuzz: building ${TARGETS[*]} (sanitizer: $SANITIZER)"
cargo fuzz build --sanitizer "$SANITIZER"

mkdir -p "$LOGS"
failed=()
printf '%-20s %-6s %12s %9s %8s\n' target result executions exec/s corpus
for target in "${TARGETS[@]}"; do
  corpus="$CORPUS/$target"
  log="$LOGS/$target.log"
  mkdir -p "$corpus" "$ROOT/fuzz/artifacts/$target"
  rc=0
  # New inputs go to the first directory (scratch); the seeds are only read.
  cargo fuzz run --sanitizer "$SANITIZER" "$target" "$corpus" "$ROOT/fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$ROOT/fuzz/artifacts/$target/" >"$log" 2>&1 || rc=$?
  execs="$(awk '/stat::number_of_executed_units/ { print $NF }' "$log")"
  speed="$(awk '/stat::average_exec_per_sec/ { print $NF }' "$log")"
  files="$(find "$corpus" -type f | wc -l)"
  if [ "$rc" = 0 ]; then
    printf '%-20s %-6s %12s %9s %8s\n' "$target" PASS "${execs:-?}" "${speed:-?}" "$files"
  else
    printf '%-20s %-6s %12s %9s %8s\n' "$target" FAIL "${execs:-?}" "${speed:-?}" "$files"
    grep -E -m1 -A3 "panicked at|ERROR: (libFuzzer|AddressSanitizer)" "$log" | sed 's/^/    /' || true
    grep -E -m1 "Test unit written to" "$log" | sed 's/^/    /' || true
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]} (logs: $LOGS/)"
  exit 1
fi
echo "fuzz: every target ran ${SECONDS_PER_TARGET}s without a failure"
