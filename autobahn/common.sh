# Helpers shared by run-server.sh and run-client.sh. Sourced, not run.
# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source this

AB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
AB_ROOT="$(cd "$AB_DIR/.." && pwd)"
AB_VENV="$AB_DIR/.venv"
# Each family of suites writes its own reports folder (the tokio wrappers set
# AB_REPORTS_DIR=reports-tokio), so the mio and tokio suites can run at once.
AB_REPORTS="$AB_DIR/${AB_REPORTS_DIR:-reports}"
AB_TARGET="${CARGO_TARGET_DIR:-$AB_ROOT/target}"
# Upper bound for one whole wstest run (the full suite takes a few minutes).
AB_TIMEOUT="${AUTOBAHN_TIMEOUT:-1800}"
# Upper bound for a server to start accepting connections.
AB_START_TIMEOUT="${AUTOBAHN_START_TIMEOUT:-30}"
AB_QUICK_CASES="1.*,2.*,5.*,7.*"

ab_log() { echo "autobahn: $*"; }
ab_die() {
    echo "autobahn: error: $*" >&2
    exit 1
}

# Prints a free TCP port on 127.0.0.1: $AUTOBAHN_PORT if set, else one the
# kernel picks (a fixed default like 9001 collides with other work on the host).
ab_pick_port() {
    if [[ -n "${AUTOBAHN_PORT:-}" ]]; then
        echo "$AUTOBAHN_PORT"
        return
    fi
    "$AB_VENV/bin/python" -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
'
}

# ab_wait_port PORT PID NAME: waits (at most $AB_START_TIMEOUT s) until
# 127.0.0.1:PORT accepts a TCP connection; fails at once if PID exits.
ab_wait_port() {
    local port=$1 pid=$2 name=$3 deadline=$((SECONDS + AB_START_TIMEOUT))
    while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            ab_die "$name exited before listening on port $port"
        fi
        if ((SECONDS >= deadline)); then
            ab_die "$name did not listen on port $port within ${AB_START_TIMEOUT}s"
        fi
        sleep 0.1
    done
}

# ab_stop PID: ends a process this script started: SIGTERM, then SIGKILL
# after 5 s.
ab_stop() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ab_spec MODE TEMPLATE OUT URL OUTDIR CASES: writes a wstest spec from a
# committed template. MODE is fuzzingclient (sets servers[].url) or
# fuzzingserver (sets url). CASES is a comma-separated list, or empty to keep
# the template's. With AB_TLS_KEY and AB_TLS_CERT (PEM files) a fuzzingserver
# spec gets them as "key" and "cert": wstest then serves wss:// URLs.
ab_spec() {
    "$AB_VENV/bin/python" - "$@" <<'EOF'
import json, sys
mode, template, out, url, outdir, cases = sys.argv[1:7]
with open(template) as f:
    spec = json.load(f)
if mode == "fuzzingclient":
    for server in spec["servers"]:
        server["url"] = url
else:
    spec["url"] = url
    import os
    if os.environ.get("AB_TLS_KEY") and os.environ.get("AB_TLS_CERT"):
        spec["key"] = os.environ["AB_TLS_KEY"]
        spec["cert"] = os.environ["AB_TLS_CERT"]
spec["outdir"] = outdir
if cases:
    spec["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
with open(out, "w") as f:
    json.dump(spec, f, indent=2, sort_keys=True)
    f.write("\n")
EOF
}

# ab_show_log FILE: the end of a log, for when something went wrong.
ab_show_log() {
    [[ -s "$1" ]] || return 0
    echo "---- last lines of $1 ----" >&2
    tail -n 30 "$1" >&2
    echo "----" >&2
}

# ab_run_logged LOG CMD...: runs CMD in the background with its output in LOG
# (and shown live with AUTOBAHN_VERBOSE=1), waits for it and returns its status.
# Running it in the background keeps the script's signal traps responsive;
# the pid is in AB_JOB meanwhile, for the cleanup trap to stop it.
AB_JOB=""
ab_run_logged() {
    local log=$1 status=0 tail_pid=""
    shift
    "$@" >"$log" 2>&1 &
    AB_JOB=$!
    if [[ "${AUTOBAHN_VERBOSE:-}" == 1 ]]; then
        tail -n +1 -f --pid="$AB_JOB" "$log" &
        tail_pid=$!
    fi
    wait "$AB_JOB" || status=$?
    AB_JOB=""
    if [[ -n "$tail_pid" ]]; then
        wait "$tail_pid" 2>/dev/null || true
    fi
    return "$status"
}

# ab_lock NAME: one run of a suite at a time in this work tree (they share
# reports/); waits for a running one, at most $AB_TIMEOUT s. Held until exit.
ab_lock() {
    mkdir -p "$AB_REPORTS"
    exec 8>"$AB_REPORTS/.$1.lock"
    if ! flock -n 8; then
        ab_log "another $1 is running in this work tree; waiting for it"
        flock -w "$AB_TIMEOUT" 8 || ab_die "gave up waiting for the other $1"
    fi
}
