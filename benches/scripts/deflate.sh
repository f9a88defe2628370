#!/usr/bin/env bash
# permessage-deflate figures (issue 15), each shape REPS times, a fresh server per run:
#
#   echo    100 connections × 1 KiB JSON-like text, $DEPTH (default 1) messages in flight per
#           connection, deflate on both sides: Sockeye's
#           echo example (deflate on: no context takeover) against node ws (perMessageDeflate
#           on, its defaults), taking turns; messages/s and server CPU per message
#   idle    15,000 idle connections that negotiated deflate without context takeover: server
#           bytes per connection (2 load-generator processes over 16 source addresses)
#   takeover 5,000 connections with context takeover both ways, each after one 1 KiB echo (so
#           both its compressor and its inflater exist): server bytes per connection
#   fanout  sockeye-chat, STOMP over WebSocket, 1 publisher and 1,000 subscribers, 100-byte
#           bodies: server CPU per delivery without deflate and with it (compress-once)
#   bomb    one message of 1 KiB frames that would inflate to 1 GiB against the echo example
#           (16 MiB message limit): the close code and the server's peak RSS growth
#           (deflate-bomb.py, VmHWM from /proc)
#
#   benches/scripts/deflate.sh                 # everything, 3 runs each
#   REPS=1 SECS=3 SHAPES="echo fanout" benches/scripts/deflate.sh
#
# Servers are pinned to CPU $SERVER_CPU (default 0), the load generator to $LOADGEN_CPU
# (default 1). Raw output under $OUT (default target/deflate/<date>); the RESULT lines in
# $OUT/results.jsonl; a markdown summary on stdout.
set -euo pipefail
# Load from one address at any rate: the per-session SEND rate and per-address session limits off.
UNLIMITED="--max-send-rate 0 --max-sessions-per-address 0 --max-sessions-per-user 0"
cd "$(dirname "$0")/../.."

REPS=${REPS:-3}
SECS=${SECS:-5}
DEPTH=${DEPTH:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
SHAPES=${SHAPES:-"echo idle takeover fanout bomb"}
PORT=${PORT:-21000}
OUT=${OUT:-target/deflate/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"

echo "building (release)..." >&2
cargo build --release -q -p sockeye --example echo -p sockeye-benches --bin loadgen -p sockeye-chat
bash benches/peers/ws-node/setup.sh
LOADGEN=target/release/loadgen

wait_listening() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "server on port $1 did not start" >&2
    return 1
}

stop_server() {
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$1" 2>/dev/null || { wait "$1" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# run SHAPE NAME REP SERVER_CMD... -- LOADGEN_ARGS...: a fresh server, the load generator with
# its pid, the RESULT line into results.jsonl.
run() {
    local shape=$1 name=$2 rep=$3 cmd=() args=()
    shift 3
    while [ "$1" != "--" ]; do cmd+=("$1"); shift; done
    shift
    args=("$@")
    local log=$OUT/$shape.$name.$rep
    taskset -c "$SERVER_CPU" "${cmd[@]}" > "$log.server.log" 2>&1 &
    local pid=$!
    wait_listening "$PORT"
    local pid_flag=--pid
    [ "$shape" = fanout ] && pid_flag=--server-pid
    taskset -c "$LOADGEN_CPU" "$LOADGEN" "${args[@]}" "$pid_flag" "$pid" > "$log.txt" 2> "$log.err" || true
    stop_server "$pid"
    local result
    result=$(grep '^RESULT ' "$log.txt" | tail -1 | cut -c8-)
    if [ -z "$result" ]; then
        echo "no result: $shape $name #$rep (see $log.err)" >&2
        return 0
    fi
    echo "{\"shape\":\"$shape\",\"server\":\"$name\",\"rep\":$rep,\"result\":$result}" >> "$OUT/results.jsonl"
    echo "$shape $name #$rep: $(sed -n 2p "$log.txt" | sed 's/^ *//')" >&2
}

: > "$OUT/results.jsonl"
for shape in $SHAPES; do
    for rep in $(seq "$REPS"); do
        case $shape in
            echo)
                for server in sockeye ws; do
                    PORT=$((PORT + 1))
                    case $server in
                        sockeye) cmd=(target/release/examples/echo "127.0.0.1:$PORT" $((64 << 20)) on) ;;
                        ws) cmd=(node benches/peers/ws-node/server.js "127.0.0.1:$PORT") ;;
                    esac
                    run echo "$server" "$rep" "${cmd[@]}" -- echo --url "ws://127.0.0.1:$PORT/" \
                        --conns 100 --size 1024 --json --deflate --depth "$DEPTH" --secs "$SECS" --warmup 1
                done
                ;;
            idle)
                PORT=$((PORT + 1))
                run idle sockeye "$rep" target/release/examples/echo "127.0.0.1:$PORT" $((64 << 20)) on -- \
                    conns --url "ws://127.0.0.1:$PORT/" --conns 15000 --procs 2 --sources 16 \
                    --rate 5000 --hold 3 --settle 1 --deflate on
                ;;
            takeover)
                PORT=$((PORT + 1))
                run takeover sockeye "$rep" target/release/examples/echo "127.0.0.1:$PORT" $((64 << 20)) takeover -- \
                    conns --url "ws://127.0.0.1:$PORT/" --conns 5000 --procs 1 --sources 16 \
                    --rate 5000 --hold 3 --settle 1 --deflate takeover --message 1024
                ;;
            fanout)
                for mode in off on; do
                    PORT=$((PORT + 1))
                    flag=()
                    [ "$mode" = on ] && flag=(--deflate)
                    run fanout "deflate-$mode" "$rep" target/release/sockeye-chat --data-dir off \
                        --workers 1 --listen "127.0.0.1:$PORT" --stomp-listen off --deflate "$mode" $UNLIMITED -- \
                        fanout --transport ws --url "ws://127.0.0.1:$PORT/ws" --subs 1000 --size 100 \
                        --seconds "$SECS" --warmup 2 "${flag[@]}"
                done
                ;;
            bomb)
                PORT=$((PORT + 1))
                log=$OUT/bomb.sockeye.$rep
                taskset -c "$SERVER_CPU" target/release/examples/echo "127.0.0.1:$PORT" $((64 << 20)) on \
                    > "$log.server.log" 2>&1 &
                pid=$!
                wait_listening "$PORT"
                timeout 120 python3 benches/scripts/deflate-bomb.py "127.0.0.1:$PORT" "$pid" 10 \
                    > "$log.txt" 2> "$log.err" || true
                stop_server "$pid"
                result=$(grep '^RESULT ' "$log.txt" | tail -1 | cut -c8-)
                if [ -n "$result" ]; then
                    echo "{\"shape\":\"bomb\",\"server\":\"sockeye\",\"rep\":$rep,\"result\":$result}" >> "$OUT/results.jsonl"
                    echo "bomb #$rep: $(head -1 "$log.txt")" >&2
                else
                    echo "no result: bomb #$rep (see $log.err)" >&2
                fi
                ;;
            *) echo "unknown shape $shape" >&2; exit 2 ;;
        esac
    done
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "Date: $(date -u +'%Y-%m-%d %H:%M UTC'); $(nproc) cores, $cpu; commit $(git rev-parse --short HEAD);"
echo "$REPS runs per cell (median), ${SECS} s windows; servers on CPU $SERVER_CPU, load generator on CPU $LOADGEN_CPU; raw runs in $OUT."
echo
python3 - "$OUT/results.jsonl" "$DEPTH" <<'PY'
import json, statistics, sys
depth = sys.argv[2]
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def med(shape, server, key):
    v = [r["result"].get(key) for r in rows if r["shape"] == shape and r["server"] == server]
    v = [x for x in v if isinstance(x, (int, float))]
    return statistics.median(v) if v else None
