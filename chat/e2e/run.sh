#!/usr/bin/env bash
# The chat's end-to-end browser test: installs what it needs (setup.sh), builds the release
# server, and runs chat.test.mjs, which starts the server on a free port with a fresh data
# directory (STOMP over TCP off), drives two browser contexts in Debian's headless Chromium,
# restarts the server, and stops it; then runs it again with WebSocket taken away from the
# pages (the SockJS fallback). Screenshots and the server's log: chat/e2e/artifacts/ (and
# artifacts/no-websocket/).
#
#   bash chat/e2e/run.sh
#   E2E_UPDATE_DOCS=1 bash chat/e2e/run.sh   # also copies the room screenshot to docs/room.png
#   E2E_MODES="tls" bash chat/e2e/run.sh      # the scenario over https/wss (scripts/test-ca.sh's
#                                             # certificate; Chromium ignores its errors)
#   SOCKEYE_CHAT_BIN=target/debug/sockeye-chat ...   # a binary built already, no release build
set -euo pipefail
e2e="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$e2e/../.." && pwd)"
cd "$root"
start=$SECONDS

bash "$e2e/setup.sh"

if [ -n "${SOCKEYE_CHAT_BIN:-}" ]; then
  bin="$SOCKEYE_CHAT_BIN"
else
  echo "e2e: cargo build --release -p sockeye-chat"
  cargo build --release -p sockeye-chat
  bin="${CARGO_TARGET_DIR:-$root/target}/release/sockeye-chat"
fi

artifacts="$e2e/artifacts"
rm -rf "$artifacts"
mkdir -p "$artifacts"
data_dirs=()
pid_files=()

cleanup() {
  # The test stops its server; this is for a test that was killed or crashed.
  for pid_file in "${pid_files[@]}"; do
    if [ -s "$pid_file" ]; then
      kill "$(cat "$pid_file")" 2>/dev/null || true
      rm -f "$pid_file"
    fi
  done
  for dir in "${data_dirs[@]}"; do rm -rf "$dir"; done
}
trap cleanup EXIT

# The scenario runs twice: with WebSocket, and with WebSocket taken away from the pages (the
# chat then works over its SockJS fallback); E2E_MODES may add "tls" (over https and wss). Each
# run: a fresh server, port and data directory.
status=0
for mode in ${E2E_MODES:-websocket no-websocket}; do
  out="$artifacts"
  no_ws=0
  tls_dir=""
  if [ "$mode" = no-websocket ]; then out="$artifacts/no-websocket"; no_ws=1; fi
  if [ "$mode" = tls ]; then
    out="$artifacts/tls"
    tls_dir="$artifacts/tls-ca"
    bash "$root/scripts/test-ca.sh" "$tls_dir" >/dev/null
  fi
  mkdir -p "$out"
  data_dir="$(mktemp -d "${TMPDIR:-/tmp}/sockeye-e2e.XXXXXX")"
  data_dirs+=("$data_dir")
  pid_files+=("$out/server.pid")
  port="$(node -e "const s = require('net').createServer(); s.listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })")"
  echo "e2e ($mode): server on 127.0.0.1:$port, data in $data_dir, artifacts in ${out#"$root"/}"
  ca_env=()
  [ -z "$tls_dir" ] || ca_env=(NODE_EXTRA_CA_CERTS="$tls_dir/ca.pem")
  env "${ca_env[@]}" SOCKEYE_CHAT_BIN="$bin" E2E_PORT="$port" E2E_DATA_DIR="$data_dir" E2E_ARTIFACTS="$out" \
    E2E_NO_WEBSOCKET="$no_ws" E2E_TLS_DIR="$tls_dir" \
    timeout --kill-after=10 300 node --test --test-reporter=spec "$e2e/chat.test.mjs" || status=$?
  [ "$status" = 0 ] || break
done

if [ "$status" = 0 ] && [ "${E2E_UPDATE_DOCS:-}" = 1 ]; then
  cp "$artifacts/room-bob-reloaded.png" "$root/docs/room.png"
  echo "e2e: docs/room.png updated"
fi
echo "e2e: $([ "$status" = 0 ] && echo PASSED || echo "FAILED (exit $status)") in $((SECONDS - start)) s; artifacts: ${artifacts#"$root"/}"
exit "$status"
