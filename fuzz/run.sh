#!/usr/bin/env bash
# Runs one fuzz target: fuzz/run.sh TARGET SECONDS [extra libFuzzer flags...]
#
# Builds the target with cargo-fuzz on nightly (installing cargo-fuzz if missing), fuzzes it for
# SECONDS with the dictionary fuzz/ws.dict, growing fuzz/corpus/TARGET (only its seed-* files are
# committed). Prints libFuzzer's final figures. On a crash (or leak, or timeout) prints the
# reproducer's path, base64 and hex and exits non-zero; reproduce with
#   cargo +nightly fuzz run --fuzz-dir fuzz TARGET PATH
# or commit it as fuzz/regressions/TARGET-NAME. Environment: FUZZ_SANITIZER (address, none, ...),
# SOCKEYE_FUZZ_LOOSE_MEMORY (see fuzz/regressions/README.md).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

if [ $# -lt 2 ]; then
    echo "usage: $0 TARGET SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
target="$1"
seconds="$2"
shift 2

# AddressSanitizer by default (cargo-fuzz's default): the engine has no unsafe code, but its
# dependencies' SIMD paths (simdutf8, httparse) do. FUZZ_SANITIZER=none runs about twice as fast.
sanitizer="${FUZZ_SANITIZER:-address}"

ensure_tools
corpus="$FUZZ_DIR/corpus/$target"
mkdir -p "$corpus" "$LOG_DIR"
log="$LOG_DIR/$target.log"

cd "$REPO_DIR"
status=0
cargo +nightly fuzz run --fuzz-dir "$FUZZ_DIR" --sanitizer "$sanitizer" "$target" "$corpus" -- \
    -max_total_time="$seconds" -dict="$FUZZ_DIR/ws.dict" -timeout=20 -print_final_stats=1 \
    "$@" >"$log" 2>&1 || status=$?

read -r execs cov corp <<<"$(final_stats "$log")"
echo "$target: execs=$execs cov=$cov corpus=$corp"

if [ "$status" -ne 0 ]; then
    reproducer="$(grep -aoE '(Test unit|artifact_prefix.*Test unit) written to [^ ]+' "$log" \
        | tail -n 1 | sed -E 's/.* written to //')" || true
    echo "$target: FAILED (exit $status); log: $log" >&2
    grep -aE 'panicked at|^==[0-9]+==ERROR|SUMMARY|Assertion|assertion' "$log" | head -n 20 >&2 || true
    if [ -n "$reproducer" ] && [ -f "$reproducer" ]; then
        echo "reproducer: $reproducer" >&2
        echo "base64: $(base64 -w0 "$reproducer")" >&2
        echo "hex: $(od -An -v -tx1 "$reproducer" | tr -d ' \n')" >&2
        echo "replay: cargo +nightly fuzz run --fuzz-dir fuzz $target $reproducer" >&2
    else
        tail -n 30 "$log" >&2
    fi
    exit 1
fi
