#!/usr/bin/env bash
# Browser end-to-end test of `duplex serve` in headless Chromium.
# Idempotent and self-installing: Debian's chromium (apt) and playwright-core (npm ci).
# Never downloads a browser of its own (no `playwright install`). As root it runs in
# a network namespace of its own, so a `duplex serve` on the host's port 8080 is no
# obstacle.
#   DUPLEX_BIN=/path/to/server  test another binary (default target/release/duplex)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: installing chromium (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

# node_modules is stale when it was not installed from the current package-lock.json.
stamp="$here/node_modules/.duplex-lock-stamp"
if [ ! -d "$here/node_modules/playwright-core" ] || ! cmp -s "$here/package-lock.json" "$stamp"; then
  echo "run.sh: npm ci" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
  cp "$here/package-lock.json" "$stamp"
fi

if [ -z "${DUPLEX_BIN:-}" ] && [ ! -x "$target/release/duplex" ]; then
  echo "run.sh: building target/release/duplex" >&2
  (cd "$root" && cargo build --release -p duplex-cli)
fi

cd "$root"
# The tutorial's script connects to ws://localhost:8080, and the README's
# `duplex serve` may well be running there. As root (CI, these machines) the
# test runs in a network namespace of its own, whose loopback has every port
# free whatever runs on the host; elsewhere it needs 8080 free and says so.
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1; then
  if ! command -v ip >/dev/null 2>&1; then
    echo "run.sh: installing iproute2 (apt), to bring up the namespace's loopback" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq iproute2 >/dev/null
  fi
  exec unshare --net -- bash -c 'ip link set lo up && exec node "$1"' bash "$here/browser.test.mjs"
fi
exec node "$here/browser.test.mjs"
