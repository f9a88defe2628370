#!/usr/bin/env bash
# Runs the Autobahn *client* suite: starts wstest -m fuzzingserver, runs
# sockeye's autobahn_client example against it, and checks the report against
# expected-client.json.
#
# usage: autobahn/run-client.sh [--quick] [--update]
#   --quick    only cases 1.*, 2.*, 5.*, 7.* (fast local iteration; expected
#              cases outside them are not reported as missing)
#   --update   rewrite expected-client.json from this run
# environment:
#   AUTOBAHN_CASES=1.1.1,6.*   run only these cases (like --quick)
#   AUTOBAHN_PORT=N            port for the fuzzing server (default: a free one)
#   AUTOBAHN_TIMEOUT=S         bound for the client run (default 1800)
#   AUTOBAHN_CLIENT_CMD=CMD    run CMD instead of the autobahn_client example;
#                              "{url}" in it becomes ws://127.0.0.1:PORT
#   AUTOBAHN_VERBOSE=1         show the client's output instead of only logging it
# The client is expected to follow the fuzzingserver protocol: GET /getCaseCount,
# then /runCase?case=N&agent=A for N in 1..=count, then /updateReports?agent=A.
# This script requests /updateReports itself too, after the client exits.
# Set by run-client-tokio.sh to run the suite through another example (not for
# general use): AB_EXAMPLE (default autobahn_client), AB_FEATURES (cargo features
# for it), AB_SPEC (default fuzzingserver.json), AB_EXPECTED (default
# expected-client.json).
#   AB_SCHEME=wss, AB_TLS_KEY, AB_TLS_CERT: the fuzzing server speaks TLS with
#   this key and certificate (scripts/test-ca.sh makes them); with AB_FEATURES=tls
#   the example trusts the CA in SOCKEYE_TLS_CA. The script's own fallback
#   /updateReports request is plain TCP and only warns then.
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
            sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) ab_die "unknown argument $arg (try --help)" ;;
    esac
done
[[ -n "$cases" ]] && check_args+=(--subset)

example="${AB_EXAMPLE:-autobahn_client}"
features=()
[[ -n "${AB_FEATURES:-}" ]] && features=(--features "$AB_FEATURES")
spec_template="$AB_DIR/${AB_SPEC:-fuzzingserver.json}"
expected="$AB_DIR/${AB_EXPECTED:-expected-client.json}"

start=$SECONDS
bash "$AB_DIR/setup.sh"

cd "$AB_ROOT"
if [[ -n "${AUTOBAHN_CLIENT_CMD:-}" ]]; then
    ab_log "client command from AUTOBAHN_CLIENT_CMD; not building the $example example"
else
    # Built before the fuzzing server starts, so the build is not inside its lifetime.
    ab_log "building the $example example (release)"
    cargo build --release -p sockeye "${features[@]}" --example "$example"
fi
ab_log "building the checker"
cargo build -q -p sockeye-autobahn

ab_lock run-client
outdir="$AB_REPORTS/clients"
rm -rf "$outdir"
mkdir -p "$outdir"
fuzz_log="$AB_REPORTS/fuzzingserver.log"
client_log="$AB_REPORTS/client.log"
spec="$AB_REPORTS/fuzzingserver.run.json"

port="$(ab_pick_port)"
url="${AB_SCHEME:-ws}://127.0.0.1:$port"
if [[ -n "${AUTOBAHN_CLIENT_CMD:-}" ]]; then
    client_cmd="${AUTOBAHN_CLIENT_CMD//\{url\}/$url}"
else
    client_cmd="cargo run -q --release -p sockeye ${features[*]} --example $example -- $url"
fi

fuzz_pid=""
cleanup() {
    if [[ -n "$AB_JOB" ]]; then
        ab_stop "$AB_JOB"
    fi
    if [[ -n "$fuzz_pid" ]]; then
        ab_stop "$fuzz_pid"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ab_spec fuzzingserver "$spec_template" "$spec" "$url" "$outdir" "$cases"
ab_log "starting: wstest -m fuzzingserver -s $spec${cases:+ (cases $cases)} (log: $fuzz_log)"
# -u 0: no embedded web server (it would take port 8080).
"$AB_VENV/bin/wstest" -m fuzzingserver -u 0 -s "$spec" >"$fuzz_log" 2>&1 &
fuzz_pid=$!
ab_wait_port "$port" "$fuzz_pid" "wstest -m fuzzingserver"
ab_log "fuzzing server listening on $url (pid $fuzz_pid)"

ab_log "running: $client_cmd (log: $client_log)"
suite_start=$SECONDS
client_status=0
ab_run_logged "$client_log" timeout "$AB_TIMEOUT" bash -c "exec $client_cmd" || client_status=$?
ab_log "the fuzzing server ran $(grep -c '^Running test case' "$fuzz_log" || true) cases in $((SECONDS - suite_start))s"

if ! kill -0 "$fuzz_pid" 2>/dev/null; then
    ab_show_log "$fuzz_log"
    ab_die "the fuzzing server exited during the run"
fi
# Ask the fuzzing server to (re)write the reports, in case the client did not:
# a WebSocket handshake on /updateReports; the server writes them, sends a
# close frame and drops the connection.
# shellcheck disable=SC2016 # expanded by the inner bash
if ! timeout 120 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf "GET /updateReports?agent=sockeye HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n" "$1" >&3
    cat <&3 >/dev/null 2>&1 || true  # the server resets the connection when done
' _ "$port"; then
    ab_log "warning: /updateReports request failed or timed out"
fi
cleanup
fuzz_pid=""

if ((client_status != 0)); then
    ab_show_log "$client_log"
    if ((client_status == 124)); then
        ab_die "the client did not finish within ${AB_TIMEOUT}s"
    fi
    ab_die "the client failed (status $client_status)"
fi
[[ -f "$outdir/index.json" ]] || ab_die "the fuzzing server wrote no $outdir/index.json"

status=0
cargo run -q -p sockeye-autobahn -- "$outdir/index.json" "$expected" \
    "${check_args[@]}" || status=$?
ab_log "wall time $((SECONDS - start))s; HTML report: $outdir/index.html"
exit "$status"
