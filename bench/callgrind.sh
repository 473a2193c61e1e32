#!/usr/bin/env bash
# Instructions per echoed message in `duplex serve`, counted by callgrind: repeatable
# where timings on this 2-core machine are not.
#
#   bench/callgrind.sh [--bin PATH] [--client PATH] [--size BYTES] [--conns N]
#                      [--short SECS] [--long SECS]
#
# --bin is the server measured, --client the `duplex` whose `bench` loads it (both
# target/release/duplex by default): a copy of either can be compared while the tree
# is rebuilt. --size 16384 and --size 1048576 give the large-message counts.
#
# Runs the server (one thread, keepalive off) under `valgrind --tool=callgrind` twice,
# loads it with `duplex bench` for --short and then --long seconds, and prints the
# slope: (instructions of the long run - those of the short run) / (messages of the
# long run - those of the short run). Start-up, the handshakes and shutdown cancel out;
# what is left is the server's user-space instructions per message (the kernel's socket
# work is not counted). The callgrind files stay in target/callgrind/ for
# callgrind_annotate.
#
# Needs valgrind (Debian's `valgrind`; installed here if missing and run as root).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release/duplex"
CLIENT="$ROOT/target/release/duplex"
SIZE=20
CONNS=10
SHORT=3
LONG=10
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift 2 ;;
    --client) CLIENT="$2"; shift 2 ;;
    --size) SIZE="$2"; shift 2 ;;
    --conns) CONNS="$2"; shift 2 ;;
    --short) SHORT="$2"; shift 2 ;;
    --long) LONG="$2"; shift 2 ;;
    *) echo "usage: $0 [--bin PATH] [--client PATH] [--size BYTES] [--conns N] [--short SECS] [--long SECS]" >&2; exit 2 ;;
  esac
done
if ! command -v valgrind >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "callgrind.sh: valgrind is missing" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi
{ [ -x "$BIN" ] && [ -x "$CLIENT" ]; } || (cd "$ROOT" && cargo build --release -q -p duplex-cli)
OUT="$ROOT/target/callgrind"
mkdir -p "$OUT"

# run SECS: prints "INSTRUCTIONS MESSAGES" for one server run loaded SECS seconds.
run() {
  local secs="$1" file="$OUT/callgrind.$1s.out" log="$OUT/serve.$1s.log" pid addr="" msgs ir
  valgrind --tool=callgrind --callgrind-out-file="$file" \
    "$BIN" serve --threads 1 --bind 127.0.0.1:0 --ping-interval 0 --no-deflate \
    >"$log.stdout" 2>"$log" &
  pid=$!
  for _ in $(seq 600); do
    addr="$(sed -n 's/^listening on ws:\/\/\(127\.0\.0\.1:[0-9]*\)$/\1/p' "$log.stdout" 2>/dev/null || true)"
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "callgrind.sh: the server did not start; see $log" >&2; kill "$pid"; exit 1; }
  msgs="$("$CLIENT" bench echo "ws://$addr/" --conns "$CONNS" --size "$SIZE" \
    --secs "$secs" --warmup 0 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["msgs"])')"
  kill -TERM "$pid"
  wait "$pid" || true
  ir="$(callgrind_annotate "$file" 2>/dev/null | sed -n 's/^\([0-9,]*\) (100.0%).*PROGRAM TOTALS.*/\1/p' | tr -d ,)"
  echo "$ir $msgs"
}

read -r ir_short msgs_short < <(run "$SHORT")
read -r ir_long msgs_long < <(run "$LONG")
python3 - "$ir_short" "$msgs_short" "$ir_long" "$msgs_long" "$SIZE" "$CONNS" <<'PY'
import sys
ir_s, m_s, ir_l, m_l, size, conns = map(int, sys.argv[1:])
if m_l <= m_s:
    sys.exit(f"callgrind.sh: the long run echoed no more messages ({m_l}) than the short one ({m_s})")
print(f"{size} B x {conns} conns: short run {m_s} msgs / {ir_s} Ir, long run {m_l} msgs / {ir_l} Ir")
print(f"instructions per message (slope): {(ir_l - ir_s) / (m_l - m_s):.0f}")
PY
