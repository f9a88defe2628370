#!/usr/bin/env bash
# The fan-out comparison's RabbitMQ (benches/scripts/fanout.sh): scripts/rabbitmq.sh with the
# benchmark's fixed settings, STOMP on 61613 and Web-STOMP on 15674 (path /ws), pinned.
#
#   benches/scripts/rabbitmq.sh start     # installs if missing, starts, prints the pid of beam.smp
#   benches/scripts/rabbitmq.sh stop
#   benches/scripts/rabbitmq.sh pid       # the running node's pid (exit 1 if none)
#
# The node (sockeyebench@localhost) lives under $RABBIT_BASE (default /tmp/sockeye-rabbitmq)
# and is pinned to CPU $RABBIT_CPU (default 0); $RABBIT_AUTOGROUP_NICE and $RABBIT_WAIT are
# passed through. Its AMQP, distribution and epmd ports are free ones that scripts/rabbitmq.sh
# picks. Starting a node that already runs only prints its pid.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export RABBIT_BASE=${RABBIT_BASE:-/tmp/sockeye-rabbitmq}
export RABBIT_NODE=${RABBIT_NODE:-sockeyebench@localhost}
export RABBIT_CPU=${RABBIT_CPU:-0}
export RABBIT_STOMP_PORT=61613 RABBIT_WEB_STOMP_PORT=15674

case ${1:-} in
    start)
        "$ROOT/scripts/rabbitmq.sh" start > /dev/null
        exec "$ROOT/scripts/rabbitmq.sh" pid
        ;;
    stop | pid) exec "$ROOT/scripts/rabbitmq.sh" "$1" ;;
    *)
        echo "usage: $0 start|stop|pid" >&2
        exit 2
        ;;
esac
