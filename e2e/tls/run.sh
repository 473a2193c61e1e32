#!/usr/bin/env bash
# TLS interop: `duplex serve --tls-cert --tls-key` against a Python `websockets`
# client (OpenSSL underneath) that trusts a CA made at run time, and `duplex connect`
# against a Python `websockets` TLS server (python_client.py); then two WebSockets
# over one HTTP/2 connection with the pure-Python `h2` stack (h2_client.py).
#
#   e2e/tls/run.sh
#
# Environment:
#   DUPLEX_BIN   the duplex binary (default: target/release/duplex, built if missing)
#   PYTHON       a Python with `websockets` (default: target/venv/bin/python, created
#                from e2e/requirements.txt if missing)
# Certificates: the example `test_certs` (rcgen), from target/release/examples if it is
# there, else through `cargo run`. Only 127.0.0.1 is used; the server is stopped on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
cd "$root"

bin="${DUPLEX_BIN:-$target/release/duplex}"
if [ -z "${DUPLEX_BIN:-}" ] && [ ! -x "$bin" ]; then
  echo "run.sh: building $bin" >&2
  cargo build --release -q -p duplex-cli
fi

python="${PYTHON:-$root/target/venv/bin/python}"
if ! "$python" -c 'import websockets, h2' 2>/dev/null; then
  if [ -n "${PYTHON:-}" ]; then
    echo "run.sh: $python cannot import websockets" >&2
    exit 1
  fi
  echo "run.sh: creating $root/target/venv from e2e/requirements.txt" >&2
  python3 -m venv "$root/target/venv"
  "$python" -m pip install --quiet --disable-pip-version-check --no-input -r "$root/e2e/requirements.txt"
fi

work="$target/tls-e2e"
rm -rf "$work"
mkdir -p "$work/certs"
if [ -x "$target/release/examples/test_certs" ]; then
  "$target/release/examples/test_certs" "$work/certs" >/dev/null
else
  cargo run -q -p duplex-ws --example test_certs -- "$work/certs" >/dev/null
fi

server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

"$bin" serve --bind 127.0.0.1:0 --tls-cert "$work/certs/cert.pem" --tls-key "$work/certs/key.pem" \
  >"$work/serve.stdout" 2>"$work/serve.stderr" </dev/null &
server_pid=$!
addr=""
for _ in $(seq 100); do
  line="$(head -n1 "$work/serve.stdout" 2>/dev/null || true)"
  if [[ "$line" =~ ^listening\ on\ wss://(127\.0\.0\.1:[0-9]+)$ ]]; then
    addr="${BASH_REMATCH[1]}"
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$addr" ]; then
  echo "run.sh: duplex serve did not print 'listening on wss://127.0.0.1:PORT'" >&2
  cat "$work/serve.stdout" "$work/serve.stderr" >&2
  exit 1
fi
echo "duplex serve (pid $server_pid) on wss://$addr; its log: $work/serve.stderr"

rc=0
"$python" "$here/python_client.py" --url "wss://$addr/" --ca "$work/certs/ca.pem" \
  --cert "$work/certs/cert.pem" --key "$work/certs/key.pem" --duplex "$bin" || rc=$?
# WebSocket over HTTP/2 (RFC 8441) with the pure-Python h2 stack.
"$python" "$here/h2_client.py" --url "wss://$addr/" --ca "$work/certs/ca.pem" || rc=$?

# The server must still be up, and stop cleanly on SIGTERM.
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "run.sh: duplex serve died during the run" >&2
  cat "$work/serve.stderr" >&2
  exit 1
fi
kill -TERM "$server_pid"
src=0
wait "$server_pid" || src=$?
server_pid=""
if [ "$src" != 0 ]; then
  echo "run.sh: duplex serve exited with status $src after SIGTERM" >&2
  cat "$work/serve.stderr" >&2
  exit 1
fi
if grep -q panicked "$work/serve.stderr"; then
  echo "run.sh: duplex serve panicked" >&2
  cat "$work/serve.stderr" >&2
  exit 1
fi
exit "$rc"
