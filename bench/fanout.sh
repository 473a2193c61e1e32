#!/usr/bin/env bash
# Fan-out side by side: one topic (or --topics N, the subscribers spread over them: the
# chat shape of many small topics), many subscribers, messages POSTed to the server, which
# writes each to every subscriber of its topic. The same scenario, in one run, against:
#   floor         bench/peers peer-fanout-floor: one pre-framed message written to every
#                 socket in a bare loop, no library, no queues (the floor of the cost)
#   duplex        duplex serve --threads 1
#   duplex-v1     duplex serve --threads 1, subscribers on duplex.v1 (/topics, the subprotocol
#                 duplex.js and the Rust client speak: JSON `message` frames with offsets)
#   duplex-t2     duplex serve --threads 2, on both CPUs (the load generator stays on CPU 1,
#                 so it shares that one with a server thread: the figure says whether the
#                 fan-out spreads over threads, not what a second core buys)
#   ws            Node `ws` broadcast (bench/node/fanout-ws.mjs, ws pinned by package-lock)
#   sockudo       Sockudo 5.2 from crates.io (Pusher protocol, signed HTTP events API)
#   bun           Bun's built-in server on uWebSockets (bench/bun/fanout.js: ws.subscribe on
#                 open, server.publish from a POST; @oven/bun-linux-x64 pinned by bench/bun's
#                 package-lock), one JavaScript thread
#   duplex-redis  two `duplex serve --threads 1 --redis` on one redis-server (started here
#                 on a free port); subscribers spread over both, publishes to the first
#
#   bench/fanout.sh [--quick] [--rounds N] [--secs S] [--warmup S] [--subscribers N]
#                   [--topics N] [--size B] [--in-flight N] [--half-rate R] [--low-rate R]
#                   [--servers a,b,...] [--no-build]
#
# Scenarios, each for every server, interleaved per round (order rotated):
#   sat   rate max: as fast as delivery allows (--in-flight publishes not yet delivered
#         to every subscriber, at most)
#   half  half the floor's saturation publish rate (median of this run's sat rounds),
#         or --half-rate R
#   low   --low-rate publishes/s (default 5): latency at rest
# The server (and its redis) is pinned to CPU 0, the load generator `duplex bench
# fanout` to CPU 1; loopback and free ports only. The load generator reads the servers'
# CPU time over the measured window (redis's included for duplex-redis) and RSS (before
# the subscribers, once they are idle: memory per idle subscriber). Medians over the
# rounds go to target/bench/fanout/report.{json,md}; raw runs to
# target/bench/fanout/raw/<scenario>/<server>/r<round>.json, logs to .../logs.
#
# Full: 3 rounds, 10,000 subscribers, 100-byte messages, 10 s (+3 s warm-up) per run,
# 5 servers x 3 scenarios = 45 runs of ~20 s: ~15-20 min once built (building Sockudo the
# first time adds 20-40 min on two cores). --quick: 1 round, 1,000 subscribers,
# 3 s (+1 s): ~3 min once built.
#
# Environment: DUPLEX_BENCH_BIN (default "<repo>/target/release/duplex bench"),
# DUPLEX_SERVER_BIN (the `duplex` served as duplex and duplex-redis; default
# "<repo>/target/release/duplex": a copy of an older build compares before and after),
# BENCH_ALLOW_MISSING=1 (skip a server that is missing or fails to build; default: fail,
# except Sockudo, whose build is skipped with a note when cargo install fails).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
OUT="$ROOT/target/bench/fanout"
RAW="$OUT/raw"
LOGS="$OUT/logs"
SOCKUDO_ROOT="$ROOT/target/peers/sockudo"
SOCKUDO_BIN="$SOCKUDO_ROOT/bin/sockudo"
BUN_BIN="$BENCH_DIR/bun/node_modules/@oven/bun-linux-x64/bin/bun"

ROUNDS=3 SECS=10 WARMUP=3 SUBSCRIBERS=10000 TOPICS=1 SIZE=100 IN_FLIGHT=4 HALF_RATE= LOW_RATE=5
QUICK=0 BUILD=1
SERVERS="floor,duplex,duplex-v1,duplex-t2,ws,sockudo,duplex-redis,bun"

