#!/usr/bin/env bash
# Side-by-side benchmark: `duplex serve` against peer echo servers (tokio-tungstenite,
# fastwebsockets, tokio-websockets, sockudo-ws, Bun's built-in server on uWebSockets and
# a raw TCP frame echo, the ceiling), all driven by the same load generator, `duplex
# bench`. Bun (bench/bun/echo.js, @oven/bun-linux-x64 pinned by bench/bun's
# package-lock, installed here with `npm ci`) serves from its one JavaScript thread in
# every scenario, the t2_* ones included.
#
#   bench/compare.sh [--quick] [--rounds N] [--secs S] [--warmup S] [--idle-conns N]
#                    [--pipeline K] [--servers a,b,...] [--no-build]
#
# For every scenario and every round the servers run one after another (interleaved,
# order rotated each round), loopback only. The load generator is given the server's
# pid and itself samples the server's CPU time (utime+stime of all its threads, after
# warm-up and at the end) and RSS. Medians over the rounds go to
# target/bench/report.{json,md,svg} of the main repo; raw results stay in
# target/bench/raw/<scenario>/<server>/r<round>.json.
#
# Two kinds of scenario:
# - single-threaded (echo_*, idle_*): every server on one thread (`duplex serve
#   --threads 1`, the peers' current_thread runtime) pinned to CPU 0, the load generator
#   (one thread) pinned to CPU 1. At 20 B and 1 KiB the load generator keeps --pipeline K
#   messages in flight per connection (default 4): with one at a time its own core was
#   the ceiling, so every server tied on msgs/s (bench/README.md has the measurement).
# - two-threaded (t2_*): every server on two threads (`duplex serve --threads 2`, the
#   peers on a tokio multi-thread runtime of 2 workers) and the load generator on two
#   threads too, none pinned. This machine has two cores, so load and server share them:
#   msgs/s is what the pair reaches together (a server that costs less leaves more CPU
#   to the load generator, so it also counts), and server CPU per message is the
#   figure that compares servers. It says how a server behaves across threads (work
#   stealing, cross-thread wake-ups), not how it scales on a bigger machine.
#
# Environment:
#   DUPLEX_BENCH_BIN    load generator command (default: "<repo>/target/release/duplex bench")
#   DUPLEX_SERVE_CMD    duplex server command, without --bind and --threads (the script
#                       adds both) (default: "<repo>/target/release/duplex serve")
#   BENCH_ALLOW_MISSING=1  skip a server whose binary is missing or fails to build
#                       (default: fail)
#
# Full run: 3 rounds of 8 s (+2 s warm-up), ~25 min. --quick: 1 round of 2 s (+1 s), ~3 min.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT="$ROOT/target/bench"
RAW="$OUT/raw"
LOGS="$OUT/logs"

ROUNDS=3 SECS=8 WARMUP=2 IDLE_CONNS=10000 QUICK=0 BUILD=1 PIPELINE=4
SERVERS="duplex,tcp-echo,tungstenite,fastwebsockets,tokio-websockets,sockudo-ws,bun"
BUN_BIN="$BENCH_DIR/bun/node_modules/@oven/bun-linux-x64/bin/bun"
# Server (and load generator) threads of the t2_* scenarios.
MT=2

die() { echo "compare.sh: error: $*" >&2; exit 1; }
note() { echo "compare.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ROUNDS=1 SECS=2 WARMUP=1 ;;
        --rounds) ROUNDS=${2:?}; shift ;;
        --secs) SECS=${2:?}; shift ;;
        --warmup) WARMUP=${2:?}; shift ;;
        --idle-conns) IDLE_CONNS=${2:?}; shift ;;
        --servers) SERVERS=${2:?}; shift ;;
        --pipeline) PIPELINE=${2:?}; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done

case "$PIPELINE" in ''|*[!0-9]*|0) die "--pipeline wants a whole number of 1 or more" ;; esac

# Scenarios: id, mode, connections, message size in bytes, messages in flight per
# connection (the load generator's --pipeline), server threads (1: server and load
# generator pinned apart; more: both on all CPUs, the load generator on as many threads).
SCENARIOS=(
    "echo_100x20B echo 100 20 $PIPELINE 1"
    "echo_100x1KiB echo 100 1024 $PIPELINE 1"
    "echo_500x16KiB echo 500 16384 1 1"
    "echo_10x1MiB echo 10 1048576 1 1"
    "idle_${IDLE_CONNS} idle ${IDLE_CONNS} 0 1 1"
    "t${MT}_echo_100x20B echo 100 20 $PIPELINE $MT"
    "t${MT}_echo_100x1KiB echo 100 1024 $PIPELINE $MT"
)

