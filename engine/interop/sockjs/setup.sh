#!/usr/bin/env bash
# Installs sockjs-client for the SockJS interop tests, idempotently: `npm ci` into
# node_modules/ from the committed package-lock.json, skipped when a stamp shows it was done
# from the same package.json and lock with the same Node. Runs unattended (CI=true, no stdin).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

command -v node >/dev/null || { echo "setup.sh: node (>= 20) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup.sh: npm is required" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "setup.sh: node >= 20 is required (found $(node --version))" >&2
    exit 1
fi
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)-$(node --version)"
if [ -f node_modules/.sockeye-stamp ] && [ "$(cat node_modules/.sockeye-stamp)" = "$want" ]; then
    echo "setup.sh: node_modules up to date"
else
    echo "setup.sh: npm ci"
    npm ci --no-audit --no-fund --loglevel=error </dev/null
    echo "$want" > node_modules/.sockeye-stamp
fi
