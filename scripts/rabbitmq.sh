#!/usr/bin/env bash
# A private RabbitMQ node with the STOMP and Web-STOMP plugins, for tests, CI and benchmarks.
# It owns the node's lifecycle (install, start, stop, restart) and its ports; nothing else.
#
#   scripts/rabbitmq.sh start       # installs if missing, starts, prints KEY=VALUE lines (below)
#   scripts/rabbitmq.sh stop        # stops the node and its epmd; fine if none runs
#   scripts/rabbitmq.sh restart     # stop, then start on the same ports and the same data
#   scripts/rabbitmq.sh env         # the KEY=VALUE lines of the running node (exit 1 if none)
#   scripts/rabbitmq.sh pid         # the pid of the node's beam.smp (exit 1 if none)
#   scripts/rabbitmq.sh ctl ARGS... # rabbitmqctl against this node, e.g. `ctl list_consumers`
#
#   set -a; eval "$(scripts/rabbitmq.sh start)"; set +a   # then $RABBIT_STOMP_PORT etc.
#
# Printed by start, restart and env, one per line, values shell-quoted (printf %q):
#   RABBIT_STOMP_PORT, RABBIT_WEB_STOMP_PORT, RABBIT_WEB_STOMP_URL (ws://127.0.0.1:PORT/ws),
#   RABBIT_AMQP_PORT, RABBIT_DIST_PORT, RABBIT_EPMD_PORT, RABBIT_NODE, RABBIT_BASE, RABBIT_PID.
# Login guest/guest (loopback only, RabbitMQ's default), vhost "/". STOMP heart-beats allowed.
#
# Everything lives under $RABBIT_BASE (default /tmp/sockeye-rabbitmq-$user): database, logs
# (log/), the Erlang cookie (.erlang.cookie, HOME of the node and of ctl), enabled_plugins,
# the config and ports.env. The node is $RABBIT_NODE (default sockeye@localhost; remembered
# in ports.env with the ports, so later calls need not repeat it) registered
# with a private epmd on its own port, so it never meets a system RabbitMQ or another
# project's node; every listener binds 127.0.0.1 only. The ports come from RABBIT_STOMP_PORT,
# RABBIT_WEB_STOMP_PORT, RABBIT_AMQP_PORT, RABBIT_DIST_PORT and RABBIT_EPMD_PORT when set
# (RABBIT_AMQP_PORT=off disables the AMQP listener); otherwise free ones are picked at the first
# start and remembered in ports.env, so `restart` (and a later `start`) reuses them. A plain
# `start` picks new ones for remembered ports that another process has taken meanwhile.
#
# start waits at most $RABBIT_WAIT s (default 90) until the STOMP and Web-STOMP ports accept
# and `rabbitmqctl await_startup` answers; on failure it prints the log's tail, kills the
# half-started node and exits 1. start on a running node only prints its env. Calls are
# serialised with flock on $RABBIT_BASE/lock. Optional: $RABBIT_CPU pins the node with taskset
# (every thread), $RABBIT_AUTOGROUP_NICE sets the nice value of its scheduler autogroup.
#
# What `ctl` lists (RabbitMQ 3.10.8; tab-separated after a "Listing ..." line and a header row;
# `ctl -s ...` drops both, for counting lines). Checked with real clients, see
# scripts/RABBITMQ-STOMP.md section 12:
#   ctl list_stomp_connections   columns session_id, conn_name: one line per STOMP-over-TCP
#       connection, e.g. `"session-DF6j..."<TAB>127.0.0.1:42168 -> 127.0.0.1:22736`.
#       Web-STOMP connections are NOT listed. Other columns by name: auth_login conn_name
#       connection_state implicit_connect peer_host peer_port protocol session_id version ...
#       (`user`, `vhost` are refused), e.g. `ctl list_stomp_connections auth_login peer_port`.
#   ctl list_consumers           columns queue_name channel_pid consumer_tag ack_required
#       prefetch_count active arguments: one line per SUBSCRIBE (TCP and Web-STOMP alike):
#       /topic/x (and /exchange/amq.topic/x) -> queue "stomp-subscription-<22 base64url
#                        chars>" (auto-delete, bound to amq.topic with key x)
#       /queue/x      -> queue "x"
#       consumer_tag is "T_<subscription id>"; ack_required false for ack:auto, true for
#       client and client-individual; prefetch_count is the connection's last prefetch-count.
set -euo pipefail

