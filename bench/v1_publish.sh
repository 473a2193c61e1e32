#!/usr/bin/env bash
# Acknowledged duplex.v1 publishes, one at a time (each waits for its
# `published` reply), through `duplex publish` reading N stdin lines: against
# `duplex serve --threads 1` in memory, then with --redis (a redis-server
# started here on a free loopback port). Prints the seconds each took; the
# rate is latency-bound (one round trip, and with Redis one script, per
# message), not a throughput ceiling.
#
#   bench/v1_publish.sh [N]        (default 10000; needs target/release/duplex)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release/duplex"
N="${1:-10000}"
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

run() {
    local label="$1"; shift
    local port; port="$(free_port)"
    "$BIN" serve --bind "127.0.0.1:$port" --threads 1 "$@" >/dev/null 2>&1 &
    pids+=($!)
    sleep 0.5
    local start end last
    start="$(date +%s.%N)"
    last="$(seq 1 "$N" | "$BIN" publish "ws://127.0.0.1:$port" bench 2>/dev/null | tail -1)"
    end="$(date +%s.%N)"
    [ "$last" = "$N" ] || { echo "$label: the last offset was $last, not $N" >&2; exit 1; }
    echo "$label: $N acknowledged publishes in $(echo "$end - $start" | bc) s"
}

run memory
redis_port="$(free_port)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no >/dev/null 2>&1 &
pids+=($!)
sleep 0.5
run redis --redis "redis://127.0.0.1:$redis_port/"
