#!/usr/bin/env bash
# Interop tests of sockeye-chat with real STOMP clients:
#   @stomp/stompjs over WebSocket (node --test stompjs.test.mjs)
#   @stomp/stompjs over SockJS, sockjs-client on each node transport (sockjs_stompjs.test.mjs)
#   stomp.py over TCP, plus raw sockets (pytest test_stomp_py.py)
# Installs the clients (setup.sh), builds the release binary, starts one server on free
# loopback ports, runs both suites against it, stops it. Exits non-zero on any failure.
# Unattended (CI=true, no stdin). Reports and the server log go to chat/interop/.out/.
#
# With RELAY=rabbitmq the server runs in relay mode (--relay) against a private RabbitMQ
# (scripts/rabbitmq.sh, stopped again at the end if this script started it): the same
# suites then check the relay with real clients.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/.out"
t0="$(date +%s.%N)"
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)"; }

bash "$here/setup.sh"

cd "$root"
echo "run.sh: cargo build --release -p sockeye-chat"
cargo build --release -p sockeye-chat
bin="${CARGO_TARGET_DIR:-$root/target}/release/sockeye-chat"
[ -x "$bin" ] || { echo "run.sh: no binary at $bin" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out"

server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
relay_args=()
rabbit_started=""
if [ "${RELAY:-}" = rabbitmq ]; then
    if ! bash "$root/scripts/rabbitmq.sh" pid >/dev/null 2>&1; then rabbit_started=yes; fi
    eval "$(bash "$root/scripts/rabbitmq.sh" start)"
    relay_args=(--relay "stomp://guest:guest@127.0.0.1:$RABBIT_STOMP_PORT/")
    echo "run.sh: relay mode, RabbitMQ STOMP on port $RABBIT_STOMP_PORT"
elif [ -n "${RELAY:-}" ]; then
    echo "run.sh: RELAY=$RELAY: only RELAY=rabbitmq is known" >&2
    exit 2
fi
cleanup() {
    stop_server
    if [ -n "$rabbit_started" ] && [ -z "${RABBIT_KEEP:-}" ]; then
        bash "$root/scripts/rabbitmq.sh" stop || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# The engine binds with SO_REUSEPORT, so another sockeye-chat on the same port would bind too
# and the kernel would split our clients between the two: make sure every listener is ours.
only_ours() {
    command -v ss >/dev/null || return 0
    local others
    others="$(ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | grep -vx "pid=$server_pid" || true)"
    [ -z "$others" ]
}

# Free ports can be taken between the probe and the bind: try a few pairs.
started=""
for attempt in 1 2 3; do
    http_port="$(free_port)"
    stomp_port="$(free_port)"
    [ "$http_port" != "$stomp_port" ] || continue
    "$bin" --listen "127.0.0.1:$http_port" --stomp-listen "127.0.0.1:$stomp_port" \
        --data-dir off --heart-beat 1000,1000 "${relay_args[@]}" >"$out/server.log" 2>&1 </dev/null &
    server_pid=$!
    for _ in $(seq 100); do # at most 10 s
        kill -0 "$server_pid" 2>/dev/null || break
        if accepts "$http_port" && accepts "$stomp_port"; then
            if only_ours "$http_port" && only_ours "$stomp_port"; then started=yes; fi
            break
        fi
        sleep 0.1
    done
    [ -n "$started" ] && break
    echo "run.sh: the server did not come up alone on ports $http_port/$stomp_port (attempt $attempt):" >&2
    command -v ss >/dev/null && ss -ltnp "( sport = :$http_port or sport = :$stomp_port )" >&2 || true
    tail -n 20 "$out/server.log" >&2 || true
    stop_server
done
[ -n "$started" ] || { echo "run.sh: could not start sockeye-chat" >&2; exit 1; }
echo "run.sh: sockeye-chat (pid $server_pid) on http 127.0.0.1:$http_port, STOMP/TCP 127.0.0.1:$stomp_port"

export SOCKEYE_HTTP="http://127.0.0.1:$http_port"
export SOCKEYE_WS="ws://127.0.0.1:$http_port/ws"
export SOCKEYE_STOMP_HOST=127.0.0.1
export SOCKEYE_STOMP_PORT="$stomp_port"
export SOCKEYE_CHAT_BIN="$bin"
export SOCKEYE_HEART_BEAT=1000,1000
export SOCKEYE_RELAY="${RELAY:-}"

node_rc=0
echo
echo "run.sh: node --test chat/interop/stompjs.test.mjs chat/interop/sockjs_stompjs.test.mjs"
timeout -k 10 300 node --test --test-timeout=30000 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$out/node.tap" \
    chat/interop/stompjs.test.mjs chat/interop/sockjs_stompjs.test.mjs </dev/null || node_rc=$?

py_rc=0
echo
echo "run.sh: pytest chat/interop/test_stomp_py.py"
timeout -k 10 300 "$here/.venv/bin/python" -m pytest chat/interop/test_stomp_py.py \
    -v -p no:cacheprovider --timeout=60 --junitxml="$out/pytest.xml" </dev/null || py_rc=$?

server_rc=0
if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "run.sh: the server died during the tests" >&2
    server_rc=1
fi
stop_server
if [ "$node_rc$py_rc$server_rc" != "000" ]; then
    echo "run.sh: last lines of the server log ($out/server.log):"
    tail -n 40 "$out/server.log" || true
fi

# Counts from the reports; a runner that failed without reporting a failure counts as one.
read -r passed failed skipped < <(python3 - "$out/node.tap" "$out/pytest.xml" "$node_rc" "$py_rc" <<'PY'
import re, sys, xml.etree.ElementTree as ET
tap, junit, node_rc, py_rc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = f = s = 0
nf = 0
try:
    text = open(tap).read()
    get = lambda k: sum(int(n) for n in re.findall(rf"^# {k} (\d+)$", text, re.M))
    p += get("pass"); nf = get("fail") + get("cancelled"); s += get("skipped") + get("todo")
except OSError:
    pass
f += nf if nf or not node_rc else 1
pf = 0
try:
    root = ET.parse(junit).getroot()
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        n, fl, er, sk = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        p += n - fl - er - sk; pf += fl + er; s += sk
except (OSError, ET.ParseError):
    pass
f += pf if pf or not py_rc else 1
print(p, f, s)
PY
)
failed=$((failed + server_rc))
echo
echo "run.sh: wall time $(elapsed) s (node exit $node_rc, pytest exit $py_rc)"
echo "interop: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ] && [ "$server_rc" = 0 ]
