#!/usr/bin/env bash
# The hub's soak, at full length: two `duplex serve` nodes on a redis-server of
# their own, 5,000 duplex.v1 subscribers that connect to either node, resume
# from the last offset they saw and drop at random, a publisher at 100
# messages a second, and one node killed (SIGKILL) and restarted halfway.
# Every subscriber must account for every offset of its topic (received once,
# in order, or inside a gap the hub reported), every acknowledged publish must
# be reachable, and the nodes' and Redis's RSS must stay flat after warm-up.
# The program and its checks: crates/duplex-hub/examples/soak.rs.
#
#   scripts/soak.sh [SECONDS [SUBSCRIBERS [RATE]]]    default 600 5000 100
#
# Builds what it runs (release), installs Debian's redis-server when missing
# (as root), targets loopback only. Logs: target/test-logs/soak-*.log. The
# test command runs a 60-second version (scripts/test.sh soak).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SECS="${1:-600}" SUBSCRIBERS="${2:-5000}" RATE="${3:-100}"

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "soak.sh: redis-server not found; install Debian's redis-server" >&2
    exit 1
  fi
  echo "soak.sh: installing redis-server (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
fi
cargo build --release -p duplex-cli -p duplex-hub --example soak --bin duplex
# 5,000 subscribers and their reconnects, two nodes' worth of sockets.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$TARGET_DIR/test-logs"
exec "$TARGET_DIR/release/examples/soak" --duplex "$TARGET_DIR/release/duplex" \
  --secs "$SECS" --subscribers "$SUBSCRIBERS" --rate "$RATE" --logs "$TARGET_DIR/test-logs"
