#!/usr/bin/env bash
# Browser end-to-end test of `duplex serve` in headless Chromium.
# Idempotent and self-installing: Debian's chromium (apt) and playwright-core (npm ci).
# Never downloads a browser of its own (no `playwright install`).
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
exec node "$here/browser.test.mjs"
