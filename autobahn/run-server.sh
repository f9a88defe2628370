#!/usr/bin/env bash
# Runs the Autobahn *server* suite (wstest -m fuzzingclient) against sockeye's
# echo example and checks the report against expected-server.json.
#
# usage: autobahn/run-server.sh [--quick] [--update]
#   --quick    only cases 1.*, 2.*, 5.*, 7.* (fast local iteration; expected
#              cases outside them are not reported as missing)
#   --update   rewrite expected-server.json from this run
# environment:
#   AUTOBAHN_CASES=1.1.1,6.*   run only these cases (like --quick)
#   AUTOBAHN_PORT=N            port for the echo server (default: a free one)
#   AUTOBAHN_TIMEOUT=S         bound for the wstest run (default 1800)
#   AUTOBAHN_SERVER_CMD=CMD    run CMD instead of the echo example; "{addr}" in
#                              it becomes 127.0.0.1:PORT (used to test the harness)
#   AUTOBAHN_VERBOSE=1         show wstest's output instead of only logging it
# Set by run-server-tokio.sh to run the suite against another example (not for
# general use): AB_EXAMPLE (default echo), AB_FEATURES (cargo features for it),
# AB_SPEC (default fuzzingclient.json), AB_EXPECTED (default expected-server.json).
#   AB_SCHEME=wss              wstest connects over TLS (it does not check the certificate);
#                              with AB_FEATURES=tls and SOCKEYE_TLS_CERT / SOCKEYE_TLS_KEY for
#                              the echo example (scripts/test-ca.sh makes a pair)
# Exit status: the checker's (0 = every case OK/INFORMATIONAL and no drift).
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cases="${AUTOBAHN_CASES:-}"
check_args=()
for arg in "$@"; do
    case "$arg" in
        --quick) cases="$AB_QUICK_CASES" ;;
        --update) check_args+=(--update) ;;
        -h | --help)
            sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) ab_die "unknown argument $arg (try --help)" ;;
    esac
done
[[ -n "$cases" ]] && check_args+=(--subset)

example="${AB_EXAMPLE:-echo}"
features=()
[[ -n "${AB_FEATURES:-}" ]] && features=(--features "$AB_FEATURES")
spec_template="$AB_DIR/${AB_SPEC:-fuzzingclient.json}"
expected="$AB_DIR/${AB_EXPECTED:-expected-server.json}"

start=$SECONDS
bash "$AB_DIR/setup.sh"

cd "$AB_ROOT"
if [[ -n "${AUTOBAHN_SERVER_CMD:-}" ]]; then
    ab_log "server command from AUTOBAHN_SERVER_CMD; not building the $example example"
else
    ab_log "building the $example example (release)"
    cargo build --release -p sockeye "${features[@]}" --example "$example"
fi
ab_log "building the checker"
cargo build -q -p sockeye-autobahn

ab_lock run-server
outdir="$AB_REPORTS/servers"
rm -rf "$outdir"
mkdir -p "$outdir"
server_log="$AB_REPORTS/server.log"
wstest_log="$AB_REPORTS/fuzzingclient.log"
spec="$AB_REPORTS/fuzzingclient.run.json"

port="$(ab_pick_port)"
addr="127.0.0.1:$port"
if [[ -n "${AUTOBAHN_SERVER_CMD:-}" ]]; then
    server_cmd="${AUTOBAHN_SERVER_CMD//\{addr\}/$addr}"
else
    server_cmd="$AB_TARGET/release/examples/$example $addr"
fi

server_pid=""
cleanup() {
    if [[ -n "$AB_JOB" ]]; then
        ab_stop "$AB_JOB"
    fi
    if [[ -n "$server_pid" ]]; then
        ab_stop "$server_pid"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ab_log "starting: $server_cmd (log: $server_log)"
bash -c "exec $server_cmd" >"$server_log" 2>&1 &
server_pid=$!
ab_wait_port "$port" "$server_pid" "the server"
ab_log "server listening on $addr (pid $server_pid)"

ab_spec fuzzingclient "$spec_template" "$spec" "${AB_SCHEME:-ws}://$addr" "$outdir" "$cases"
ab_log "running wstest -m fuzzingclient -s $spec${cases:+ (cases $cases)} (log: $wstest_log)"
suite_start=$SECONDS
wstest_status=0
ab_run_logged "$wstest_log" timeout "$AB_TIMEOUT" "$AB_VENV/bin/wstest" -m fuzzingclient -s "$spec" \
    || wstest_status=$?
ab_log "wstest ran $(grep -c '^Running test case' "$wstest_log" || true) cases in $((SECONDS - suite_start))s"

if ! kill -0 "$server_pid" 2>/dev/null; then
    server_status=0
    wait "$server_pid" || server_status=$?
    server_pid=""
    ab_show_log "$server_log"
    ab_die "the server exited during the run (status $server_status)"
fi
cleanup
server_pid=""

if ((wstest_status != 0)); then
    ab_show_log "$wstest_log"
    if ((wstest_status == 124)); then
        ab_die "wstest did not finish within ${AB_TIMEOUT}s"
    fi
    ab_die "wstest failed (status $wstest_status)"
fi
[[ -f "$outdir/index.json" ]] || ab_die "wstest wrote no $outdir/index.json"

status=0
cargo run -q -p sockeye-autobahn -- "$outdir/index.json" "$expected" \
    --agent sockeye "${check_args[@]}" || status=$?
ab_log "wall time $((SECONDS - start))s; HTML report: $outdir/index.html"
exit "$status"
