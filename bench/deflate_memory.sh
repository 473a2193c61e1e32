#!/usr/bin/env bash
# Server memory per connection with permessage-deflate (issue 15), and the ratio it buys.
#
#   bench/deflate_memory.sh [--conns N] [--no-build]
#
# Starts `target/release/duplex serve --threads 1 --bind 127.0.0.1:0`, and then a Python
# websockets echo server (its default compression="deflate"), each in turn; opens N
# (default 1000) Python websockets clients with their default permessage-deflate offer,
# each sends one 4.4 KB JSON-like text message and reads the echo, and all stay open;
# prints the server's VmRSS growth per connection (from /proc/PID/status). Then prints
# the compression ratio duplex gets on a JSON corpus with the settings before and after
# (the `deflate_ratio` example of duplex-proto).
#
# Environment:
#   DUPLEX_BEFORE   another duplex binary (e.g. one built from main) measured too, first
#
# Uses the venv of scripts/test.sh (target/venv, pins of e2e/requirements.txt), made
# here the same way if missing. Loopback only, ports chosen by the kernel; every process
# started here is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CONNS=1000
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --conns) CONNS="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

VENV="$ROOT/target/venv"
REQUIREMENTS="$ROOT/e2e/requirements.txt"
if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import websockets' 2>/dev/null \
  && cmp -s "$REQUIREMENTS" "$VENV/.duplex-requirements"; }; then
  echo "python: creating $VENV with $(tr '\n' ' ' <"$REQUIREMENTS")" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$VENV/.duplex-requirements"
fi

if [ "$BUILD" = 1 ]; then
  cargo build --release --quiet -p duplex-cli
fi

# Each connection is a socket in the server and one in the client process, plus slack.
want=$((CONNS + 256))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
  ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$want" ]; then
  echo "error: ulimit -n is $(ulimit -n), $CONNS connections need $want" >&2
  exit 1
fi

servers=()
if [ -n "${DUPLEX_BEFORE:-}" ]; then
  servers+=(--server "before=$DUPLEX_BEFORE")
fi
servers+=(--server "duplex=$ROOT/target/release/duplex")

echo "== memory per connection"
"$VENV/bin/python" bench/deflate_memory.py --conns "$CONNS" "${servers[@]}" --python-server

echo
echo "== compression ratio (cargo run --release -p duplex-proto --example deflate_ratio)"
cargo run --release --quiet -p duplex-proto --example deflate_ratio
