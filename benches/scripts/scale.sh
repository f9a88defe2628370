#!/usr/bin/env bash
# How the engine and the broker scale with cores: the echo example and sockeye-chat with
# W = 1, 2, 4, ... workers, one table of rates per W and the efficiency of each
# (rate at W / (W x rate at 1)).
#
#   benches/scripts/scale.sh                      # W = 1, 2, 4, ... up to the cores
#   WORKERS="1 2" REPS=1 SECS=3 benches/scripts/scale.sh   # a quick look
#   SHAPES="fan8 fan1" benches/scripts/scale.sh   # the broker only
#
# Shapes (SHAPES, default all):
#   d16   echo, 16 B text, depth 16, $ECHO_CONNS connections (default 400)
#   d1    echo, 16 B text, depth 1, the same connections
#   fan8  STOMP fan-out over WebSocket: 8 topics x $FAN8_SUBS subscribers (default 250) x
#         100 B, one publisher per topic (one load generator process per topic)
#   fan1  STOMP fan-out over WebSocket: one publisher, $FAN1_SUBS subscribers (default 1000)
#         of one topic, spread over the workers as the server accepts them; one load
#         generator process whose subscribers are read by as many threads as echo has
#         processes (--threads: one thread cannot read what several workers deliver)
# Placement: the server on cores 0..W-1 (taskset); the load generators on the cores above
# W-1 when there are at least $MIN_LOADGEN_CPUS (default 2) of them, else on every core
# (a small machine: then only "W workers are not slower than one" can be read off).
# Echo load is split over $LOADGENS processes (default: the load generators' cores, at most 8).
# sockeye-chat runs with --data-dir off and without the per-session send rate and the session
# limits per address and per user (a publisher sends far more than a person, and every load
# generator session logs in as the same user from one address).
# Fan-out publishers are paced by a window of $WINDOW (default 4) messages outstanding at the
# slowest subscriber; every subscriber must get every message (lost and errors are printed).
#
# CHAT_BIN=path measures that sockeye-chat instead of this tree's (say, an earlier commit's
# release build, run just before or after on the same machine).
#
# Needs only what the workspace builds (release binaries) plus taskset and python3. Raw output
# and RESULT lines go under $OUT (default target/scale/<date>); the table is printed and
# written to $OUT/table.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

CORES=$(nproc)
REPS=${REPS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
WINDOW=${WINDOW:-4}
SHAPES=${SHAPES:-"d16 d1 fan8 fan1"}
ECHO_CONNS=${ECHO_CONNS:-400}
FAN8_SUBS=${FAN8_SUBS:-250}
FAN1_SUBS=${FAN1_SUBS:-1000}
MIN_LOADGEN_CPUS=${MIN_LOADGEN_CPUS:-2}
ECHO_PORT=${ECHO_PORT:-19101}
WS_PORT=${WS_PORT:-19180}
TCP_PORT=${TCP_PORT:-19613}
OUT=${OUT:-target/scale/$(date +%Y%m%d-%H%M%S)}
if [ -z "${WORKERS:-}" ]; then
    WORKERS=""
    w=1
    while [ "$w" -le "$CORES" ]; do
        WORKERS="$WORKERS $w"
        w=$((w * 2))
    done
fi
mkdir -p "$OUT/bin"

echo "building (release)..." >&2
cargo build --release -q -p sockeye --example echo
cargo build --release -q -p sockeye-chat --bin sockeye-chat
cargo build --release -q -p sockeye-benches --bin loadgen
cp target/release/examples/echo target/release/sockeye-chat target/release/loadgen "$OUT/bin/"
ECHO=$OUT/bin/echo
# CHAT_BIN: another sockeye-chat to measure (an earlier build, for a same-machine comparison).
CHAT=${CHAT_BIN:-$OUT/bin/sockeye-chat}
LOADGEN=$OUT/bin/loadgen

server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then stop_pid "$server_pid"; fi
}
trap cleanup EXIT

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

wait_listening() {
    local port=$1
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listening on port $port after 10 s" >&2
    return 1
}

