#!/usr/bin/env bash
# The one command that runs every test of duplex (the README's `scripts/test.sh`).
#
#   scripts/test.sh [STEP...]        no STEP = all of them, in this order:
#
#   fmt              cargo fmt --all -- --check, and no import cycle between the modules of a
#                    crate but a parent's with its children (scripts/import_cycles.py)
#   clippy           cargo clippy --workspace --all-targets --all-features -- -D warnings, and
#                    duplex-hub without its server feature (the Rust client alone, which
#                    must pull in no Redis, NATS, JWT or hyper crate) and duplex-ws without
#                    its default features
#   doc              cargo doc --no-deps, warnings denied: the workspace with all features,
#                    duplex-ws with each feature set (no default, tls, hyper, axum), and
#                    duplex-hub without its server feature
#   test             cargo test --workspace --all-features (the hub's tests start their own
#                    redis-server, Redis Cluster, Sentinels and nats-server on free ports)
#   build            cargo build --release --all-features -p duplex-cli -p duplex-ws -p duplex-hub --examples --bins
#   autobahn-server  kosoku -m fuzzingclient against `duplex serve`, judged strictly
#   autobahn-client  kosoku -m fuzzingserver against the example `autobahn_client`, judged strictly
#   interop-client   Python websockets client -> duplex serve (e2e/interop/client_vs_duplex.py)
#   interop-server   duplex connect -> Python websockets server (e2e/interop/duplex_vs_server.py)
#   interop-axum     Python websockets clients -> the axum_chat example (duplex's axum extractor)
#   tls              Python websockets <-> duplex over TLS, CA made at run time (e2e/tls/run.sh)
#   browser          headless Chromium against duplex serve, after the browser client's tsc
#                    check and unit tests (e2e/browser/run.sh, crates/duplex-hub/js)
#   soak             the hub's soak for 60 s (scripts/soak.sh runs it for 10 min): two `duplex serve`
#                    nodes on a redis-server of its own, 5,000 duplex.v1 subscribers resuming and
#                    dropping at random, one node killed and restarted halfway; every offset once
#                    or in a reported gap, RSS flat after warm-up
#   bench            cargo bench --workspace --no-run (compiles the benches, never times them)
#   fuzz             scripts/fuzz.sh: every cargo-fuzz target of fuzz/ for 20 s from its seeds
#                    (installs cargo-fuzz, pinned, on the stable toolchain)
#
# Steps that need the release binaries build them first (the build step) even when
# only they are named. A failed build skips them; every other step runs whatever failed
# before it, and the summary names each one. The last line is `N passed, M failed`
# (steps), followed by `, K skipped` when some were skipped; the exit status is 0 only
# if every step passed.
#
# Installs what it needs, idempotently: a Python venv at target/venv with the pins of
# e2e/requirements.txt (kosoku, websockets), reinstalled when the pins change; the
# browser step installs Debian's chromium and redis-server, playwright-core and
# typescript itself; the test step installs Debian's redis-server, redis-tools and
# nats-server when they are missing (tests start their own, on free loopback ports; none
# uses a running Redis or NATS).
#
# Environment:
#   DUPLEX_AUTOBAHN_CASES        case selection for both roles, kosoku patterns separated
#                                by spaces (`1.*` = category 1; `!9.*` excludes); default:
#                                every case, 1.* to 13.* (517)
#   DUPLEX_AUTOBAHN_PARALLELISM  kosoku -p for the server role (default 4; on 2 cores 12.2+13.3 took 113 s at -p 1, 71 s at -p 2, 60 s at -p 4)
#   DUPLEX_AUTOBAHN_TIMEOUT      seconds each role may take before it is stopped (default 1800)
#   DUPLEX_FUZZ_SECONDS          seconds each fuzz target runs (default 20)
#   DUPLEX_SOAK_SECONDS          seconds the soak step runs (default 60)
#
# Only loopback addresses are used. Every process started here is stopped on exit,
# including on failure or Ctrl-C. Logs and reports: target/test-logs/, target/autobahn/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
VENV="$ROOT/target/venv"
REQUIREMENTS="$ROOT/e2e/requirements.txt"
LOGS="$ROOT/target/test-logs"
REPORTS="$ROOT/target/autobahn"
DUPLEX_BIN="$TARGET_DIR/release/duplex"
AUTOBAHN_CLIENT_BIN="$TARGET_DIR/release/examples/autobahn_client"
AUTOBAHN_CASES="${DUPLEX_AUTOBAHN_CASES:-}"
AUTOBAHN_PARALLELISM="${DUPLEX_AUTOBAHN_PARALLELISM:-4}"
AUTOBAHN_TIMEOUT="${DUPLEX_AUTOBAHN_TIMEOUT:-1800}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