server_cmd() { # name threads
    case "$1" in
        duplex) echo "${DUPLEX_SERVE_CMD:-$ROOT/target/release/duplex serve} --threads $2" ;;
        tcp-echo|tungstenite|fastwebsockets|tokio-websockets|sockudo-ws)
            echo "$BENCH_DIR/target/release/peer-$1 --threads $2" ;;
        bun) echo "$BUN_BIN $BENCH_DIR/bun/echo.js --threads $2" ;;
        *) die "unknown server: $1" ;;
    esac
}

# --- file descriptors: 10,000 idle connections need more than the usual 1024 ----------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((IDLE_CONNS + 256)) ]; then
    note "ulimit -n is $NOFILE: idle scenario lowered to $((NOFILE - 256)) connections"
    IDLE_CONNS=$((NOFILE - 256))
    SCENARIOS[4]="idle_${IDLE_CONNS} idle ${IDLE_CONNS} 0 1 1"
fi

# --- CPU pinning ------------------------------------------------------------------------
if command -v taskset >/dev/null && [ "$(nproc --all)" -ge 2 ]; then
    PIN_SERVER=(taskset -c 0) PIN_CLIENT=(taskset -c 1)
else
    note "taskset or a second CPU is missing: running unpinned"
    PIN_SERVER=() PIN_CLIENT=()
fi

# --- build ------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    note "building peers (bench/)"
    cargo build --release --manifest-path "$BENCH_DIR/Cargo.toml" \
        || die "building the peers failed"
    case ",$SERVERS," in
        *,bun,*)
            note "installing Bun (npm ci in bench/bun)"
            (cd "$BENCH_DIR/bun" && npm ci --no-audit --no-fund --silent) \
                || die "npm ci in bench/bun failed" ;;
    esac
    note "building duplex (duplex-cli)"
    if ! (cd "$ROOT" && cargo build --release -p duplex-cli); then
        [ "${BENCH_ALLOW_MISSING:-0}" = 1 ] || die "building duplex-cli failed"
        note "building duplex-cli failed; going on without it (BENCH_ALLOW_MISSING=1)"
    fi
fi

# --- the load generator -------------------------------------------------------------------
read -r -a LOADGEN <<<"${DUPLEX_BENCH_BIN:-$ROOT/target/release/duplex bench}"
[ -x "${LOADGEN[0]}" ] || command -v "${LOADGEN[0]}" >/dev/null \
    || die "load generator not found: ${LOADGEN[0]} (build duplex-cli or set DUPLEX_BENCH_BIN)"

# --- which servers take part --------------------------------------------------------------
ACTIVE=()
IFS=, read -r -a WANTED <<<"$SERVERS"
for s in "${WANTED[@]}"; do
    read -r -a cmd <<<"$(server_cmd "$s" 1)"
    if [ -x "${cmd[0]}" ]; then
        ACTIVE+=("$s")
    elif [ "${BENCH_ALLOW_MISSING:-0}" = 1 ]; then
        note "skipping $s: ${cmd[0]} is missing (BENCH_ALLOW_MISSING=1)"
    else
        die "server binary for $s is missing: ${cmd[0]} (set BENCH_ALLOW_MISSING=1 to skip it)"
    fi