# The cores of the server (0..W-1) and of the load generators for W workers.
server_cpus() { echo "0-$(($1 - 1))"; }
loadgen_cpus() {
    local w=$1
    if [ $((CORES - w)) -ge "$MIN_LOADGEN_CPUS" ]; then
        echo "$w-$((CORES - 1))"
    else
        echo "0-$((CORES - 1))"
    fi
}
loadgen_count() {
    if [ -n "${LOADGENS:-}" ]; then echo "$LOADGENS"; return; fi
    local w=$1 n
    if [ $((CORES - w)) -ge "$MIN_LOADGEN_CPUS" ]; then n=$((CORES - w)); else n=$CORES; fi
    [ "$n" -gt 8 ] && n=8
    echo "$n"
}

RESULTS=$OUT/results.jsonl
: > "$RESULTS"

# record SHAPE W REP LOG...: one line per run with every process's RESULT.
record() {
    local shape=$1 w=$2 rep=$3
    shift 3
    local parts=() log result
    for log in "$@"; do
        result=$(grep '^RESULT ' "$log" | tail -1 | cut -d' ' -f2- || true)
        if [ -z "$result" ]; then
            echo "no RESULT line in $log:" >&2
            tail -5 "$log" >&2 || true
            result=null
        fi
        parts+=("$result")
    done
    local joined
    joined=$(IFS=,; echo "${parts[*]}")
    printf '{"shape":"%s","workers":%s,"rep":%s,"results":[%s]}\n' \
        "$shape" "$w" "$rep" "$joined" >> "$RESULTS"
}

# drive SHAPE W REP COUNT ARGS...: COUNT load generator processes on the load generators'
# cores, each `loadgen ARGS` with @I@ replaced by its number (1..COUNT); then the server is
# stopped and the run recorded.
drive() {
    local shape=$1 w=$2 rep=$3 count=$4 logs=() pids=() i
    shift 4
    for i in $(seq "$count"); do
        local log=$OUT/$shape-w$w-r$rep-p$i.txt
        logs+=("$log")
        taskset -c "$(loadgen_cpus "$w")" "$LOADGEN" "${@//@I@/$i}" > "$log" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || true; done
    stop_pid "$server_pid"
    server_pid=""
    record "$shape" "$w" "$rep" "${logs[@]}"
}

run_echo() {
    local shape=$1 w=$2 rep=$3 depth procs
    case $shape in d16) depth=16 ;; d1) depth=1 ;; esac
    procs=$(loadgen_count "$w")
    taskset -c "$(server_cpus "$w")" "$ECHO" "127.0.0.1:$ECHO_PORT" $((64 << 20)) off "$w" \
        > "$OUT/server-echo-$w.log" 2>&1 &
    server_pid=$!
    wait_listening "$ECHO_PORT"
    drive "$shape" "$w" "$rep" "$procs" echo --url "ws://127.0.0.1:$ECHO_PORT/" \
        --conns $(((ECHO_CONNS + procs - 1) / procs)) --size 16 --depth "$depth" \
        --secs "$SECS" --warmup "$WARMUP" --pid "$server_pid"
}

run_fanout() {
    local shape=$1 w=$2 rep=$3 topics subs threads
    case $shape in
        fan8) topics=8; subs=$FAN8_SUBS; threads=1 ;;
        fan1) topics=1; subs=$FAN1_SUBS; threads=$(loadgen_count "$w") ;;
    esac
    RUST_LOG=warn taskset -c "$(server_cpus "$w")" "$CHAT" --listen "127.0.0.1:$WS_PORT" \
        --stomp-listen "127.0.0.1:$TCP_PORT" --data-dir off --workers "$w" \
        --max-send-rate 0 --max-sessions-per-address 0 --max-sessions-per-user 0 \
        > "$OUT/server-chat-$w.log" 2>&1 &
    server_pid=$!
    wait_listening "$WS_PORT"
    drive "$shape" "$w" "$rep" "$topics" fanout --transport ws --url "ws://127.0.0.1:$WS_PORT/ws" \
        --destination "/topic/scale.@I@" --subs "$subs" --size 100 --window "$WINDOW" \
        --seconds "$SECS" --warmup "$WARMUP" --server-pid "$server_pid" --threads "$threads"
}

for rep in $(seq "$REPS"); do
    for w in $WORKERS; do
        for shape in $SHAPES; do
            echo "== $shape, $w worker(s), run $rep" >&2
            case $shape in
                d16 | d1) run_echo "$shape" "$w" "$rep" ;;
                fan8 | fan1) run_fanout "$shape" "$w" "$rep" ;;
                *) echo "unknown shape $shape" >&2; exit 2 ;;
            esac
            tail -1 "$RESULTS" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