ALL_STEPS=(fmt clippy doc test build autobahn-server autobahn-client interop-client interop-server interop-axum tls browser soak bench fuzz)
NEEDS_BUILD=" autobahn-server autobahn-client interop-client interop-server interop-axum tls browser soak "

mkdir -p "$LOGS"
PIDS_FILE="$LOGS/pids"
: >"$PIDS_FILE"

now() { date +%s%N; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }
log() { printf '%s\n' "$*"; }

# ---------------------------------------------------------------- processes
# Every background process is registered with its start time (field 22 of
# /proc/PID/stat), so that cleanup stops exactly the processes started here, by id,
# and never a later process that reused the id.
proc_start_time() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  # shellcheck disable=SC2086 # split the fields on purpose
  set -- $stat
  printf '%s\n' "${20}"
}

register_pid() {
  local st
  st="$(proc_start_time "$1")" || return 0
  printf '%s %s\n' "$1" "$st" >>"$PIDS_FILE"
}

# stop_pid PID: TERM, up to 5 s of grace, then KILL; only if it is still the process
# that was registered under that id.
stop_pid() {
  local pid="$1" want st
  want="$(awk -v p="$pid" '$1 == p { s = $2 } END { print s }' "$PIDS_FILE")"
  st="$(proc_start_time "$pid")" || return 0
  [ -n "$want" ] && [ "$st" != "$want" ] && return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    [ "$(proc_start_time "$pid" || true)" = "$st" ] || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_registered() {
  local pid st
  [ -s "$PIDS_FILE" ] || return 0
  while read -r pid st; do
    [ -n "$pid" ] || continue
    if [ "$(proc_start_time "$pid" || true)" = "$st" ]; then
      stop_pid "$pid"
    fi
  done <"$PIDS_FILE"
}

# wait_for_line FILE REGEX PID TIMEOUT: print the first line of FILE matching REGEX,
# failing if PID exits first or after TIMEOUT seconds.
wait_for_line() {
  local file="$1" regex="$2" pid="$3" timeout="$4" deadline line
  deadline=$(($(date +%s) + timeout))
  while :; do
    line="$(grep -m1 -E "$regex" "$file" 2>/dev/null || true)"
    if [ -n "$line" ]; then
      printf '%s\n' "$line"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      log "error: process $pid exited before printing /$regex/ (see $file)" >&2
      tail -n 20 "$file" >&2 || true
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "error: no line /$regex/ in $file within ${timeout}s" >&2
      return 1
    fi
    sleep 0.1
  done
}

# wait_pid_timeout PID TIMEOUT: wait for a background child; its exit status, or 124
# (and it is stopped) after TIMEOUT seconds.
wait_pid_timeout() {
  local pid="$1" timeout="$2" deadline rc
  deadline=$(($(date +%s) + timeout))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "error: process $pid still running after ${timeout}s; stopping it" >&2
      stop_pid "$pid"
      wait "$pid" 2>/dev/null || true
      return 124
    fi
    sleep 0.2
  done
  rc=0
  wait "$pid" || rc=$?
  return "$rc"
}

# start_duplex_serve LOGNAME [ARG...]: start `duplex serve ARG...` on a free loopback port; sets
# SERVE_PID and SERVE_PORT.
start_duplex_serve() {
  local out="$LOGS/$1.stdout" err="$LOGS/$1.stderr" line
  "$DUPLEX_BIN" serve --bind 127.0.0.1:0 "${@:2}" >"$out" 2>"$err" </dev/null &
  SERVE_PID=$!
  register_pid "$SERVE_PID"
  line="$(wait_for_line "$out" '^listening on ws://' "$SERVE_PID" 30)"
  if [[ "$line" =~ ^listening\ on\ ws://127\.0\.0\.1:([0-9]+)$ ]]; then
    SERVE_PORT="${BASH_REMATCH[1]}"
  else
    log "error: duplex serve printed '$line', expected 'listening on ws://127.0.0.1:PORT'" >&2
    return 1
  fi
  log "duplex serve (pid $SERVE_PID) listening on 127.0.0.1:$SERVE_PORT; its log: $err"
}

stop_duplex_serve() {
  local rc=0
  if kill -0 "$SERVE_PID" 2>/dev/null; then
    stop_pid "$SERVE_PID"
    wait "$SERVE_PID" 2>/dev/null || true
  else
    wait "$SERVE_PID" 2>/dev/null || rc=$?
    log "error: duplex serve had exited by itself (status $rc); last lines of its log:" >&2
    tail -n 20 "$LOGS/${1}.stderr" >&2 || true
    return 1
  fi
}

# ---------------------------------------------------------------- python venv
apt_install() { # apt_install PACKAGE...: Debian packages, quietly
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {
  local stamp="$VENV/.duplex-requirements" python
  if [ -x "$VENV/bin/python" ] && cmp -s "$REQUIREMENTS" "$stamp" \
    && "$VENV/bin/python" -c 'import websockets, kosoku' 2>/dev/null \
    && "$VENV/bin/kosoku" --help >/dev/null 2>&1; then
    return 0
  fi
  python="$(command -v python3.11 || command -v python3 || true)"
  if [ -z "$python" ]; then
    log "error: python3 not found (Python 3.11 is needed)" >&2
    return 1
  fi
  if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    log "python: installing the venv module (apt: python3-venv)"
    if [ "$(id -u)" != 0 ]; then
      log "error: $python has no venv module; install python3-venv" >&2
      return 1
    fi
    apt_install python3-venv
  fi
  log "python: creating $VENV with $(tr "\n" " " <"$REQUIREMENTS")"
  rm -rf "$VENV"
  "$python" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQUIREMENTS"
  cp "$REQUIREMENTS" "$stamp"
}

# DUPLEX_AUTOBAHN_CASES -> kosoku -i/-x flags, in the array KOSOKU_SELECT.
autobahn_cases_args() {
  local pattern
  KOSOKU_SELECT=()
  set -f
  for pattern in $AUTOBAHN_CASES; do
    if [ "${pattern#!}" != "$pattern" ]; then
      KOSOKU_SELECT+=(-x "${pattern#!}")
    else
      KOSOKU_SELECT+=(-i "$pattern")
    fi
  done
  set +f
}

judge() { # judge REPORT_DIR ROLE WALL_SECONDS [JUDGE_ARG...]
  local dir="$1" role="$2" wall="$3"
  shift 3
  "$VENV/bin/python" "$ROOT/e2e/autobahn/judge.py" "$dir" "$role" \
    --cases "$AUTOBAHN_CASES" --wall-seconds "$wall" "$@"
}

# ---------------------------------------------------------------- the steps
step_fmt() {
  cargo fmt --all -- --check
  # Imports point one way: no two modules of a crate import each other in a
  # circle, but for a parent and the children that implement its type.
  local crate
  for crate in duplex-proto duplex-ws duplex-hub duplex-cli duplex-testing; do
    python3 "$ROOT/scripts/import_cycles.py" "$ROOT/crates/$crate/src" "${crate//-/_}" --siblings
  done
}
step_clippy() {
  cargo clippy --workspace --all-targets --all-features -- -D warnings
  # duplex-hub without its server feature: the duplex.v1 Rust client alone,
  # which must build, pass its tests' lints, and pull in no server crate.
  cargo clippy -p duplex-hub --no-default-features --all-targets -- -D warnings
  # duplex-ws as the smallest client (no TLS, no hyper): its tests that need
  # a feature name it, so the rest still build.
  cargo clippy -p duplex-ws --no-default-features --all-targets -- -D warnings
  local server_crates
  server_crates="$(cargo tree -p duplex-hub --no-default-features -e normal --prefix none |
    awk '{print $1}' | grep -E '^(redis|async-nats|jsonwebtoken|hyper|h2|tower-service)$' | sort -u || true)"
  if [ -n "$server_crates" ]; then
    log "duplex-hub's client alone pulls in server crates: $server_crates"
    return 1
  fi
}
step_doc() {
  local features
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps
  RUSTDOCFLAGS="-D warnings" cargo doc -p duplex-hub --no-deps --no-default-features
  for features in "--no-default-features" "--no-default-features --features tls" \
    "--no-default-features --features hyper" "--features axum"; do
    # shellcheck disable=SC2086 # the features are words
    RUSTDOCFLAGS="-D warnings" cargo doc -p duplex-ws --no-deps $features
  done
}
ensure_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 && return 0
  log "redis: installing redis-server and redis-tools (apt), for the backplane tests"
  if [ "$(id -u)" != 0 ]; then
    log "error: redis-server or redis-cli not found; install Debian's redis-server and redis-tools" >&2
    return 1
  fi
  apt_install redis-server redis-tools
}
ensure_nats() {
  # Debian puts it in /usr/sbin, which a user's PATH may lack.
  case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac
  command -v nats-server >/dev/null 2>&1 && return 0
  log "nats: installing nats-server (apt), for the NATS JetStream backplane tests"
  if [ "$(id -u)" != 0 ]; then
    log "error: nats-server not found; install Debian's nats-server" >&2
    return 1
  fi
  apt_install nats-server
}
step_test() { ensure_redis; ensure_nats; cargo test --workspace --all-features; }
step_build() { cargo build --release --all-features -p duplex-cli -p duplex-ws -p duplex-hub --examples --bins; }
# Compiles, never times: the Criterion benches, and the comparison harness
# (bench/, its own workspace) in the release mode bench/compare.sh runs it in.
step_bench() {
  cargo bench --workspace --no-run
  cargo build --release --locked --manifest-path "$ROOT/bench/Cargo.toml"
  cargo test --release --locked --manifest-path "$ROOT/bench/Cargo.toml"
}
step_soak() {
  ensure_redis
  # 5,000 subscribers and their reconnects, two nodes' worth of sockets.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  "$TARGET_DIR/release/examples/soak" --duplex "$DUPLEX_BIN" --secs "${DUPLEX_SOAK_SECONDS:-60}" \
    --subscribers 5000 --logs "$LOGS"
}
step_fuzz() { bash "$ROOT/scripts/fuzz.sh" "${DUPLEX_FUZZ_SECONDS:-20}"; }
step_tls() { ensure_venv; DUPLEX_BIN="$DUPLEX_BIN" PYTHON="$VENV/bin/python" bash "$ROOT/e2e/tls/run.sh"; }
step_browser() { DUPLEX_BIN="$DUPLEX_BIN" bash "$ROOT/e2e/browser/run.sh"; }

step_autobahn_server() {
  local out="$REPORTS/server" t0 rc=0 wall
  ensure_venv
  autobahn_cases_args
  rm -rf "$out"
  mkdir -p "$out"
  # Keepalive off: the cases check every frame they receive, and a Ping they
  # did not ask for ends a case that runs past the interval (20 s; the large
  # 12.* cases do when four run at once) as failed.
  start_duplex_serve autobahn-server-duplex --ping-interval 0
  log "kosoku -m fuzzingclient 127.0.0.1:$SERVE_PORT -p $AUTOBAHN_PARALLELISM ${KOSOKU_SELECT[*]} -o $out"
  t0="$(now)"
  "$VENV/bin/kosoku" -m fuzzingclient "127.0.0.1:$SERVE_PORT" -p "$AUTOBAHN_PARALLELISM" \
    ${KOSOKU_SELECT[@]+"${KOSOKU_SELECT[@]}"} -o "$out" </dev/null &
  local kpid=$!
  register_pid "$kpid"
  wait_pid_timeout "$kpid" "$AUTOBAHN_TIMEOUT" || rc=$?
  wall="$(secs_since "$t0")"
  log "kosoku exited with status $rc after ${wall}s (its status counts NON-STRICT as a pass; the judge decides)"
  local serve_ok=0 judged=0
  stop_duplex_serve autobahn-server-duplex || serve_ok=1
  judge "$out" server "$wall" || judged=$?
  # kosoku's status is non-zero only when it judged a case failed; the judge is
  # stricter, so that is already counted. A timeout (124) is not.
  [ "$serve_ok" = 0 ] && [ "$judged" = 0 ] && [ "$rc" != 124 ]
}

step_autobahn_client() {
  local out="$REPORTS/client" err="$LOGS/autobahn-client-kosoku.stderr" line port t0 rc=0 crc=0 wall
  ensure_venv
  autobahn_cases_args
  rm -rf "$out"
  mkdir -p "$out"
  "$VENV/bin/kosoku" -m fuzzingserver 127.0.0.1:0 ${KOSOKU_SELECT[@]+"${KOSOKU_SELECT[@]}"} \
    -o "$out" </dev/null 2>"$err" &
  local kpid=$!
  register_pid "$kpid"
  line="$(wait_for_line "$err" '^fuzzingserver listening on ws://' "$kpid" 60)"
  if [[ "$line" =~ ^fuzzingserver\ listening\ on\ ws://([0-9.]+):([0-9]+) ]]; then
    port="${BASH_REMATCH[2]}"
  else
    log "error: cannot read the port from kosoku's '$line'" >&2
    return 1
  fi
  log "kosoku fuzzingserver (pid $kpid) on 127.0.0.1:$port; running $AUTOBAHN_CLIENT_BIN"
  t0="$(now)"
  "$AUTOBAHN_CLIENT_BIN" "ws://127.0.0.1:$port" duplex </dev/null \
    >"$LOGS/autobahn-client.stdout" 2>"$LOGS/autobahn-client.stderr" &
  local cpid=$!
  register_pid "$cpid"
  wait_pid_timeout "$cpid" "$AUTOBAHN_TIMEOUT" || crc=$?
  log "autobahn_client exited with status $crc (its log: $LOGS/autobahn-client.stderr)"
  if [ "$crc" != 0 ]; then
    tail -n 20 "$LOGS/autobahn-client.stderr" >&2 || true
  fi
  # After /updateReports kosoku writes the report and exits by itself.
  wait_pid_timeout "$kpid" 120 || rc=$?
  wall="$(secs_since "$t0")"
  log "kosoku exited with status $rc after ${wall}s"
  cat "$err"
  local judged=0
  judge "$out" client "$wall" --agent duplex || judged=$?
  [ "$judged" = 0 ] && [ "$crc" = 0 ] && [ "$rc" != 124 ]
}

step_interop_client() {
  ensure_venv
  "$VENV/bin/python" "$ROOT/e2e/interop/client_vs_duplex.py" --duplex "$DUPLEX_BIN"
}

step_interop_server() {
  ensure_venv
  "$VENV/bin/python" "$ROOT/e2e/interop/duplex_vs_server.py" --duplex "$DUPLEX_BIN"
}

step_interop_axum() {
  ensure_venv
  "$VENV/bin/python" "$ROOT/e2e/interop/websockets_vs_axum.py" --example "$TARGET_DIR/release/examples/axum_chat"
}

# ---------------------------------------------------------------- running them
RESULTS=()
STEP_PID=""

# run_step NAME: run step_NAME in a subshell with errexit, in its own process group
# (so that everything it started can be stopped at once), timed.
run_step() {
  local name="$1" fn="step_${1//-/_}" t0 rc=0 secs verdict
  log ""
  log "==> [$((${#RESULTS[@]} + 1))/$TOTAL_STEPS] $name"
  t0="$(now)"
  set -m
  (
    set -euo pipefail
    trap stop_registered EXIT
    "$fn"
  ) &
  STEP_PID=$!
  set +m
  wait "$STEP_PID" || rc=$?
  STEP_PID=""
  secs="$(secs_since "$t0")"
  if [ "$rc" = 0 ]; then verdict=PASS; else verdict=FAIL; fi
  log "<== $name: $verdict (${secs}s$([ "$rc" = 0 ] || printf ', status %s' "$rc"))"
  RESULTS+=("$name $verdict $secs")
  [ "$rc" = 0 ]
}

skip_step() {
  log ""
  log "==> [$((${#RESULTS[@]} + 1))/$TOTAL_STEPS] $1: SKIPPED ($2)"
  RESULTS+=("$1 SKIP 0.0")
}

summary() {
  local r name verdict secs passed=0 failed=0 skipped=0
  log ""
  log "================ summary ($(secs_since "$RUN_T0")s in all)"
  printf '%-18s %-6s %9s\n' step result seconds
  for r in "${RESULTS[@]}"; do
    read -r name verdict secs <<<"$r"
    printf '%-18s %-6s %9s\n' "$name" "$verdict" "$secs"
    case "$verdict" in
      PASS) passed=$((passed + 1)) ;;
      FAIL) failed=$((failed + 1)) ;;
      *) skipped=$((skipped + 1)) ;;
    esac
  done
  log "reports: $REPORTS/{server,client}/index.html   logs: $LOGS/"
  if [ "$skipped" -gt 0 ]; then
    log "$passed passed, $failed failed, $skipped skipped"
  else
    log "$passed passed, $failed failed"
  fi
  [ "$failed" = 0 ] && [ "$skipped" = 0 ]
}

on_exit() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$STEP_PID" ]; then
    kill -TERM -- "-$STEP_PID" 2>/dev/null || true
    wait "$STEP_PID" 2>/dev/null || true
  fi
  stop_registered
  exit "$rc"
}
trap on_exit EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

