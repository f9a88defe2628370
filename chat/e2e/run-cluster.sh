#!/usr/bin/env bash
# The scale-out end-to-end browser test: RabbitMQ and PostgreSQL (scripts/rabbitmq.sh,
# scripts/postgres.sh, the database reset so the run starts empty), then cluster.test.mjs,
# which starts two sockeye-chat nodes relaying to them and drives ann (node A) and bob (node B)
# in Debian's headless Chromium: a room made on A is listed on B, they talk both ways, bob
# reloads, RabbitMQ restarts mid-conversation (both pages must work again within 10 s of it
# accepting connections), node A stops (ann must leave B's member list). Screenshots, the
# nodes' logs and timings.json: chat/e2e/artifacts/cluster/.
#
#   bash chat/e2e/run-cluster.sh
#
# RabbitMQ and PostgreSQL are private to this test (the test restarts RabbitMQ, so it must not
# be one that other suites or benchmarks use): their bases default to
# /tmp/sockeye-{rabbitmq,postgres}-e2e-cluster-$user (E2E_RABBIT_BASE, E2E_PG_BASE override).
# What this script started it stops at the end, whatever happened (E2E_KEEP_SERVICES=1 keeps
# them); a RabbitMQ or PostgreSQL that was already running from those bases is left running.
set -euo pipefail
e2e="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$e2e/../.." && pwd)"
cd "$root"
start=$SECONDS
user="$(id -un)"

export RABBIT_BASE="${E2E_RABBIT_BASE:-/tmp/sockeye-rabbitmq-e2e-cluster-$user}"
export RABBIT_NODE="${E2E_RABBIT_NODE:-sockeye-e2e@localhost}"
export PG_BASE="${E2E_PG_BASE:-/tmp/sockeye-postgres-e2e-cluster-$user}"
rabbit="$root/scripts/rabbitmq.sh"
postgres="$root/scripts/postgres.sh"

bash "$e2e/setup.sh"

echo "e2e cluster: cargo build --release -p sockeye-chat"
cargo build --release -p sockeye-chat
bin="${CARGO_TARGET_DIR:-$root/target}/release/sockeye-chat"

artifacts="$e2e/artifacts/cluster"
rm -rf "$artifacts"
mkdir -p "$artifacts"

pg_running() {
  local pid
  pid=$(head -1 "$PG_BASE/data/postmaster.pid" 2>/dev/null) && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}
rabbit_was_running=
pg_was_running=
if bash "$rabbit" pid >/dev/null 2>&1; then rabbit_was_running=1; fi
if pg_running; then pg_was_running=1; fi

cleanup() {
  local rc=$?
  # The test stops its nodes; this is for a test that was killed or crashed.
  for pid_file in "$artifacts"/node-*.pid; do
    [ -s "$pid_file" ] || continue
    kill "$(cat "$pid_file")" 2>/dev/null || true
    rm -f "$pid_file"
  done
  if [ "${E2E_KEEP_SERVICES:-}" != 1 ]; then
    if [ -z "$rabbit_was_running" ]; then bash "$rabbit" stop || true; fi
    if [ -z "$pg_was_running" ]; then bash "$postgres" stop || true; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "e2e cluster: RabbitMQ ($RABBIT_BASE) and PostgreSQL ($PG_BASE)"
rabbit_env="$(bash "$rabbit" start)"
eval "$rabbit_env"
pg_env="$(bash "$postgres" start)"
eval "$pg_env"
bash "$postgres" reset # an empty database: no rooms from an earlier run
echo "e2e cluster: RabbitMQ STOMP on 127.0.0.1:$RABBIT_STOMP_PORT, PostgreSQL on 127.0.0.1:$PG_PORT," \
  "artifacts in ${artifacts#"$root"/}"

status=0
SOCKEYE_CHAT_BIN="$bin" E2E_ARTIFACTS="$artifacts" E2E_RABBIT_STOMP_PORT="$RABBIT_STOMP_PORT" \
  E2E_DATABASE_URL="$PG_URL" E2E_RABBITMQ_SH="$rabbit" NO_COLOR=1 \
  timeout --kill-after=10 420 node --test --test-reporter=spec "$e2e/cluster.test.mjs" || status=$?

if [ -s "$artifacts/timings.json" ]; then
  node -e '
    const t = require(process.argv[1]);
    const ms = (k) => (t[k] === undefined ? "-" : `${t[k]} ms`);
    console.log(`e2e cluster: room listed on B ${ms("roomListedOnB_ms")}; RabbitMQ down ${ms("brokerDown_ms")};` +
      ` recovery after it accepts ${ms("recovery_ms")} (ann->bob ${ms("recoveryAnnToBob_ms")}, bob->ann ${ms("recoveryBobToAnn_ms")});` +
      ` ann gone from B ${ms("annGoneAfterSigterm_ms")} after SIGTERM to node A`);
  ' "$artifacts/timings.json" || true
fi
echo "e2e cluster: $([ "$status" = 0 ] && echo PASSED || echo "FAILED (exit $status)") in $((SECONDS - start)) s;" \
  "artifacts: ${artifacts#"$root"/}"
exit "$status"
