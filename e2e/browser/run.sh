#!/usr/bin/env bash
# Browser end-to-end test of `duplex serve` in headless Chromium, after the
# browser client's own checks (crates/duplex-hub/js: a tsc type check of duplex.d.ts and
# unit tests against a fake server).
# Idempotent and self-installing: Debian's chromium and redis-server (apt),
# playwright-core and typescript (npm ci, pinned by the package-lock.json files).
# Never downloads a browser of its own (no `playwright install`). As root it runs in
# a network namespace of its own, so a `duplex serve` on the host's port 8080 is no
# obstacle.
#   DUPLEX_BIN=/path/to/server  test another binary (default target/release/duplex)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
# The resume test runs `duplex serve --redis` on a redis-server of its own.
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "run.sh: installing ${missing[*]} (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# npm_ci DIR PACKAGE: node_modules of DIR is stale when it was not installed from
# the current package-lock.json.
npm_ci() {
  local dir="$1" stamp="$1/node_modules/.duplex-lock-stamp"
  if [ ! -d "$dir/node_modules/$2" ] || ! cmp -s "$dir/package-lock.json" "$stamp"; then
    echo "run.sh: npm ci in $dir" >&2
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$dir/package-lock.json" "$stamp"
  fi
}
npm_ci "$here" playwright-core
client="$root/crates/duplex-hub/js"
npm_ci "$client" typescript

echo "run.sh: crates/duplex-hub/js: tsc type check of duplex.d.ts" >&2
(cd "$client" && node node_modules/typescript/bin/tsc -p test/tsconfig.json)
echo "run.sh: crates/duplex-hub/js: unit tests" >&2
(cd "$client" && node --test test/)

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