die() { echo "fanout.sh: error: $*" >&2; exit 1; }
note() { echo "fanout.sh: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ROUNDS=1 SECS=3 WARMUP=1 SUBSCRIBERS=1000 ;;
        --rounds) ROUNDS=${2:?}; shift ;;
        --secs) SECS=${2:?}; shift ;;
        --warmup) WARMUP=${2:?}; shift ;;
        --subscribers) SUBSCRIBERS=${2:?}; shift ;;
        --topics) TOPICS=${2:?}; shift ;;
        --size) SIZE=${2:?}; shift ;;
        --in-flight) IN_FLIGHT=${2:?}; shift ;;
        --half-rate) HALF_RATE=${2:?}; shift ;;
        --low-rate) LOW_RATE=${2:?}; shift ;;
        --servers) SERVERS=${2:?}; shift ;;
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done

# --- file descriptors: each side holds every subscriber -----------------------------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((SUBSCRIBERS + 256)) ]; then
    die "ulimit -n is $NOFILE, too low for $SUBSCRIBERS subscribers"
fi

# --- CPU pinning ----------------------------------------------------------------------------
if command -v taskset >/dev/null && [ "$(nproc --all)" -ge 2 ]; then
    PIN_SERVER=(taskset -c 0) PIN_CLIENT=(taskset -c 1)
else
    note "taskset or a second CPU is missing: running unpinned"
    PIN_SERVER=() PIN_CLIENT=()
fi

wanted() { [[ ",$SERVERS," == *",$1,"* ]]; }

# --- build ----------------------------------------------------------------------------------
if [ "$BUILD" = 1 ]; then
    if wanted floor; then
        note "building the floor (bench/peers)"
        cargo build --release --locked --manifest-path "$BENCH_DIR/Cargo.toml" \
            -p bench-peers --bin peer-fanout-floor || die "building the floor failed"
    fi
    if wanted duplex || wanted duplex-v1 || wanted duplex-t2 || wanted duplex-redis || [ -z "${DUPLEX_BENCH_BIN:-}" ]; then
        note "building duplex (duplex-cli)"
        # With the pusher feature: its publisher signs for Sockudo.
        (cd "$ROOT" && cargo build --release --locked -p duplex-cli --features pusher) \
            || die "building duplex-cli failed"
    fi
    if wanted ws; then
        note "installing ws (npm ci in bench/node)"
        (cd "$BENCH_DIR/node" && npm ci --no-audit --no-fund --silent) \
            || die "npm ci in bench/node failed"
    fi
    if wanted bun; then
        note "installing Bun (npm ci in bench/bun)"
        (cd "$BENCH_DIR/bun" && npm ci --no-audit --no-fund --silent) \
            || die "npm ci in bench/bun failed"
    fi
    if wanted sockudo && [ ! -x "$SOCKUDO_BIN" ] && ! command -v protoc >/dev/null; then
        # metrics-exporter-tcp, a dependency Sockudo cannot leave out, runs prost-build.
        note "Sockudo's build needs protoc (apt-get install protobuf-compiler): not building it"
    elif wanted sockudo && [ ! -x "$SOCKUDO_BIN" ]; then
        # Only the in-memory drivers: no Redis, databases, queues or telemetry.
        note "building Sockudo 5.2 (cargo install, no default features but 'local'; long)"
        if ! cargo install sockudo --version '^5.2' --locked --no-default-features \
            --features local --root "$SOCKUDO_ROOT" --target-dir "$ROOT/target/peers/sockudo-build" \
            >"$ROOT/target/peers/sockudo-install.log" 2>&1; then
            note "building Sockudo failed (see target/peers/sockudo-install.log); going on without it"
        fi
    fi
fi

read -r -a LOADGEN <<<"${DUPLEX_BENCH_BIN:-$ROOT/target/release/duplex bench}"
[ -x "${LOADGEN[0]}" ] || command -v "${LOADGEN[0]}" >/dev/null \
    || die "load generator not found: ${LOADGEN[0]} (build duplex-cli or set DUPLEX_BENCH_BIN)"
DUPLEX_BIN="${DUPLEX_SERVER_BIN:-$ROOT/target/release/duplex}"
FLOOR_BIN="$BENCH_DIR/target/release/peer-fanout-floor"

