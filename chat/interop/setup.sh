#!/usr/bin/env bash
# Installs the interop tests' clients, idempotently:
#   node_modules/  `npm ci` from the committed package-lock.json (@stomp/stompjs, ws)
#   .venv/         a Python venv with requirements.txt (stomp.py, pytest, pytest-timeout)
# Each is skipped when a stamp shows it was installed from the same lock/requirements by the
# same Node/Python. Runs unattended (CI=true, no stdin).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# --- Node: @stomp/stompjs and ws --------------------------------------------------------------
command -v node >/dev/null || { echo "setup.sh: node (>= 20) is required" >&2; exit 1; }
command -v npm >/dev/null || { echo "setup.sh: npm is required" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "setup.sh: node >= 20 is required (found $(node --version))" >&2
    exit 1
fi
want="$(hash_of package.json package-lock.json)-$(node --version)"
if [ -f node_modules/.sockeye-stamp ] && [ "$(cat node_modules/.sockeye-stamp)" = "$want" ]; then
    echo "setup.sh: node_modules up to date"
else
    echo "setup.sh: npm ci"
    npm ci --no-audit --no-fund --loglevel=error </dev/null
    echo "$want" > node_modules/.sockeye-stamp
fi

# --- Python: stomp.py and pytest --------------------------------------------------------------
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "setup.sh: $python is required" >&2; exit 1; }
want="$(hash_of requirements.txt)-$("$python" -c 'import sys; print(sys.version.split()[0])')"
if [ -x .venv/bin/python ] && [ -f .venv/.sockeye-stamp ] && [ "$(cat .venv/.sockeye-stamp)" = "$want" ]; then
    echo "setup.sh: .venv up to date"
else
    echo "setup.sh: python venv with requirements.txt"
    rm -rf .venv
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-input \
        -r requirements.txt </dev/null
    echo "$want" > .venv/.sockeye-stamp
fi
