#!/usr/bin/env bash
# The chat's end-to-end browser test: installs what it needs (setup.sh), builds the release
# server, and runs chat.test.mjs, which starts the server on a free port with a fresh data
# directory (STOMP over TCP off), drives two browser contexts in Debian's headless Chromium,
# restarts the server, and stops it. Screenshots and the server's log: chat/e2e/artifacts/.
#
#   bash chat/e2e/run.sh
#   E2E_UPDATE_DOCS=1 bash chat/e2e/run.sh   # also copies the room screenshot to docs/room.png
set -euo pipefail
e2e="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$e2e/../.." && pwd)"
cd "$root"
start=$SECONDS

bash "$e2e/setup.sh"

echo "e2e: cargo build --release -p sockeye-chat"
cargo build --release -p sockeye-chat
bin="${CARGO_TARGET_DIR:-$root/target}/release/sockeye-chat"

artifacts="$e2e/artifacts"
rm -rf "$artifacts"
mkdir -p "$artifacts"
data_dir="$(mktemp -d "${TMPDIR:-/tmp}/sockeye-e2e.XXXXXX")"
port="$(node -e "const s = require('net').createServer(); s.listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })")"

cleanup() {
  # The test stops its server; this is for a test that was killed or crashed.
  if [ -s "$artifacts/server.pid" ]; then
    kill "$(cat "$artifacts/server.pid")" 2>/dev/null || true
    rm -f "$artifacts/server.pid"
  fi
  rm -rf "$data_dir"
}
trap cleanup EXIT

echo "e2e: server on 127.0.0.1:$port, data in $data_dir, artifacts in ${artifacts#"$root"/}"
status=0
SOCKEYE_CHAT_BIN="$bin" E2E_PORT="$port" E2E_DATA_DIR="$data_dir" E2E_ARTIFACTS="$artifacts" \
  timeout --kill-after=10 300 node --test --test-reporter=spec "$e2e/chat.test.mjs" || status=$?

if [ "$status" = 0 ] && [ "${E2E_UPDATE_DOCS:-}" = 1 ]; then
  cp "$artifacts/room-bob-reloaded.png" "$root/docs/room.png"
  echo "e2e: docs/room.png updated"
fi
echo "e2e: $([ "$status" = 0 ] && echo PASSED || echo "FAILED (exit $status)") in $((SECONDS - start)) s; artifacts: ${artifacts#"$root"/}"
exit "$status"
