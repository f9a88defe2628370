#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each: fuzz/run-all.sh SECONDS [extra libFuzzer flags...]
#
# Prints per target the executions, coverage (cov:) and corpus size from libFuzzer's final
# status line, and exits non-zero if any target failed (run.sh prints its reproducer).
set -uo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ $# -lt 1 ]; then
    echo "usage: $0 SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
seconds="$1"
shift

ensure_tools
start=$(date +%s)
(cd "$REPO_DIR" && cargo +nightly fuzz build --fuzz-dir "$FUZZ_DIR" \
    --sanitizer "${FUZZ_SANITIZER:-address}") || exit 1
echo "build: $(($(date +%s) - start)) s"

failed=()
rows=()
for target in $(fuzz_targets); do
    if "$FUZZ_DIR/run.sh" "$target" "$seconds" "$@"; then
        result=ok
    else
        result=FAILED
        failed+=("$target")
    fi
    read -r execs cov corp <<<"$(final_stats "$LOG_DIR/$target.log")"
    rows+=("$(printf '%-20s %12s %8s %8s  %s' "$target" "$execs" "$cov" "$corp" "$result")")
done

printf '%-20s %12s %8s %8s  %s\n' target execs cov corpus result
printf '%s\n' "${rows[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]}" >&2
    exit 1
fi
