#!/usr/bin/env bash
# promtool (Debian's prometheus package) for checking sockeye-chat's /metrics; it owns only
# that install. Idempotent: installs with apt-get when promtool is missing, then prints its path.
#
#   bash scripts/promtool.sh           # install if needed; prints /usr/bin/promtool
#   bash scripts/promtool.sh check < metrics.txt   # promtool check metrics (exit 1 on problems)
set -euo pipefail

die() { echo "promtool.sh: $*" >&2; exit 1; }

install() {
    command -v promtool > /dev/null && return 0
    [ "$(id -u)" = 0 ] || die "promtool is not installed, and installing it needs root"
    echo "promtool.sh: installing prometheus (apt-get) for promtool..." >&2
    local log
    log=$(mktemp)
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends prometheus; } > "$log" 2>&1; then
        tail -20 "$log" >&2
        die "apt-get install prometheus failed (log: $log)"
    fi
    rm -f "$log"
    command -v promtool > /dev/null || die "prometheus installed but no promtool on PATH"
}

install
case "${1:-}" in
    "") command -v promtool ;;
    check) promtool check metrics ;;
    *) die "usage: promtool.sh [check]" ;;
esac
