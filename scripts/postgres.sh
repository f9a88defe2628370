#!/usr/bin/env bash
# A private PostgreSQL cluster for tests, CI and benchmarks; it owns the cluster's lifecycle
# (initdb, start, stop), its port, and the `sockeye` database and role; nothing else.
#
#   scripts/postgres.sh start        # initdb once, start, ensure role and database, print env
#   scripts/postgres.sh stop         # fast shutdown, waits until gone; fine if none runs
#   scripts/postgres.sh url          # the PG_URL of this cluster (exit 1 if never started)
#   scripts/postgres.sh psql ARGS... # psql as the superuser into the sockeye database
#   scripts/postgres.sh reset        # drop and recreate the sockeye database (it must run)
#
#   eval "$(scripts/postgres.sh start)"   # PG_URL=postgres://sockeye:sockeye@127.0.0.1:PORT/sockeye
#
# start prints KEY=VALUE lines: PG_URL, PG_PORT, PG_HOST (127.0.0.1), PG_USER, PG_PASSWORD,
# PG_DATABASE, PG_SOCKET_DIR, PG_BASE. The cluster lives in $PG_BASE (default
# /tmp/sockeye-postgres-$user): data/, run/ (the unix socket, mode 0700), server.log, port.
# It listens on 127.0.0.1 only, on $PG_PORT when set, else a free port picked at the first
# start and remembered in $PG_BASE/port. TCP logins need a password (scram-sha-256); the
# socket lets the superuser `postgres` in without one (trust, only in the private run/ dir).
# The role and database come from $PG_DB_USER / $PG_DB_PASSWORD / $PG_DB_NAME (default
# sockeye/sockeye/sockeye). Run as root, the server runs as the user `postgres` (the Debian
# package's; $PG_RUN_AS overrides) and $PG_BASE is chowned to it. The binaries are those of
# the newest /usr/lib/postgresql/*/bin ($PG_BIN overrides); apt-get installs postgresql if
# none is there. For speed the cluster runs with fsync, synchronous_commit and
# full_page_writes off (a crash may lose it: it is a scratch cluster); PG_DURABLE=1 keeps the
# defaults. Waits are bounded by $PG_WAIT s (default 60); a failure prints the log's tail.
# start on a running cluster only ensures the role and database and prints the env.
set -euo pipefail

USER_NAME=$(id -un)
BASE=${PG_BASE:-/tmp/sockeye-postgres-$USER_NAME}
WAIT=${PG_WAIT:-60}
DB_USER=${PG_DB_USER:-sockeye}
DB_PASSWORD=${PG_DB_PASSWORD:-sockeye}
DB_NAME=${PG_DB_NAME:-sockeye}
DATA=$BASE/data
RUN=$BASE/run
LOG=$BASE/server.log
SUPERUSER=postgres

die() {
    echo "postgres.sh: $*" >&2
    exit 1
}

find_bin() {
    if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return 0; fi
    local dir
    dir=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V |
        tail -1)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] || return 1
    echo "$dir"
}

install() {
    if BIN=$(find_bin); then return 0; fi
    [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed, and installing it needs root"
    echo "postgres.sh: installing postgresql (apt-get)..." >&2
    local log
    log=$(mktemp)
    if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends postgresql postgresql-client; } > "$log" 2>&1; then
        tail -20 "$log" >&2
        die "apt-get install postgresql failed (log: $log)"
    fi
    rm -f "$log"
    BIN=$(find_bin) || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
}

# Runs a command as the cluster's owner: $PG_RUN_AS (default postgres) when root, else as is.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u "${PG_RUN_AS:-postgres}" -- "$@"
    else
        "$@"
    fi
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null &&
        ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

choose_port() {
    if [ -n "${PG_PORT:-}" ]; then
        PORT=$PG_PORT
    elif [ -s "$BASE/port" ]; then
        PORT=$(cat "$BASE/port")
    else
        local p
        for _ in $(seq 200); do
            p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
            if port_free "$p"; then PORT=$p; break; fi
        done
        [ -n "${PORT:-}" ] || die "no free port found"
    fi
    port_free "$PORT" || die "port $PORT is taken by another process (PG_PORT=... picks another)"
    echo "$PORT" > "$BASE/port"
}

load_port() {
    [ -s "$BASE/port" ] || return 1
    PORT=$(cat "$BASE/port")
}

running() {
    [ -f "$DATA/PG_VERSION" ] && BIN=${BIN:-$(find_bin)} &&
        as_owner "$BIN/pg_ctl" -D "$DATA" status > /dev/null 2>&1
}

log_tail() {
    echo "--- $LOG" >&2
    tail -25 "$LOG" >&2 2>/dev/null || true
}

url() {
    echo "postgres://$DB_USER:$DB_PASSWORD@127.0.0.1:$PORT/$DB_NAME"
}

print_env() {
    printf 'PG_URL=%q\nPG_PORT=%q\nPG_HOST=127.0.0.1\n' "$(url)" "$PORT"
    printf 'PG_USER=%q\nPG_PASSWORD=%q\nPG_DATABASE=%q\n' "$DB_USER" "$DB_PASSWORD" "$DB_NAME"
    printf 'PG_SOCKET_DIR=%q\nPG_BASE=%q\n' "$RUN" "$BASE"
}