main() {
  local steps=() s want build_ok=1
  if [ $# -gt 0 ]; then
    for s in "$@"; do
      if [[ " ${ALL_STEPS[*]} " != *" $s "* ]]; then
        log "unknown step '$s'; steps: ${ALL_STEPS[*]}" >&2
        exit 2
      fi
    done
    # Keep the canonical order; pull in the build when a step needs the binaries.
    for s in "${ALL_STEPS[@]}"; do
      for want in "$@"; do
        if [ "$s" = "$want" ] || { [ "$s" = build ] && [[ "$NEEDS_BUILD" == *" $want "* ]]; }; then
          steps+=("$s")
          break
        fi
      done
    done
  else
    steps=("${ALL_STEPS[@]}")
  fi
  TOTAL_STEPS=${#steps[@]}
  RUN_T0="$(now)"
  log "duplex test: steps ${steps[*]}"
  log "autobahn cases: ${AUTOBAHN_CASES:-all (1.* .. 13.*)}; server-role parallelism -p $AUTOBAHN_PARALLELISM"
  for s in "${steps[@]}"; do
    if [[ "$NEEDS_BUILD" == *" $s "* ]] && [ "$build_ok" = 0 ]; then
      skip_step "$s" "the release build failed"
      continue
    fi
    if run_step "$s"; then
      :
    elif [ "$s" = build ]; then
      build_ok=0
    fi
  done
  summary
}

main "$@"