USER_NAME=$(id -un)
BASE=${RABBIT_BASE:-/tmp/sockeye-rabbitmq-$USER_NAME}
# The node name: $RABBIT_NODE, else the one this base was started with, else sockeye@localhost.
NODE=${RABBIT_NODE:-$(sed -n 's/^RABBIT_NODE=//p' "$BASE/ports.env" 2> /dev/null || true)}
NODE=${NODE:-sockeye@localhost}
WAIT=${RABBIT_WAIT:-90}
LIB=/usr/lib/rabbitmq/bin
SERVER=$LIB/rabbitmq-server
PLUGINS=$LIB/rabbitmq-plugins
CTL=$LIB/rabbitmqctl
PORT_NAMES="STOMP WEB_STOMP AMQP DIST EPMD"

die() {
    echo "rabbitmq.sh: $*" >&2
    exit 1
}

# The environment the node and its CLI tools read; nothing of the system's is used.
rabbit_env() {
    export HOME=$BASE
    export LANG=C.UTF-8 LC_ALL=C.UTF-8
    export RABBITMQ_NODENAME=$NODE
    export RABBITMQ_MNESIA_BASE=$BASE/mnesia
    export RABBITMQ_LOG_BASE=$BASE/log
    export RABBITMQ_ENABLED_PLUGINS_FILE=$BASE/enabled_plugins
    export RABBITMQ_PID_FILE=$BASE/rabbit.pid
    export RABBITMQ_CONFIG_FILE=$BASE/rabbitmq.conf
    export RABBITMQ_CONF_ENV_FILE=$BASE/rabbitmq-env.conf
    export RABBITMQ_ADVANCED_CONFIG_FILE=$BASE/advanced.config
    if [ -n "${DIST_PORT:-}" ]; then
        export RABBITMQ_DIST_PORT=$DIST_PORT
        export ERL_EPMD_PORT=$EPMD_PORT ERL_EPMD_ADDRESS=127.0.0.1
    fi
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

port_free() {
    ! port_open "$1" && ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# A free port in [$1, $2) that is not among the ports already chosen ($CHOSEN).
pick_port() {
    local lo=$1 hi=$2 port
    for _ in $(seq 200); do
        port=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo)))
        case " $CHOSEN " in *" $port "*) continue ;; esac
        if port_free "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free port found in [$lo, $hi)"
}

# Sets STOMP_PORT ... EPMD_PORT from the environment, else ports.env, else a free port.
# With $1 = strict (restart), a remembered port that is taken is an error, not re-picked.
choose_ports() {
    local strict=${1:-} name var remembered value
    CHOSEN=
    for name in $PORT_NAMES; do
        var=RABBIT_${name}_PORT
        value=${!var:-}
        remembered=
        if [ -z "$value" ] && [ -f "$BASE/ports.env" ]; then
            remembered=$(sed -n "s/^$var=//p" "$BASE/ports.env")
            value=$remembered
        fi
        if [ "$value" = off ]; then
            [ "$name" = AMQP ] || die "$var=off: only the AMQP listener can be disabled"
        elif [ -n "$value" ]; then
            if ! port_free "$value"; then
                if [ -n "$remembered" ] && [ -z "$strict" ]; then
                    echo "rabbitmq.sh: remembered $var=$value is taken; picking another" >&2
                    value=
                else
                    die "$var=$value: port is taken by another process"
                fi
            fi
        fi
        if [ -z "$value" ]; then
            # The CLI tools use the distribution port + 10000..10010: keep that below 65536.
            value=$(pick_port 20000 32000)
        fi
        printf -v "${name}_PORT" %s "$value"
        CHOSEN="$CHOSEN $value"
    done
}