# psql as the superuser over the private socket; ARGS follow.
super_psql() {
    "$BIN/psql" -X -v ON_ERROR_STOP=1 -h "$RUN" -p "$PORT" -U "$SUPERUSER" "$@"
}

sql_literal() {
    printf "'%s'" "${1//\'/\'\'}"
}

ensure_database() {
    local exists
    exists=$(super_psql -d postgres -tAc \
        "SELECT 1 FROM pg_roles WHERE rolname = $(sql_literal "$DB_USER")")
    if [ "$exists" != 1 ]; then
        super_psql -q -d postgres -c "CREATE ROLE \"$DB_USER\" LOGIN PASSWORD $(sql_literal "$DB_PASSWORD")"
    else
        super_psql -q -d postgres -c "ALTER ROLE \"$DB_USER\" LOGIN PASSWORD $(sql_literal "$DB_PASSWORD")"
    fi
    exists=$(super_psql -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = $(sql_literal "$DB_NAME")")
    if [ "$exists" != 1 ]; then
        super_psql -q -d postgres -c "CREATE DATABASE \"$DB_NAME\" OWNER \"$DB_USER\""
    fi
}

init_cluster() {
    [ -f "$DATA/PG_VERSION" ] && return 0
    rm -rf "$DATA"
    if ! as_owner "$BIN/initdb" -D "$DATA" -U "$SUPERUSER" -E UTF8 --no-locale \
        --auth-local=trust --auth-host=scram-sha-256 > "$BASE/initdb.log" 2>&1; then
        cat "$BASE/initdb.log" >&2
        die "initdb failed"
    fi
    cat > "$DATA/pg_hba.conf" <<'EOF'
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  scram-sha-256
EOF
}

write_config() {
    local durability=
    if [ -z "${PG_DURABLE:-}" ]; then
        durability="fsync = off
synchronous_commit = off
full_page_writes = off"
    fi
    # postgresql.auto.conf is read last and wins over postgresql.conf.
    as_owner tee "$DATA/postgresql.auto.conf" > /dev/null <<EOF
# Written by scripts/postgres.sh at each start.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$RUN'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'
$durability
EOF
}

do_start() {
    install
    mkdir -p "$BASE"
    if [ "$(id -u)" = 0 ]; then
        id "${PG_RUN_AS:-postgres}" > /dev/null 2>&1 ||
            die "user ${PG_RUN_AS:-postgres} does not exist (PG_RUN_AS=... names another)"
        chown "${PG_RUN_AS:-postgres}:" "$BASE"
    fi
    if running; then
        load_port || die "cluster runs but $BASE/port is missing"
        ensure_database
        print_env
        return 0
    fi
    choose_port
    init_cluster
    as_owner mkdir -p "$RUN"
    chmod 700 "$RUN"
    write_config
    # 9>&-: the server must not inherit (and so hold) the lock.
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$WAIT" start > /dev/null 2>&1 9>&-; then
        log_tail
        as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w -t 10 stop > /dev/null 2>&1 || true
        die "PostgreSQL did not start within $WAIT s (log: $LOG)"
    fi
    local deadline=$((SECONDS + WAIT))
    until "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; do
        if [ $SECONDS -ge $deadline ]; then
            log_tail
            die "pg_isready still fails after $WAIT s"
        fi
        sleep 0.2
    done
    ensure_database
    print_env
}

do_stop() {
    BIN=$(find_bin) || { echo "postgres.sh: PostgreSQL is not installed" >&2; return 0; }
    if ! running; then
        echo "postgres.sh: no PostgreSQL running from $BASE" >&2
        return 0
    fi
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t "$WAIT" stop > /dev/null 2>&1; then
        echo "postgres.sh: fast shutdown took over $WAIT s; immediate" >&2
        as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w -t "$WAIT" stop > /dev/null ||
            die "PostgreSQL would not stop"
    fi
}

need_running() {
    BIN=$(find_bin) || die "PostgreSQL is not installed"
    if ! load_port || ! running; then
        die "no PostgreSQL running from $BASE (scripts/postgres.sh start)"
    fi
}

do_reset() {
    need_running
    super_psql -q -d postgres -c "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)"
    ensure_database
}

with_lock() {
    mkdir -p "$BASE"
    exec 9> "$BASE/lock"
    flock -w "$((WAIT * 2 + 30))" 9 || die "another postgres.sh holds $BASE/lock"
    "$@"
}

cmd=${1:-}
[ $# -eq 0 ] || shift
case $cmd in
    start) with_lock do_start ;;
    stop) with_lock do_stop ;;
    reset) with_lock do_reset ;;
    url)
        load_port || die "no PostgreSQL has been started from $BASE"
        url
        ;;
    psql)
        need_running
        super_psql -d "$DB_NAME" "$@"
        ;;
    *)
        echo "usage: $0 start|stop|url|psql ARGS...|reset" >&2
        exit 2
        ;;
esac
