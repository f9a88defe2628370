#!/usr/bin/env bash
# Installs ws (node) for the deflate echo benchmark's peer server, idempotently: `npm ci` from the
# committed package-lock.json, skipped when node_modules/.sockeye-stamp shows it was installed
# from the same package.json, lock and Node. Runs unattended (CI=true, no stdin).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

command -v node >/dev/null || { echo "setup.sh: node (>= 18) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup.sh: npm is required" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 18 ]; then
    echo "setup.sh: node >= 18 is required (found $(node --version))" >&2
    exit 1
fi
want="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)-$(node --version)"
if [ -f node_modules/.sockeye-stamp ] && [ "$(cat node_modules/.sockeye-stamp)" = "$want" ]; then
    echo "setup.sh: node_modules up to date" >&2
else
    echo "setup.sh: npm ci" >&2
    CI=true npm ci --no-audit --no-fund --loglevel=error </dev/null >&2
    echo "$want" > node_modules/.sockeye-stamp
fi
