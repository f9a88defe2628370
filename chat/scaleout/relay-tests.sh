#!/usr/bin/env bash
# The relay against a private RabbitMQ (chat/tests/relay_rabbitmq.rs, #[ignore]d in a plain
# `cargo test`): the relay's scenarios with RabbitMQ as the external broker, its restart
# mid-way included, and the multiplexing count (1,000 WebSocket clients on 10 rooms).
#
#   bash chat/scaleout/relay-tests.sh [TEST-NAME-FILTER...]
#
# scripts/rabbitmq.sh starts the node (installing rabbitmq-server with apt-get if it is
# missing). The tests run one at a time: they stop and start the broker and count what it
# holds. A node this script started is stopped at the end (RABBIT_KEEP=1 keeps it).
set -euo pipefail
cd "$(dirname "$0")/../.."
rabbit=scripts/rabbitmq.sh
was_running=
if bash "$rabbit" pid > /dev/null 2>&1; then
    was_running=1
fi
stop() {
    if [ -z "$was_running" ] && [ -z "${RABBIT_KEEP:-}" ]; then
        bash "$rabbit" stop || true
    fi
}
trap stop EXIT

env=$(bash "$rabbit" start)
eval "$env"
echo "relay-tests.sh: RabbitMQ STOMP on port $RABBIT_STOMP_PORT" >&2
# 1,000 clients and their server side in one process: well under the 20,000 open files.
ulimit -n 20000 2> /dev/null || true
SOCKEYE_TEST_RABBIT_STOMP_PORT="$RABBIT_STOMP_PORT" \
    cargo test -p sockeye-chat --test relay_rabbitmq -- --ignored --test-threads=1 --nocapture "$@"
