#!/usr/bin/env bash
# Runs the standard load shapes against Sockeye's echo example and the peer echo servers
# (fastwebsockets, tokio-tungstenite), a fresh server per run, each shape REPS times, and
# prints a markdown table of the medians with Sockeye/peer ratios.
#
#   benches/scripts/compare.sh                  # everything (about 10 minutes on 2 cores)
#   REPS=1 SECS=2 benches/scripts/compare.sh    # a quick look
#   SHAPES="d1 d16" SERVERS="sockeye fastwebsockets" benches/scripts/compare.sh
#   SERVERS="sockeye-tokio fastwebsockets tokio-tungstenite" ...   # the tokio adapter
#                                 (examples/tokio_echo, one current-thread runtime) vs its peers
#   SERVERS="sockeye-tls tokio-tungstenite-tls" SHAPES="d1 large idle10k" ...   # over TLS (wss://):
#                                 the echo example with feature tls vs tokio-tungstenite on
#                                 tokio-rustls, both rustls on ring, a throwaway CA made by
#                                 scripts/test-ca.sh (the load generator trusts it: LOADGEN_CA)
#
# Each server is pinned to CPU $SERVER_CPU (default 0) and the load generator to CPU
# $LOADGEN_CPU (default 1) with taskset. Every run's output is kept under $OUT
# (default target/compare/<date>), the RESULT lines in $OUT/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/../.."

REPS=${REPS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
SHAPES=${SHAPES:-"d1 d16 large many idle"}
SERVERS=${SERVERS:-"sockeye fastwebsockets tokio-tungstenite"}
PORT=${PORT:-20000}
OUT=${OUT:-target/compare/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

echo "building (release)..." >&2
cargo build --release -q -p sockeye --example echo -p sockeye-benches --bin loadgen
case " $SERVERS " in *" sockeye-tokio "*)
    cargo build --release -q -p sockeye --features tokio --example tokio_echo ;;
esac
# Only the peers this run compares with.
for server in $SERVERS; do
    case $server in
        fastwebsockets) peer=fastwebsockets-echo ;;
        tokio-tungstenite) peer=tokio-tungstenite-echo ;;
        tokio-tungstenite-tls) peer=tokio-tungstenite-rustls-echo ;;
        *) continue ;;
    esac
    cargo build --release -q --manifest-path "benches/peers/$peer/Cargo.toml" --target-dir target/peers
done
LOADGEN=target/release/loadgen
# The TLS servers' certificate (for localhost), made once.
TLS_DIR=target/compare/tls-ca
bash scripts/test-ca.sh "$TLS_DIR" localhost 127.0.0.1 >/dev/null
export LOADGEN_CA=$TLS_DIR/ca.pem

server_bin() {
    case $1 in
        sockeye) echo target/release/examples/echo ;;
        sockeye-tokio) echo target/release/examples/tokio_echo ;;
        fastwebsockets) echo target/peers/release/fastwebsockets-echo ;;
        tokio-tungstenite) echo target/peers/release/tokio-tungstenite-echo ;;
        sockeye-tls) echo target/release/examples/echo ;;
        tokio-tungstenite-tls) echo target/peers/release/tokio-tungstenite-rustls-echo ;;
        *) echo "unknown server $1" >&2; exit 2 ;;
    esac
}

# Starts server $1 on port $2 pinned to $SERVER_CPU, output to $3; sets $pid and $url.
start_server() {
    local bin
    bin=$(server_bin "$1")
    case $1 in
        sockeye-tls)
            SOCKEYE_TLS_CERT=$TLS_DIR/server.pem SOCKEYE_TLS_KEY=$TLS_DIR/server.key \
                taskset -c "$SERVER_CPU" "$bin" "127.0.0.1:$2" > "$3" 2>&1 &
            ;;
        tokio-tungstenite-tls)
            taskset -c "$SERVER_CPU" "$bin" "127.0.0.1:$2" "$TLS_DIR/server.pem" \
                "$TLS_DIR/server.key" > "$3" 2>&1 &
            ;;
        *) taskset -c "$SERVER_CPU" "$bin" "127.0.0.1:$2" > "$3" 2>&1 & ;;
    esac
    pid=$!
    case $1 in
        *-tls) url="wss://localhost:$2/" ;;
        *) url="ws://127.0.0.1:$2/" ;;
    esac
}

shape_args() {
    local common="--secs $SECS --warmup $WARMUP"
    case $1 in
        d1) echo "echo --conns 100 --size 16 --depth 1 $common" ;;
        d16) echo "echo --conns 100 --size 16 --depth 16 $common" ;;
        large) echo "echo --conns 10 --size 65536 --binary --depth 1 $common" ;;
        many) echo "echo --conns 1000 --size 512 --depth 1 $common" ;;
        # The server holds 15,000 sockets; the load generator needs two processes for them
        # under the 20,000 open-files limit, spread over 16 source addresses.
        idle) echo "conns --conns 15000 --procs 2 --sources 16 --rate 5000 --hold 3 --settle 1" ;;
        # 10,000 (TLS) connections: both sides' handshakes share the 2 cores, and at 2,000/s
        # most timed out (10 s) on a busy machine; 400/s opened every one.
        idle10k) echo "conns --conns 10000 --procs 2 --sources 16 --rate 400 --hold 3 --settle 1" ;;
        *) echo "unknown shape $1" >&2; exit 2 ;;
    esac
}

wait_listening() {
    local port=$1
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "server on port $port did not start" >&2
    return 1
}

stop_server() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

RESULTS=$OUT/results.jsonl
: > "$RESULTS"
for shape in $SHAPES; do
    for rep in $(seq "$REPS"); do
        # Servers take turns within a repetition, so slow phases of the machine hit each alike.
        for server in $SERVERS; do
            PORT=$((PORT + 1))
            log=$OUT/$shape.$server.$rep
            start_server "$server" "$PORT" "$log.server.log"
            wait_listening "$PORT"
            # shellcheck disable=SC2046
            taskset -c "$LOADGEN_CPU" "$LOADGEN" $(shape_args "$shape") \
                --url "$url" --pid "$pid" > "$log.txt" 2> "$log.err" || true
            stop_server "$pid"
            result=$(grep '^RESULT ' "$log.txt" | tail -1 | cut -c8-)
            if [ -z "$result" ]; then
                echo "no result: $shape $server #$rep (see $log.err)" >&2
                continue
            fi
            echo "{\"shape\":\"$shape\",\"server\":\"$server\",\"rep\":$rep,\"result\":$result}" \
                >> "$RESULTS"
            echo "$shape $server #$rep: $(sed -n 2p "$log.txt" | sed 's/^ *//')" >&2
        done
    done
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "Date: $(date -u +'%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores, $cpu; kernel $(uname -r);"
echo "commit $(git rev-parse --short HEAD); $REPS runs per cell (median), ${SECS} s windows;"
echo "servers on CPU $SERVER_CPU, load generator on CPU $LOADGEN_CPU; raw runs in $OUT."
echo
python3 benches/scripts/summarize.py "$RESULTS"
