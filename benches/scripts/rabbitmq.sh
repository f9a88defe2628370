#!/usr/bin/env bash
# A private RabbitMQ with its STOMP (61613) and Web-STOMP (15674, path /ws) plugins, for the
# fan-out comparison (benches/scripts/fanout.sh).
#
#   benches/scripts/rabbitmq.sh start     # installs if missing, starts, prints the pid of beam.smp
#   benches/scripts/rabbitmq.sh stop
#   benches/scripts/rabbitmq.sh pid       # the running node's pid (exit 1 if none)
#
# `start` installs Debian's rabbitmq-server with apt-get when it is missing (as root), enables
# the two plugins offline into a private enabled_plugins file, and starts the node in the
# background pinned to CPU $RABBIT_CPU (default 0) with taskset, its database, logs and
# Erlang cookie under $RABBIT_BASE (default /tmp/sockeye-rabbitmq), so the system's own
# /var/lib/rabbitmq is never touched. It waits (at most $RABBIT_WAIT s, default 90) until both
# ports accept connections. Starting a node that already runs only prints its pid. The user
# guest/guest may log in from loopback, RabbitMQ's default. With $RABBIT_AUTOGROUP_NICE set
# (as fanout.sh does), the node's scheduler autogroup (it runs in a session of its own) gets
# that nice value, the same priority as the load generator's.
set -euo pipefail

BASE=${RABBIT_BASE:-/tmp/sockeye-rabbitmq}
CPU=${RABBIT_CPU:-0}
WAIT=${RABBIT_WAIT:-90}
NODE=${RABBIT_NODE:-sockeyebench@localhost}
STOMP_PORT=61613
WEB_STOMP_PORT=15674
SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server
PLUGINS=/usr/lib/rabbitmq/bin/rabbitmq-plugins

rabbit_env() {
    export HOME=$BASE
    export RABBITMQ_NODENAME=$NODE
    export RABBITMQ_MNESIA_BASE=$BASE/mnesia
    export RABBITMQ_LOG_BASE=$BASE/log
    export RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/enabled_plugins
    export RABBITMQ_PID_FILE=$BASE/rabbit.pid
    export RABBITMQ_CONFIG_FILE=$BASE/rabbitmq.conf
    export RABBITMQ_CONF_ENV_FILE=$BASE/rabbitmq-env.conf
    export RABBITMQ_ADVANCED_CONFIG_FILE=$BASE/advanced.config
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# The pid of the running node, or nothing.
node_pid() {
    local pid
    [ -f "$BASE/rabbit.pid" ] || return 1
    pid=$(cat "$BASE/rabbit.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    grep -q beam "/proc/$pid/comm" 2>/dev/null || return 1
    echo "$pid"
}

install() {
    if [ -x "$SERVER" ]; then return 0; fi
    if [ "$(id -u)" != 0 ]; then
        echo "rabbitmq-server is not installed, and installing it needs root" >&2
        exit 1
    fi
    echo "installing rabbitmq-server (apt-get)..." >&2
    apt-get update -q >&2
    # A policy-rc.d answering 101 keeps the package from starting the system's own node.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod +x "$policy"
        made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >&2
    if [ -n "$made_policy" ]; then rm -f "$policy"; fi
}

start() {
    install
    rabbit_env
    if pid=$(node_pid); then
        echo "$pid"
        return 0
    fi
    for port in $STOMP_PORT $WEB_STOMP_PORT; do
        if port_open "$port"; then
            echo "port $port is already taken by another process" >&2
            exit 1
        fi
    done
    mkdir -p "$BASE/log" "$BASE/mnesia"
    # Loopback only; guest may log in from loopback (the default, stated here).
    cat > "$BASE/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:5672
stomp.listeners.tcp.1 = 127.0.0.1:$STOMP_PORT
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = $WEB_STOMP_PORT
loopback_users.guest = true
EOF
    : > "$BASE/rabbitmq-env.conf"
    echo "[]." > "$BASE/advanced.config"
    "$PLUGINS" enable --offline rabbitmq_stomp rabbitmq_web_stomp > "$BASE/plugins.log" 2>&1 || {
        cat "$BASE/plugins.log" >&2
        exit 1
    }
    setsid taskset -c "$CPU" "$SERVER" > "$BASE/server.out" 2>&1 < /dev/null &
    local deadline=$((SECONDS + WAIT))
    while :; do
        if pid=$(node_pid) && port_open $STOMP_PORT && port_open $WEB_STOMP_PORT; then
            break
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "RabbitMQ did not come up within $WAIT s; see $BASE/server.out and $BASE/log" >&2
            tail -20 "$BASE/server.out" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
    # Every thread of the node (and epmd, its child) stays on the CPU it was started on.
    taskset -a -p -c "$CPU" "$pid" > /dev/null
    if [ -n "${RABBIT_AUTOGROUP_NICE:-}" ] && [ -w "/proc/$pid/autogroup" ]; then
        echo "$RABBIT_AUTOGROUP_NICE" > "/proc/$pid/autogroup" || true
    fi
    echo "$pid"
}

stop() {
    rabbit_env
    local pid
    if ! pid=$(node_pid); then
        echo "no RabbitMQ node running from $BASE" >&2
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$BASE/rabbit.pid"
    # The node's port mapper daemon, started with the node.
    if command -v epmd > /dev/null; then epmd -kill > /dev/null 2>&1 || true; fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    pid) rabbit_env; node_pid ;;
    *)
        echo "usage: $0 start|stop|pid" >&2
        exit 2
        ;;
esac