# --- which servers take part ------------------------------------------------------------------
missing() { # server -> reason it cannot run, or nothing
    case "$1" in
        floor) [ -x "$FLOOR_BIN" ] || echo "$FLOOR_BIN is missing" ;;
        duplex|duplex-v1|duplex-t2) [ -x "$DUPLEX_BIN" ] || echo "$DUPLEX_BIN is missing" ;;
        duplex-redis)
            [ -x "$DUPLEX_BIN" ] || echo "$DUPLEX_BIN is missing"
            command -v redis-server >/dev/null || echo "redis-server is not installed" ;;
        ws)
            command -v node >/dev/null || echo "node is not installed"
            [ -d "$BENCH_DIR/node/node_modules/ws" ] || echo "bench/node/node_modules/ws is missing (npm ci)" ;;
        sockudo) [ -x "$SOCKUDO_BIN" ] || echo "$SOCKUDO_BIN is missing" ;;
        bun) [ -x "$BUN_BIN" ] || echo "$BUN_BIN is missing (npm ci in bench/bun)" ;;
        *) echo "unknown server" ;;
    esac
}
ACTIVE=()
IFS=, read -r -a WANTED <<<"$SERVERS"
for s in "${WANTED[@]}"; do
    why=$(missing "$s")
    if [ -z "$why" ]; then
        ACTIVE+=("$s")
    elif [ "$s" = sockudo ] || [ "${BENCH_ALLOW_MISSING:-0}" = 1 ]; then
        note "skipping $s: $why"
    else
        die "cannot run $s: $why (BENCH_ALLOW_MISSING=1 skips it)"
    fi