done
[ ${#ACTIVE[@]} -gt 0 ] || die "no server to run"

rm -rf "$RAW" "$LOGS"
mkdir -p "$RAW" "$LOGS"

json_str() { printf '"%s"' "$(printf '%s' "$1" | tr -d '"\\' | tr '\n\t' '  ')"; }
{
    printf '{"date":%s,' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
    printf '"kernel":%s,' "$(json_str "$(uname -sr)")"
    printf '"cpu":%s,' "$(json_str "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')")"
    printf '"nproc":%s,' "$(nproc --all)"
    printf '"loadavg":%s,' "$(json_str "$(cut -d' ' -f1-3 /proc/loadavg)")"
    printf '"rounds":%s,"secs":%s,"warmup":%s,"quick":%s,' "$ROUNDS" "$SECS" "$WARMUP" \
        "$([ "$QUICK" = 1 ] && echo true || echo false)"
    printf '"pinned":%s,' "$([ ${#PIN_SERVER[@]} -gt 0 ] && echo true || echo false)"
    printf '"git":%s,' "$(json_str "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)")"
    printf '"load_generator":%s,' "$(json_str "${LOADGEN[*]}")"
    printf '"servers":{'
    sep=
    for s in "${ACTIVE[@]}"; do
        printf '%s%s:%s' "$sep" "$(json_str "$s")" "$(json_str "$(server_cmd "$s" 1)")"
        sep=,
    done
    printf '},"scenarios":{'
    sep=
    for spec in "${SCENARIOS[@]}"; do
        read -r id _ _ _ pipeline threads <<<"$spec"
        printf '%s%s:{"pipeline":%s,"server_threads":%s,"load_threads":%s,"pinned":%s}' \
            "$sep" "$(json_str "$id")" "$pipeline" "$threads" "$threads" \
            "$([ "$threads" = 1 ] && [ ${#PIN_SERVER[@]} -gt 0 ] && echo true || echo false)"
        sep=,
    done
    printf '}}\n'
} >"$RAW/meta.json"

# --- one run ------------------------------------------------------------------------------
SERVER_PID= SERVER_URL=

start_server() { # name threads logprefix
    local name=$1 threads=$2 log=$3 line= i pin=()
    read -r -a cmd <<<"$(server_cmd "$name" "$threads")"
    [ "$threads" = 1 ] && pin=("${PIN_SERVER[@]}")
    "${pin[@]}" "${cmd[@]}" --bind 127.0.0.1:0 >"$log.out" 2>"$log.err" &
    SERVER_PID=$!
    for ((i = 0; i < 200; i++)); do
        line=$(grep -m1 '^listening on ws://' "$log.out" 2>/dev/null || true)
        [ -n "$line" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || { wait "$SERVER_PID" || true; SERVER_PID=; return 1; }
        sleep 0.05
    done
    [ -n "$line" ] || { stop_server; return 1; }
    SERVER_URL=${line#listening on }
    case "$SERVER_URL" in
        ws://127.*|ws://\[::1\]*) ;;
        *) stop_server; die "$name listens on $SERVER_URL, not on loopback" ;;
    esac
}

stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

run_one() { # scenario-id mode conns size pipeline threads server round
    local id=$1 mode=$2 conns=$3 size=$4 pipeline=$5 threads=$6 server=$7 round=$8
    local dir="$RAW/$id/$server" log="$LOGS/$id.$server.r$round" rc=0 limit pin=()
    [ "$threads" = 1 ] && pin=("${PIN_CLIENT[@]}")
    mkdir -p "$dir"
    if ! start_server "$server" "$threads" "$log"; then
        note "$id/$server r$round: server did not start (see $log.err)"
        echo "server did not start" >"$dir/r$round.failed"
        return 0
    fi
    local args=("$mode" "$SERVER_URL/" --conns "$conns" --server-pid "$SERVER_PID" --json
        --threads "$threads")
    if [ "$mode" = echo ]; then
        args+=(--size "$size" --secs "$SECS" --warmup "$WARMUP" --binary --pipeline "$pipeline")
        limit=$((SECS + WARMUP + 90))
    else
        limit=180
    fi
    timeout -k 5 "$limit" "${pin[@]}" "${LOADGEN[@]}" "${args[@]}" \
        >"$dir/r$round.out" 2>"$log.bench.err" || rc=$?
    local alive=1
    kill -0 "$SERVER_PID" 2>/dev/null || alive=0
    stop_server
    if [ "$rc" = 0 ] && [ "$alive" = 1 ] && [ -s "$dir/r$round.out" ]; then
        mv "$dir/r$round.out" "$dir/r$round.json"
        printf '  %-20s %-17s r%s  %s\n' "$id" "$server" "$round" \
            "$(tr -d '\n' <"$dir/r$round.json" | cut -c1-150)" >&2
    else
        local why="load generator exit $rc"
        [ "$alive" = 1 ] || why="$why; server died (see $log.err)"
        note "$id/$server r$round failed: $why (see $log.bench.err)"
        echo "$why" >"$dir/r$round.failed"
    fi
}

# The numbers are only as quiet as the machine: say so when something else is busy.
LOAD1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD1" 'BEGIN { exit !(l > 0.5) }'; then
    note "warning: load average is $LOAD1 before the run: other processes will add noise"
fi

START=$(date +%s)
note "servers: ${ACTIVE[*]}; rounds $ROUNDS; ${SECS}s + ${WARMUP}s warm-up; pipeline $PIPELINE at 20 B and 1 KiB; load generator: ${LOADGEN[*]}"
n=${#ACTIVE[@]}
for spec in "${SCENARIOS[@]}"; do
    read -r id mode conns size pipeline threads <<<"$spec"
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((k = 0; k < n; k++)); do
            run_one "$id" "$mode" "$conns" "$size" "$pipeline" "$threads" \
                "${ACTIVE[$(((k + r - 1) % n))]}" "$r"
        done
    done
done
note "runs took $(($(date +%s) - START)) s"

"$BENCH_DIR/target/release/compare-report" --raw "$RAW" --out "$OUT" \
    --lock "$BENCH_DIR/Cargo.lock"
echo
cat "$OUT/report.md"