def errs(shape, server):
    return sum(r["result"].get("errors", 0) for r in rows if r["shape"] == shape and r["server"] == server)
def f(x, d=1):
    return "-" if x is None else f"{x:,.{d}f}"
print(f"| shape | server | figure | median | errors |")
print("| --- | --- | --- | ---: | ---: |")
for server in ("sockeye", "ws"):
    if med("echo", server, "msgs_per_sec") is not None:
        print(f"| echo 100 × 1 KiB JSON, deflate, depth {depth} | {server} | msg/s | {f(med('echo', server, 'msgs_per_sec'), 0)} | {errs('echo', server)} |")
        print(f"| | {server} | server CPU µs/msg | {f(med('echo', server, 'server_cpu_us_per_msg'), 2)} | |")
a, b = med("echo", "sockeye", "msgs_per_sec"), med("echo", "ws", "msgs_per_sec")
if a and b:
    print(f"| | Sockeye / ws | msg/s ratio (target ≥ 3) | {a / b:.2f} | |")
a, b = med("echo", "sockeye", "server_cpu_us_per_msg"), med("echo", "ws", "server_cpu_us_per_msg")
if a and b:
    print(f"| | ws / Sockeye | CPU per message ratio | {b / a:.2f} | |")
for shape, label in (("idle", "15,000 idle, deflate without takeover"), ("takeover", "5,000 after one echo, takeover both ways")):
    v = med(shape, "sockeye", "bytes_per_conn")
    if v is not None:
        print(f"| {label} | sockeye | server bytes/conn | {f(v, 0)} | {errs(shape, 'sockeye')} |")
for mode in ("off", "on"):
    v = med("fanout", f"deflate-{mode}", "server_cpu_us_per_delivery")
    if v is not None:
        print(f"| fan-out 1,000 subs × 100 B | deflate {mode} | server CPU µs/delivery | {f(v, 3)} | {errs('fanout', f'deflate-{mode}')} |")
a, b = med("fanout", "deflate-on", "server_cpu_us_per_delivery"), med("fanout", "deflate-off", "server_cpu_us_per_delivery")
if a and b:
    print(f"| | on / off | CPU per delivery ratio (target ≤ 1.5) | {a / b:.2f} | |")
codes = sorted({r["result"].get("close_code") for r in rows if r["shape"] == "bomb"}, key=str)
v = med("bomb", "sockeye", "peak_growth_bytes")
if v is not None:
    print(f"| 1 GiB bomb in 1 KiB frames, 16 MiB limit | sockeye | close code | {', '.join(map(str, codes))} | |")
    print(f"| | sockeye | server peak RSS growth, bytes (limit 16,777,216) | {f(v, 0)} | |")
PY
