# Shared by fuzz/run.sh and fuzz/run-all.sh (sourced, not run).

FUZZ_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$FUZZ_DIR")"
LOG_DIR="$FUZZ_DIR/target/logs"

# cargo-fuzz and the nightly toolchain, installed only when missing.
ensure_tools() {
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        echo "fuzz: installing the nightly toolchain" >&2
        rustup toolchain install nightly --profile minimal >&2
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "fuzz: installing cargo-fuzz (takes a few minutes)" >&2
        cargo install cargo-fuzz --locked >&2
    fi
}

fuzz_targets() {
    (cd "$REPO_DIR" && cargo +nightly fuzz list --fuzz-dir "$FUZZ_DIR")
}

# Prints "execs cov corpus" from libFuzzer's last status line in log file $1
# ("#123456 DONE cov: 567 ft: 890 corp: 89/2345b ..."); "- - -" when there is none.
final_stats() {
    local line
    line="$(grep -aE '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$1" | tail -n 1)"
    if [ -z "$line" ]; then
        echo "- - -"
        return
    fi
    local execs cov corp
    execs="$(sed -E 's/^#([0-9]+).*/\1/' <<<"$line")"
    cov="$(grep -oE 'cov: [0-9]+' <<<"$line" | awk '{print $2}')"
    corp="$(grep -oE 'corp: [0-9]+' <<<"$line" | awk '{print $2}')"
    echo "${execs:--} ${cov:--} ${corp:--}"
}
