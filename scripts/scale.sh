#!/usr/bin/env bash
# What each backplane engine costs, side by side in one run: one Redis, a Redis
# Cluster (3 masters, 3 replicas) and NATS JetStream, each under four
# `duplex serve` nodes, 8,000 duplex.v1 subscribers on 1,000 topics (on every
# shard) and publishers at 400 messages a second; halfway, the backplane
# crashes (kill -9 of the one Redis, restarted empty; of a cluster master,
# whose replica takes over; of nats-server, restarted on its store). Prints a
# table: deliveries/s, publish-to-delivery p50/p99, each node's CPU time per
# delivery, the backplane's CPU time per message, how long publishes were
# refused or held, the gaps subscribers were told of, and what was lost (no
# gap told) or duplicated, which fails the run.
# The program and its checks: crates/duplex-hub/examples/scale.rs.
#
#   scripts/scale.sh [SECONDS [SUBSCRIBERS [TOPICS [RATE [ENGINES]]]]]
#                    default 30 8000 1000 400 redis,cluster,nats
#
# Builds what it runs (release), installs Debian's redis-server, redis-tools
# and nats-server when missing (as root), targets loopback only; every server
# is its own, on free ports. Logs: target/test-logs/scale-*.log.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SECS="${1:-30}" SUBSCRIBERS="${2:-8000}" TOPICS="${3:-1000}" RATE="${4:-400}"
ENGINES="${5:-redis,cluster,nats}"

case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "scale.sh: install Debian's ${missing[*]}" >&2
    exit 1
  fi
  echo "scale.sh: installing ${missing[*]} (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi
cargo build --release -p duplex-cli -p duplex-hub --example scale --bin duplex
# 8,000 subscribers: their sockets, and the nodes'.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
mkdir -p "$TARGET_DIR/test-logs"
exec "$TARGET_DIR/release/examples/scale" --duplex "$TARGET_DIR/release/duplex" \
  --secs "$SECS" --subscribers "$SUBSCRIBERS" --topics "$TOPICS" --rate "$RATE" \
  --engines "$ENGINES" --logs "$TARGET_DIR/test-logs"
