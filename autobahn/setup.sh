#!/usr/bin/env bash
# Creates autobahn/.venv (Python 2.7) with wstest from the pinned requirements.txt.
# Idempotent: does nothing when .venv/bin/wstest already works and was installed
# from the current requirements.txt. Needs no stdin; safe with CI=true.
#
# Python 2.7 is found as $AUTOBAHN_PYTHON2, else pyenv's newest 2.7.x
# (${PYENV_ROOT:-~/.pyenv}/versions/2.7.*), else python2.7 on PATH.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.venv"
REQS="$HERE/requirements.txt"
STAMP="$VENV/.requirements.sha256"
# Last virtualenv that is a single file with no deps and bundles py2 pip/setuptools.
VIRTUALENV_PIN="virtualenv==16.7.12"

log() { echo "autobahn/setup: $*"; }

# Two scripts running setup at once must not build the venv twice: lock this file.
exec 9<"${BASH_SOURCE[0]}"
if command -v flock >/dev/null; then flock 9; fi

want="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [[ -x "$VENV/bin/wstest" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] \
    && "$VENV/bin/wstest" --autobahnversion >/dev/null 2>&1; then
    log "wstest already installed in $VENV ($("$VENV/bin/wstest" --autobahnversion 2>&1 | tail -1))"
    exit 0
fi

find_python2() {
    if [[ -n "${AUTOBAHN_PYTHON2:-}" ]]; then
        echo "$AUTOBAHN_PYTHON2"
        return
    fi
    local root="${PYENV_ROOT:-}" p
    if [[ -z "$root" ]]; then
        root="$(pyenv root 2>/dev/null || echo "${HOME:-/root}/.pyenv")"
    fi
    # Newest 2.7.x first (version sort).
    local candidates=()
    mapfile -t candidates < <(printf '%s\n' "$root"/versions/2.7.*/bin/python2.7 | sort -rV)
    for p in "${candidates[@]}"; do
        if [[ -x "$p" ]]; then
            echo "$p"
            return
        fi
    done
    command -v python2.7 || true
}

PY2="$(find_python2)"
if [[ -z "$PY2" ]] || ! "$PY2" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
    log "error: no Python 2.7 found (set AUTOBAHN_PYTHON2, or install 2.7 with pyenv)" >&2
    exit 1
fi
log "using $PY2 ($("$PY2" --version 2>&1))"

start=$SECONDS
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PYTHONWARNINGS=ignore
tmp="$(mktemp -d)"
ok=0
cleanup() {
    rm -rf "$tmp"
    if [[ $ok -ne 1 ]]; then
        log "failed; removing the partial $VENV" >&2
        rm -rf "$VENV"
    fi
}
trap cleanup EXIT

if [[ -e "$VENV" ]]; then
    log "removing stale $VENV"
    rm -rf "$VENV"
fi

if ! "$PY2" -m pip --version >/dev/null 2>&1; then
    log "no pip for $PY2; bootstrapping it with ensurepip"
    "$PY2" -m ensurepip --default-pip
fi

# Install virtualenv into a throwaway directory, so the base interpreter is left as it is.
log "bootstrapping $VIRTUALENV_PIN"
"$PY2" -m pip install -q --target "$tmp/virtualenv" "$VIRTUALENV_PIN"
log "creating $VENV"
PYTHONPATH="$tmp/virtualenv" "$PY2" -m virtualenv -q --no-download "$VENV"

log "installing requirements.txt (builds a few sdists; takes a minute)"
"$VENV/bin/pip" install -q -r "$REQS"
"$VENV/bin/pip" check
"$VENV/bin/wstest" --autobahnversion >/dev/null
echo "$want" >"$STAMP"
ok=1
log "done in $((SECONDS - start))s: $("$VENV/bin/wstest" --autobahnversion 2>&1 | tr '\n' ' ')"
