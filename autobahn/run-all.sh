#!/usr/bin/env bash
# Runs the four Autobahn suites, two at a time: the server suites against the
# mio echo example and against tokio_echo together, then the client suites of
# the blocking client and of the tokio adapter's client together.
# wstest is single-threaded Python 2 and does most of the work (compressing
# the 12.*/13.* cases), so on a two-core machine a pair takes about as long as
# one suite. Each suite keeps its own reports folder (reports/, reports-tokio/)
# and its own expectations; the output of each is printed when the pair ends.
#
# usage: autobahn/run-all.sh
# Exit status: 0 when all four pass; otherwise 1, naming the failed suites.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
logs="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The virtualenv once, before the suites race for it.
bash "$here/setup.sh"

failed=()
pair() {
    local suite status
    pids=()
    for suite in "$@"; do
        bash "$here/$suite" >"$logs/$suite.out" 2>&1 &
        pids+=($!)
    done
    local i=0
    for suite in "$@"; do
        status=0
        wait "${pids[$i]}" || status=$?
        echo "=== autobahn/$suite (exit $status)"
        cat "$logs/$suite.out"
        if ((status != 0)); then failed+=("$suite"); fi
        i=$((i + 1))
    done
    pids=()
}

start=$SECONDS
pair run-server.sh run-server-tokio.sh
pair run-client.sh run-client-tokio.sh
echo "autobahn: four suites in $((SECONDS - start)) s"
if ((${#failed[@]} > 0)); then
    echo "autobahn: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "autobahn: all four suites PASS"