ok = [x for x in r["results"] if x]
key = "msgs_per_sec" if r["shape"] in ("d16", "d1") else "deliveries_per_sec"
rate = sum(x.get(key) or 0 for x in ok)
print("   %s: %.0f/s from %d of %d load generators" % (key, rate, len(ok), len(r["results"])),
      file=sys.stderr)'
        done
    done
done

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MACHINE="$CORES cores ($CPU_MODEL), $(uname -sr)"
python3 - "$RESULTS" "$MACHINE" "$SECS" "$REPS" "$ECHO_CONNS" "$FAN8_SUBS" "$FAN1_SUBS" \
    "$WINDOW" "$MIN_LOADGEN_CPUS" > "$OUT/table.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
machine, secs, reps, echo_conns, fan8, fan1, window, min_lg = sys.argv[2:10]
names = {
    "d16": "echo 16 B, depth 16 (msg/s)",
    "d1": "echo 16 B, depth 1 (msg/s)",
    "fan8": "fan-out 8 topics × %s × 100 B (deliveries/s)" % fan8,
    "fan1": "fan-out 1 topic × %s × 100 B (deliveries/s)" % fan1,
}
shapes = [s for s in ("d16", "d1", "fan8", "fan1") if any(r["shape"] == s for r in rows)]
workers = sorted({r["workers"] for r in rows})

def summed(results, key):
    ok = [x for x in results if x]
    if len(ok) < len(results):
        return None
    return sum(x.get(key) or 0 for x in ok)

def cell(shape, w):
    key = "msgs_per_sec" if shape in ("d16", "d1") else "deliveries_per_sec"
    runs = [summed(r["results"], key) for r in rows if r["shape"] == shape and r["workers"] == w]
    runs = [v for v in runs if v is not None]
    return statistics.median(runs) if runs else None

def worst(shape, w, key):
    vals = [x.get(key) for r in rows if r["shape"] == shape and r["workers"] == w
            for x in r["results"] if x and x.get(key) is not None]
    return max(vals) if vals else None

def total(shape, w, key):
    return sum((x.get(key) or 0) if x else 0 for r in rows
               if r["shape"] == shape and r["workers"] == w for x in r["results"])

def fmt(v):
    if v is None:
        return "–"
    return "{:,.0f}".format(v) if v < 1e6 else "%.2f M" % (v / 1e6)

print("Machine: %s. Median of %s runs of %s s; server on cores 0..W-1, load generators on the"
      " cores above when at least %s are left, else on every core." % (machine, reps, secs, min_lg))
print("Echo: %s connections over the load generator processes. Fan-out: window %s, one"
      " publisher per topic." % (echo_conns, window))
print()
print("| workers | " + " | ".join(names[s] for s in shapes) + " |")
print("|---|" + "---|" * len(shapes))
for w in workers:
    print("| %d | " % w + " | ".join(fmt(cell(s, w)) for s in shapes) + " |")
print()
print("Efficiency, rate at W ÷ (W × rate at 1):")
print()
print("| workers | " + " | ".join(s for s in shapes) + " |")
print("|---|" + "---|" * len(shapes))
for w in workers:
    vals = []
    for s in shapes:
        one, at = cell(s, 1), cell(s, w)
        vals.append("–" if not one or at is None else "%.2f (%.2f×)" % (at / (w * one), at / one))
    print("| %d | " % w + " | ".join(vals) + " |")
fans = [s for s in shapes if s.startswith("fan")]
if fans:
    print()
    print("Fan-out checks, all runs: worst p99 publish-to-delivery latency of a load generator,"
          " messages lost, errors:")
    print()
    print("| workers | " + " | ".join("%s p99 µs | %s lost | %s errors" % (s, s, s) for s in fans) + " |")
    print("|---|" + "---|---|---|" * len(fans))
    for w in workers:
        vals = []
        for s in fans:
            vals += [fmt(worst(s, w, "p99_us")), str(total(s, w, "lost")), str(total(s, w, "errors"))]
        print("| %d | " % w + " | ".join(vals) + " |")
PY
cat "$OUT/table.md"