done
[ ${#ACTIVE[@]} -gt 0 ] || die "no server to run"

rm -rf "$RAW" "$LOGS"
mkdir -p "$RAW" "$LOGS"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# --- servers --------------------------------------------------------------------------------------
PIDS=() URL= PUBLISH= DIALECT= EXTRA=()

wait_listening() { # logfile pid -> sets LINE to the "listening on ws://" address
    local i
    LINE=
    for ((i = 0; i < 400; i++)); do
        LINE=$(grep -m1 -o 'listening on ws://[^ ]*' "$1" 2>/dev/null || true)
        [ -n "$LINE" ] && { LINE=${LINE#listening on }; return 0; }
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

wait_port() { # port pid
    local i
    for ((i = 0; i < 400; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

start_server() { # name logprefix
    local name=$1 log=$2 pid port rport
    PIDS=() EXTRA=()
    case "$name" in
        floor|ws|bun)
            if [ "$name" = floor ]; then
                "${PIN_SERVER[@]}" "$FLOOR_BIN" --bind 127.0.0.1:0 >"$log.out" 2>"$log.err" &
            elif [ "$name" = bun ]; then
                "${PIN_SERVER[@]}" "$BUN_BIN" "$BENCH_DIR/bun/fanout.js" --bind 127.0.0.1:0 \
                    >"$log.out" 2>"$log.err" &
            else
                "${PIN_SERVER[@]}" node "$BENCH_DIR/node/fanout-ws.mjs" --bind 127.0.0.1:0 \
                    >"$log.out" 2>"$log.err" &
            fi
            pid=$!; PIDS=("$pid")
            wait_listening "$log.out" "$pid" || return 1
            URL="$LINE/topics/{topic}" PUBLISH="${LINE/ws:/http:}/topics/{topic}" DIALECT=plain ;;
        duplex|duplex-v1)
            "${PIN_SERVER[@]}" "$DUPLEX_BIN" serve --threads 1 --bind 127.0.0.1:0 \
                >"$log.out" 2>"$log.err" &
            pid=$!; PIDS=("$pid")
            wait_listening "$log.out" "$pid" || return 1
            URL="$LINE" PUBLISH= DIALECT=duplex
            [ "$name" = duplex ] || DIALECT=v1 ;;
        duplex-t2)
            "$DUPLEX_BIN" serve --threads 2 --bind 127.0.0.1:0 >"$log.out" 2>"$log.err" &
            pid=$!; PIDS=("$pid")
            wait_listening "$log.out" "$pid" || return 1
            URL="$LINE" PUBLISH= DIALECT=duplex ;;
        duplex-redis)
            rport=$(free_port)
            "${PIN_SERVER[@]}" redis-server --port "$rport" --bind 127.0.0.1 --save '' \
                --appendonly no >"$log.redis.out" 2>&1 &
            pid=$!; PIDS=("$pid")
            wait_port "$rport" "$pid" || return 1
            local k line1=
            for k in 1 2; do
                "${PIN_SERVER[@]}" "$DUPLEX_BIN" serve --threads 1 --bind 127.0.0.1:0 \
                    --redis "redis://127.0.0.1:$rport/0" >"$log.$k.out" 2>"$log.$k.err" &
                pid=$!; PIDS+=("$pid")
                wait_listening "$log.$k.out" "$pid" || return 1
                if [ "$k" = 1 ]; then line1=$LINE; else EXTRA=(--url "$LINE"); fi
            done
            URL="$line1" PUBLISH= DIALECT=duplex ;;
        sockudo)
            port=$(free_port)
            mkdir -p "$log.cwd"
            (cd "$log.cwd" && exec env HOST=127.0.0.1 PORT="$port" \
                SOCKUDO_DEFAULT_APP_ID=bench-app SOCKUDO_DEFAULT_APP_KEY=bench-key \
                SOCKUDO_DEFAULT_APP_SECRET=bench-secret \
                SOCKUDO_DEFAULT_APP_MAX_CONNECTIONS=1000000 SOCKUDO_MAX_CONNECTIONS=1000000 \
                SOCKUDO_DEFAULT_APP_MAX_BACKEND_EVENTS_PER_SECOND=100000000 \
                RATE_LIMITER_ENABLED=false METRICS_ENABLED=false ADAPTER_DRIVER=local \
                APP_MANAGER_DRIVER=memory CACHE_DRIVER=memory QUEUE_DRIVER=memory \
                RUST_LOG=warn \
                "${PIN_SERVER[@]}" "$SOCKUDO_BIN") >"$log.out" 2>"$log.err" &
            pid=$!; PIDS=("$pid")
            wait_port "$port" "$pid" || return 1
            URL="ws://127.0.0.1:$port" PUBLISH= DIALECT=pusher ;;
    esac
}

stop_server() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap stop_server EXIT
trap 'exit 130' INT TERM

run_one() { # scenario rate server round
    local id=$1 rate=$2 server=$3 round=$4
    local dir="$RAW/$id/$server" log="$LOGS/$id.$server.r$round" rc=0
    mkdir -p "$dir"
    if ! start_server "$server" "$log"; then
        stop_server
        note "$id/$server r$round: server did not start (see $log.*)"
        echo "server did not start" >"$dir/r$round.failed"
        return 0
    fi
    local pids_csv
    pids_csv=$(IFS=,; echo "${PIDS[*]:1}")
    local args=(fanout "$URL" --dialect "$DIALECT" --subscribers "$SUBSCRIBERS"
        --topics "$TOPICS" --size "$SIZE" --rate "$rate" --in-flight "$IN_FLIGHT"
        --secs "$SECS" --warmup "$WARMUP" --settle 1 --server-pid "${PIDS[0]}" --json)
    [ -n "$pids_csv" ] && args+=(--server-pids "$pids_csv")
    [ -n "$PUBLISH" ] && args+=(--publish-url "$PUBLISH")
    args+=("${EXTRA[@]}")
    timeout -k 5 $((SECS + WARMUP + 120)) "${PIN_CLIENT[@]}" "${LOADGEN[@]}" "${args[@]}" \
        >"$dir/r$round.out" 2>"$log.bench.err" || rc=$?
    local alive=1 pid
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || alive=0; done
    stop_server
    if [ "$rc" = 0 ] && [ "$alive" = 1 ] && [ -s "$dir/r$round.out" ]; then
        mv "$dir/r$round.out" "$dir/r$round.json"
        python3 - "$dir/r$round.json" "$id" "$server" "$round" <<'EOF' >&2
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency_ms"]
f = lambda v: "-" if v is None else f"{v:.1f}"
print(f"  {sys.argv[2]:<5} {sys.argv[3]:<13} r{sys.argv[4]}  {r['deliveries_per_sec']:>9.0f} deliveries/s"
      f"  {r['publishes_per_sec']:>7.1f} pub/s  p50 {f(lat['p50'])} p99 {f(lat['p99'])} ms"
      f"  lost {r['lost']} dup {r['duplicated']}")
EOF
    else
        local why="load generator exit $rc"
        [ "$alive" = 1 ] || why="$why; a server process died (see $log.*)"
        note "$id/$server r$round failed: $why (see $log.bench.err)"
        echo "$why" >"$dir/r$round.failed"
    fi
}

LOAD1=$(cut -d' ' -f1 /proc/loadavg)
if awk -v l="$LOAD1" 'BEGIN { exit !(l > 0.5) }'; then
    note "warning: load average is $LOAD1 before the run: other processes will add noise"
fi

json_str() { printf '"%s"' "$(printf '%s' "$1" | tr -d '"\\' | tr '\n\t' '  ')"; }
{
    printf '{"date":%s,' "$(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")"
    printf '"kernel":%s,' "$(json_str "$(uname -sr)")"
    printf '"cpu":%s,' "$(json_str "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')")"
    printf '"nproc":%s,"loadavg":%s,' "$(nproc --all)" "$(json_str "$(cut -d' ' -f1-3 /proc/loadavg)")"
    printf '"rounds":%s,"secs":%s,"warmup":%s,"subscribers":%s,"topics":%s,"size":%s,' \
        "$ROUNDS" "$SECS" "$WARMUP" "$SUBSCRIBERS" "$TOPICS" "$SIZE"
    printf '"in_flight":%s,' "$IN_FLIGHT"
    printf '"quick":%s,"pinned":%s,' "$([ "$QUICK" = 1 ] && echo true || echo false)" \
        "$([ ${#PIN_SERVER[@]} -gt 0 ] && echo true || echo false)"
    printf '"git":%s,' "$(json_str "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)")"
    printf '"node":%s,' "$(json_str "$(node --version 2>/dev/null || echo none)")"
    printf '"ws":%s,' "$(json_str "$(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$BENCH_DIR/node/node_modules/ws/package.json" 2>/dev/null | head -1)")"
    printf '"sockudo":%s,' "$(json_str "$([ -x "$SOCKUDO_BIN" ] && "$SOCKUDO_BIN" --version 2>/dev/null | head -1 || echo none)")"
    printf '"bun":%s,' "$(json_str "$([ -x "$BUN_BIN" ] && "$BUN_BIN" --version 2>/dev/null || echo none)")"
    printf '"redis":%s,' "$(json_str "$(redis-server --version 2>/dev/null | cut -d' ' -f3 || echo none)")"
    printf '"servers":"%s"}\n' "${ACTIVE[*]}"
} >"$RAW/meta.json"

START=$(date +%s)
note "servers: ${ACTIVE[*]}; $SUBSCRIBERS subscribers on $TOPICS topic(s) x ${SIZE} B; rounds $ROUNDS; ${SECS}s + ${WARMUP}s warm-up"
n=${#ACTIVE[@]}
scenario() { # id rate
    local r k
    for ((r = 1; r <= ROUNDS; r++)); do
        for ((k = 0; k < n; k++)); do
            run_one "$1" "$2" "${ACTIVE[$(((k + r - 1) % n))]}" "$r"
        done
    done
}

scenario sat max
if [ -z "$HALF_RATE" ]; then
    HALF_RATE=$(python3 - "$RAW/sat" <<'EOF'
import glob, json, statistics, sys
runs = [json.load(open(f))["publishes_per_sec"] for f in glob.glob(sys.argv[1] + "/floor/r*.json")]
print(f"{statistics.median(runs) / 2:.2f}" if runs else "")
EOF
)
    [ -n "$HALF_RATE" ] || die "no saturation result of the floor to halve: give --half-rate"
    note "half of the floor's saturation: $HALF_RATE publishes/s"
fi
scenario half "$HALF_RATE"
scenario low "$LOW_RATE"
note "runs took $(($(date +%s) - START)) s"

python3 "$BENCH_DIR/fanout_report.py" --raw "$RAW" --out "$OUT" --half-rate "$HALF_RATE" \
    --low-rate "$LOW_RATE"
echo
cat "$OUT/report.md"