load_ports() {
    [ -f "$BASE/ports.env" ] || return 1
    local name var
    for name in $PORT_NAMES; do
        var=RABBIT_${name}_PORT
        printf -v "${name}_PORT" %s "$(sed -n "s/^$var=//p" "$BASE/ports.env")"
    done
}

# The pid of the running node, or nothing (exit 1).
node_pid() {
    local pid
    [ -f "$BASE/rabbit.pid" ] || return 1
    pid=$(cat "$BASE/rabbit.pid" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    grep -q beam "/proc/$pid/comm" 2>/dev/null || return 1
    echo "$pid"
}

print_env() {
    local pid=$1 name var
    for name in $PORT_NAMES; do
        var=${name}_PORT
        printf 'RABBIT_%s_PORT=%q\n' "$name" "${!var}"
    done
    printf 'RABBIT_WEB_STOMP_URL=%q\n' "ws://127.0.0.1:$WEB_STOMP_PORT/ws"
    printf 'RABBIT_NODE=%q\nRABBIT_BASE=%q\nRABBIT_PID=%q\n' "$NODE" "$BASE" "$pid"
}

install() {
    if [ -x "$SERVER" ]; then return 0; fi
    [ "$(id -u)" = 0 ] || die "rabbitmq-server is not installed, and installing it needs root"
    echo "rabbitmq.sh: installing rabbitmq-server (apt-get)..." >&2
    local log policy=/usr/sbin/policy-rc.d made_policy=
    log=$(mktemp)
    # A policy-rc.d answering 101 keeps the package from starting the system's own node.
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod +x "$policy"
        made_policy=1
    fi
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends rabbitmq-server; } > "$log" 2>&1; then
        [ -z "$made_policy" ] || rm -f "$policy"
        tail -20 "$log" >&2
        die "apt-get install rabbitmq-server failed (log: $log)"
    fi
    [ -z "$made_policy" ] || rm -f "$policy"
    rm -f "$log"
}

write_config() {
    local amqp
    if [ "$AMQP_PORT" = off ]; then amqp="listeners.tcp = none"; else
        amqp="listeners.tcp.1 = 127.0.0.1:$AMQP_PORT"
    fi
    cat > "$BASE/rabbitmq.conf" <<EOF
$amqp
stomp.listeners.tcp.1 = 127.0.0.1:$STOMP_PORT
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = $WEB_STOMP_PORT
loopback_users.guest = true
EOF
    # The distribution listener on loopback too.
    echo 'SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"' \
        > "$BASE/rabbitmq-env.conf"
    echo "[]." > "$BASE/advanced.config"
    local name
    {
        for name in $PORT_NAMES; do
            var=${name}_PORT
            echo "RABBIT_${name}_PORT=${!var}"
        done
        echo "RABBIT_NODE=$NODE"
    } > "$BASE/ports.env"
    if [ ! -s "$BASE/.erlang.cookie" ]; then
        (umask 077 && head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F \
            > "$BASE/.erlang.cookie")
    fi
    chmod 400 "$BASE/.erlang.cookie"
}

