#!/usr/bin/env bash
# Interop of sockeye-chat over TLS with real clients: node `ws`, @stomp/stompjs over wss://,
# node https and node:tls (tls.test.mjs); Python `websockets` with an ssl context and stomp.py
# over STOMP with TLS (test_tls_py.py); curl --cacert for the API. Makes a throwaway CA and
# server certificate (scripts/test-ca.sh, into .out/ca), starts one server with --tls-cert,
# --tls-key and --stomp-tls on free loopback ports, runs the clients, stops it. Then checks
# that SIGHUP reloads the certificate (a new one from the same CA, by serial) while a wss
# session stays open. Exits non-zero on any failure. Unattended (CI=true, no stdin).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$here/.out/tls"

bash "$here/setup.sh"
cd "$root"
if [ -n "${SOCKEYE_CHAT_BIN:-}" ]; then
    bin="$SOCKEYE_CHAT_BIN"  # a binary built already (a debug one will do)
else
    echo "tls.sh: cargo build --release -p sockeye-chat"
    cargo build --release -p sockeye-chat
    bin="${CARGO_TARGET_DIR:-$root/target}/release/sockeye-chat"
fi

rm -rf "$out"
mkdir -p "$out"
bash "$root/scripts/test-ca.sh" "$out/ca" >/dev/null
ca="$out/ca/ca.pem"

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
trap stop_server EXIT
trap 'exit 130' INT TERM
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
accepts() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

started=""
for attempt in 1 2 3; do
    http_port="$(free_port)"
    stomp_port="$(free_port)"
    [ "$http_port" != "$stomp_port" ] || continue
    "$bin" --listen "127.0.0.1:$http_port" --stomp-listen "127.0.0.1:$stomp_port" \
        --data-dir off --tls-cert "$out/ca/server.pem" --tls-key "$out/ca/server.key" --stomp-tls \
        >"$out/server.log" 2>&1 </dev/null &
    server_pid=$!
    for _ in $(seq 100); do
        kill -0 "$server_pid" 2>/dev/null || break
        if accepts "$http_port" && accepts "$stomp_port"; then started=yes; break; fi
        sleep 0.1
    done
    [ -n "$started" ] && break
    echo "tls.sh: the server did not come up on $http_port/$stomp_port (attempt $attempt)" >&2
    tail -n 20 "$out/server.log" >&2 || true
    stop_server
done
[ -n "$started" ] || { echo "tls.sh: could not start sockeye-chat" >&2; exit 1; }
echo "tls.sh: sockeye-chat (pid $server_pid) on https 127.0.0.1:$http_port, STOMP/TLS 127.0.0.1:$stomp_port"

export SOCKEYE_CA="$ca"
export SOCKEYE_HTTPS="https://localhost:$http_port"
export SOCKEYE_WSS="wss://localhost:$http_port/ws"
export SOCKEYE_STOMP_PORT="$stomp_port"

passed=0
failed=0
count() { if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "tls.sh: FAILED: $*" >&2; fi; }

echo; echo "tls.sh: curl --cacert"
curl_ok() { curl -sS --max-time 5 --cacert "$ca" "$SOCKEYE_HTTPS/api/rooms" | python3 -c 'import json,sys; json.load(sys.stdin)'; }
curl_refused() { ! curl -sS --max-time 5 "$SOCKEYE_HTTPS/api/rooms" >/dev/null 2>&1; }
plain_refused() { ! curl -sS --max-time 5 "http://127.0.0.1:$http_port/api/rooms" >/dev/null 2>&1; }
count curl_ok
count curl_refused
count plain_refused

echo; echo "tls.sh: node --test chat/interop/tls.test.mjs"
node_rc=0
timeout -k 10 120 node --test --test-timeout=30000 --test-reporter=spec \
    --test-reporter-destination=stdout --test-reporter=tap --test-reporter-destination="$out/node.tap" \
    chat/interop/tls.test.mjs </dev/null || node_rc=$?
node_pass=$(grep -c '^ok ' "$out/node.tap" || true)
node_fail=$(grep -c '^not ok ' "$out/node.tap" || true)
passed=$((passed + node_pass)); failed=$((failed + node_fail))
[ "$node_rc" = 0 ] || [ "$node_fail" != 0 ] || failed=$((failed + 1))

echo; echo "tls.sh: pytest chat/interop/test_tls_py.py"
py_rc=0
timeout -k 10 120 "$here/.venv/bin/python" -m pytest chat/interop/test_tls_py.py -v \
    -p no:cacheprovider --timeout=60 --junitxml="$out/pytest.xml" </dev/null || py_rc=$?
read -r py_pass py_fail < <(python3 - "$out/pytest.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    r = ET.parse(sys.argv[1]).getroot()
    s = r if r.tag == "testsuite" else next(r.iter("testsuite"))
    n, f, e, k = (int(s.get(x, 0)) for x in ("tests", "failures", "errors", "skipped"))
    print(n - f - e - k, f + e)
except Exception:
    print(0, 0)
PY
)
passed=$((passed + py_pass)); failed=$((failed + py_fail))
[ "$py_rc" = 0 ] || [ "$py_fail" != 0 ] || failed=$((failed + 1))

echo; echo "tls.sh: SIGHUP reload with a wss session open"
serial() { echo | timeout 5 openssl s_client -connect "127.0.0.1:$http_port" -servername localhost -CAfile "$ca" 2>/dev/null | openssl x509 -noout -serial; }
reload_ok() {
    local before after
    before="$(serial)"
    # A session that stays open across the reload (python websockets, answers a RECEIPT after).
    "$here/.venv/bin/python" - <<'PY' &
import os, ssl, time
from websockets.sync.client import connect
ctx = ssl.create_default_context(cafile=os.environ["SOCKEYE_CA"])
with connect(os.environ["SOCKEYE_WSS"], ssl=ctx, subprotocols=["v12.stomp"], open_timeout=5) as ws:
    ws.send("CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
    assert ws.recv(timeout=5).startswith("CONNECTED")
    time.sleep(2)  # the reload happens meanwhile
    ws.send("SUBSCRIBE\nid:0\ndestination:/topic/x\nreceipt:r\n\n\0")
    assert ws.recv(timeout=5).startswith("RECEIPT"), "the open session did not survive"
PY
    local session=$!
    sleep 0.5
    rm -f "$out/ca/server.san"  # makes test-ca.sh issue a new server certificate
    bash "$root/scripts/test-ca.sh" "$out/ca" >/dev/null
    kill -HUP "$server_pid"
    sleep 0.5
    after="$(serial)"
    wait "$session" || { echo "tls.sh: the wss session broke across SIGHUP" >&2; return 1; }
    echo "tls.sh: serial before $before, after $after"
    [ -n "$before" ] && [ "$before" != "$after" ] && grep -q "TLS certificate reloaded" "$out/server.log"
}
count reload_ok

if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "tls.sh: the server died during the tests" >&2
    failed=$((failed + 1))
fi
stop_server
if [ "$failed" != 0 ]; then tail -n 40 "$out/server.log" || true; fi
echo
echo "interop-tls: $passed passed, $failed failed"
[ "$failed" = 0 ]