log_tail() {
    echo "--- $BASE/server.out" >&2
    tail -15 "$BASE/server.out" >&2 2>/dev/null || true
    local log
    for log in "$BASE"/log/*.log; do
        [ -f "$log" ] || continue
        echo "--- $log" >&2
        tail -25 "$log" >&2
    done
}

# Waits for the node to be gone (at most $WAIT s), then SIGKILL; then its private epmd.
kill_node() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + WAIT))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        echo "rabbitmq.sh: node $pid still alive after $WAIT s; SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$BASE/rabbit.pid"
}

# Kills a half-started node: the session that setsid gave its launcher (pgid = launcher pid).
kill_launch() {
    local launcher=$1 pid
    if pid=$(node_pid); then kill_node "$pid"; fi
    kill -TERM -- "-$launcher" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 -- "-$launcher" 2>/dev/null || return 0
        sleep 0.2
    done
    kill -KILL -- "-$launcher" 2>/dev/null || true
}

kill_epmd() {
    [ -n "${EPMD_PORT:-}" ] || return 0
    local epmd
    epmd=$(command -v epmd) || return 0
    ERL_EPMD_PORT=$EPMD_PORT "$epmd" -kill > /dev/null 2>&1 || true
}

do_start() {
    local strict=${1:-} pid
    if load_ports && pid=$(node_pid); then
        local name var want have
        for name in $PORT_NAMES; do
            var=RABBIT_${name}_PORT
            want=${!var:-}
            have=${name}_PORT
            if [ -n "$want" ] && [ "$want" != "${!have}" ]; then
                die "node already running with $var=${!have} (asked for $want); stop it first"
            fi
        done
        print_env "$pid"
        return 0
    fi
    install
    mkdir -p "$BASE/log" "$BASE/mnesia"
    choose_ports "$strict"
    write_config
    rabbit_env
    "$PLUGINS" enable --offline rabbitmq_stomp rabbitmq_web_stomp > "$BASE/plugins.log" 2>&1 || {
        cat "$BASE/plugins.log" >&2
        die "rabbitmq-plugins enable failed"
    }
    rm -f "$BASE/rabbit.pid"
    local pin=()
    if [ -n "${RABBIT_CPU:-}" ]; then pin=(taskset -c "$RABBIT_CPU"); fi
    # 9>&-: the node must not inherit (and so hold) the lock.
    (cd "$BASE" && exec setsid "${pin[@]}" "$SERVER" > "$BASE/server.out" 2>&1 < /dev/null 9>&-) &
    local launcher=$! deadline=$((SECONDS + WAIT))
    while :; do
        if pid=$(node_pid) && port_open "$STOMP_PORT" && port_open "$WEB_STOMP_PORT"; then
            break
        fi
        if ! kill -0 "$launcher" 2>/dev/null; then
            log_tail
            die "RabbitMQ exited while starting (logs in $BASE)"
        fi
        if [ $SECONDS -ge "$deadline" ]; then
            log_tail
            kill_launch "$launcher"
            kill_epmd
            die "RabbitMQ did not come up within $WAIT s (logs in $BASE)"
        fi
        sleep 0.3
    done
    local left=$((deadline - SECONDS))
    if ! "$CTL" -n "$NODE" await_startup --timeout $((left > 1 ? left : 1)) \
        > "$BASE/await.out" 2>&1; then
        cat "$BASE/await.out" >&2
        log_tail
        kill_launch "$launcher"
        kill_epmd
        die "rabbitmqctl await_startup failed (logs in $BASE)"
    fi
    if [ -n "${RABBIT_CPU:-}" ]; then taskset -a -p -c "$RABBIT_CPU" "$pid" > /dev/null; fi
    if [ -n "${RABBIT_AUTOGROUP_NICE:-}" ] && [ -w "/proc/$pid/autogroup" ]; then
        echo "$RABBIT_AUTOGROUP_NICE" > "/proc/$pid/autogroup" || true
    fi
    print_env "$pid"
}

do_stop() {
    local pid
    load_ports || true
    if pid=$(node_pid); then
        kill_node "$pid"
    else
        echo "rabbitmq.sh: no RabbitMQ node running from $BASE" >&2
    fi
    kill_epmd
}

with_lock() {
    mkdir -p "$BASE"
    exec 9> "$BASE/lock"
    flock -w "$((WAIT * 2 + 30))" 9 || die "another rabbitmq.sh holds $BASE/lock"
    "$@"
}

cmd=${1:-}
[ $# -eq 0 ] || shift
case $cmd in
    start) with_lock do_start ;;
    stop) with_lock do_stop ;;
    restart) with_lock eval 'do_stop; do_start strict' ;;
    pid) node_pid ;;
    env)
        if load_ports && pid=$(node_pid); then print_env "$pid"; else
            die "no RabbitMQ node running from $BASE"
        fi
        ;;
    ctl)
        load_ports || die "no RabbitMQ node has been started from $BASE"
        rabbit_env
        exec "$CTL" -n "$NODE" "$@"
        ;;
    *)
        echo "usage: $0 start|stop|restart|env|pid|ctl ARGS..." >&2
        exit 2
        ;;
esac
