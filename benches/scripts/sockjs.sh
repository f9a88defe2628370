#!/usr/bin/env bash
# SockJS xhr-streaming echo, Sockeye against sockjs-node (npm `sockjs`), in the same run: N
# sessions each POSTing messages with xhr_send and reading their echoes from an xhr_streaming
# response (`loadgen sockjs`), a fresh server per run, servers taking turns, REPS runs each;
# prints a markdown table of the medians with the Sockeye/sockjs-node ratios and writes it
# into benches/SOCKJS.md (between its result markers).
#
#   benches/scripts/sockjs.sh                          # 3 runs × 2 servers × 5 s: about 1 minute
#   REPS=1 SECS=2 benches/scripts/sockjs.sh            # a quick look (MD= to leave SOCKJS.md alone)
#   SERVERS=sockeye WINDOW=1 MD= benches/scripts/sockjs.sh
#
# Sockeye runs as `sockjs_echo --workers $WORKERS` (default 1; a bin of sockeye-benches: one
# service at /echo with the default settings, streaming limit 128 KiB); sockjs-node as
# benches/peers/sockjs-node/server.js on node's `http` module (installed by its setup.sh:
# `npm ci` from the committed lock, skipped when already done). Both echo at /echo. Every
# server is pinned to CPU $SERVER_CPU (default 0), the load generator to CPU $LOADGEN_CPU
# (default 1). Load: $SESSIONS sessions (default 100) × $SIZE-byte messages (default 100),
# $WINDOW messages without their echo per session (default 8), $BATCH messages per xhr_send
# (default 1), $WARMUP s of warm-up (default 1) and $SECS s measured (default 5).
#
# Other work on the machine would take half of each core (the kernel's autogroups share the
# CPU between sessions, not by nice value): the script runs in a session of its own whose
# autogroup gets nice $NICE (default -20, needs root; NICE= to leave priorities alone). Raw
# output and the RESULT lines go under $OUT (default target/sockjs/<date>).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

NICE=${NICE--20}
if [ -n "$NICE" ] && [ -z "${SOCKJS_SESSION:-}" ] && [ -w /proc/self/autogroup ]; then
    export SOCKJS_SESSION=1
    exec setsid --wait "$ROOT/benches/scripts/sockjs.sh" "$@"
fi
if [ -n "$NICE" ] && [ -n "${SOCKJS_SESSION:-}" ]; then
    echo "$NICE" > /proc/self/autogroup 2>/dev/null || echo "could not set the autogroup nice" >&2
fi

REPS=${REPS:-3}
SECS=${SECS:-5}
WARMUP=${WARMUP:-1}
SESSIONS=${SESSIONS:-100}
SIZE=${SIZE:-100}
WINDOW=${WINDOW:-8}
BATCH=${BATCH:-1}
WORKERS=${WORKERS:-1}
SERVERS=${SERVERS:-"sockeye sockjs-node"}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
SOCKEYE_PORT=${SOCKEYE_PORT:-18481}
NODE_PORT=${NODE_PORT:-18482}
OUT=${OUT:-target/sockjs/$(date +%Y%m%d-%H%M%S)}
MD=${MD-benches/SOCKJS.md}
mkdir -p "$OUT/bin"
COMMAND=benches/scripts/sockjs.sh
if [ $# -gt 0 ]; then COMMAND="$COMMAND$(printf ' %q' "$@")"; fi
SETTINGS="REPS=$REPS SECS=$SECS WARMUP=$WARMUP SESSIONS=$SESSIONS SIZE=$SIZE WINDOW=$WINDOW BATCH=$BATCH WORKERS=$WORKERS SERVERS=\"$SERVERS\""

REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
if [ -n "$(git status --porcelain --untracked-files=no -- engine benches 2>/dev/null)" ]; then
    REVISION="$REVISION (with uncommitted changes under engine/ or benches/)"
fi
echo "building (release)..." >&2
cargo build --release -q -p sockeye-benches --bin loadgen --bin sockjs_echo
# Copies: other builds in this tree may replace target/release binaries during the runs.
cp target/release/sockjs_echo target/release/loadgen "$OUT/bin/"
SOCKEYE=$OUT/bin/sockjs_echo
LOADGEN=$OUT/bin/loadgen

PEER=benches/peers/sockjs-node
NODE_VERSION=
SOCKJS_VERSION=
case " $SERVERS " in
    *" sockjs-node "*)
        "$PEER/setup.sh"
        NODE_VERSION=$(node --version)
        SOCKJS_VERSION=$(node -p "require('./$PEER/node_modules/sockjs/package.json').version")
        ;;
esac

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_listening() {
    for _ in $(seq 100); do
        if port_open "$1"; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on port $1" >&2
    return 1
}

# The engine listens with SO_REUSEPORT: a second server on the same port would silently get
# half of the connections. Refuse to start over anything.
ensure_free() {
    if port_open "$1"; then
        echo "port $1 is already in use: stop whatever listens there first (or set SOCKEYE_PORT / NODE_PORT)" >&2
        exit 1
    fi
}

stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then stop_pid "$server_pid"; fi
}
trap cleanup EXIT

RESULTS=$OUT/results.jsonl
: > "$RESULTS"

# run SERVER REP
run() {
    local server=$1 rep=$2 port log
    log=$OUT/$server-$rep.txt
    case $server in
        sockeye)
            port=$SOCKEYE_PORT
            ensure_free "$port"
            taskset -c "$SERVER_CPU" "$SOCKEYE" "127.0.0.1:$port" --workers "$WORKERS" \
                > "$OUT/server-$server-$rep.log" 2>&1 &
            ;;
        sockjs-node)
            port=$NODE_PORT
            ensure_free "$port"
            taskset -c "$SERVER_CPU" node "$PEER/server.js" "127.0.0.1:$port" \
                > "$OUT/server-$server-$rep.log" 2>&1 &
            ;;
        *)
            echo "unknown server $server" >&2
            exit 1
            ;;
    esac
    server_pid=$!
    wait_listening "$port"
    echo "== $server run $rep" >&2
    taskset -c "$LOADGEN_CPU" "$LOADGEN" sockjs --url "http://127.0.0.1:$port/echo" \
        --sessions "$SESSIONS" --size "$SIZE" --window "$WINDOW" --batch "$BATCH" \
        --secs "$SECS" --warmup "$WARMUP" --pid "$server_pid" > "$log" 2>&1 || true
    sed -n '2,6p' "$log" >&2
    stop_pid "$server_pid"
    server_pid=
    local result
    result=$(grep '^RESULT ' "$log" | tail -1 | cut -d' ' -f2-)
    if [ -n "$result" ]; then
        printf '{"server":"%s","rep":%s,"result":%s}\n' "$server" "$rep" "$result" >> "$RESULTS"
    else
        echo "no RESULT line in $log" >&2
    fi
}

for rep in $(seq "$REPS"); do
    for server in $SERVERS; do
        run "$server" "$rep"
    done
done

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MACHINE="$(nproc) cores ($CPU_MODEL), $(uname -sr), $(grep MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}') RAM"
TABLE=$OUT/table.md
python3 - "$RESULTS" "$SECS" "$SESSIONS" "$SIZE" "$WINDOW" "$BATCH" > "$TABLE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
secs, sessions, size, window, batch = sys.argv[2:7]
groups = {}
for r in rows:
    groups.setdefault(r["server"], []).append(r["result"])

def med(results, key):
    vals = [x[key] for x in results if x.get(key) is not None]
    return statistics.median(vals) if vals else None

def fmt(v, unit="", digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}{unit}"

def ms(us):
    return None if us is None else us / 1000

names = {"sockeye": "Sockeye", "sockjs-node": "sockjs-node"}
print("| server | messages/s | server CPU µs/message | server CPU | p50 | p99 | streaming responses ended | load generator CPU | errors | runs |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
stats = {}
for server in ("sockeye", "sockjs-node"):
    res = groups.get(server)
    if not res:
        continue
    s = {
        "mps": med(res, "msgs_per_sec"),
        "cpu": med(res, "server_cpu_us_per_msg"),
        "pct": med(res, "server_cpu_pct"),
        "p50": ms(med(res, "p50_us")),
        "p99": ms(med(res, "p99_us")),
        "ended": med(res, "streams_ended"),
        "lg": med(res, "loadgen_cpu_pct"),
        "errors": sum(x["errors"] for x in res),
    }
    stats[server] = s
    print(f"| {names[server]} | {fmt(s['mps'])} | {fmt(s['cpu'], '', 2)} | {fmt(s['pct'], ' %')} "
          f"| {fmt(s['p50'], ' ms', 2)} | {fmt(s['p99'], ' ms', 2)} | {fmt(s['ended'])} "
          f"| {fmt(s['lg'], ' %')} | {s['errors']} | {len(res)} |")
a, b = stats.get("sockeye"), stats.get("sockjs-node")
verdict = None
if a and b and a["mps"] and b["mps"]:
    ratio = a["mps"] / b["mps"]
    cpu_ratio = (b["cpu"] / a["cpu"]) if a["cpu"] and b["cpu"] else None
    print(f"| **Sockeye / sockjs-node** | **{ratio:.1f}×** | **{fmt(cpu_ratio, '×', 1)}** less | | | | | | | |")
    verdict = (f"Target (messages/s ≥ 5× sockjs-node's): {'met' if ratio >= 5 else 'missed'}, "
               f"{ratio:.1f}× (server CPU per message {fmt(cpu_ratio, '×', 1)} less).")
print()
print(f"{sessions} sessions × {size} B messages over xhr_streaming, sent with xhr_send "
      f"({batch} message(s) per request, one request at a time per session), at most {window} "
      f"without their echo per session; medians of each run's figures, errors summed over the "
      f"runs; {secs} s measured per run. Server CPU is utime + stime of the server process "
      "(with the loopback receive work its sends trigger) over the measured seconds; "
      "\"streaming responses ended\" counts the responses a server ended at its streaming limit "
      "(each one reopened by the load generator), over the whole run.")
if verdict:
    print()
    print(verdict)
PY

{
    echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'), $MACHINE; Sockeye at $REVISION;"
    echo "sockjs-node ${SOCKJS_VERSION:-not run} on node ${NODE_VERSION:-–}; servers on CPU $SERVER_CPU, load generator on CPU $LOADGEN_CPU."
    echo
    echo '```sh'
    echo "$SETTINGS $COMMAND"
    echo '```'
    echo
    cat "$TABLE"
} > "$OUT/section.md"
cat "$OUT/section.md"

# Replace the results section of SOCKJS.md, keeping the rest of the file.
if [ -z "$MD" ]; then
    echo "raw output and table: $OUT" >&2
    exit 0
fi
if [ -f "$MD" ] && grep -q '<!-- sockjs:begin -->' "$MD"; then
    python3 - "$MD" "$OUT/section.md" <<'PY'
import sys
md, section = sys.argv[1], open(sys.argv[2]).read()
text = open(md).read()
head, rest = text.split("<!-- sockjs:begin -->", 1)
_, tail = rest.split("<!-- sockjs:end -->", 1)
open(md, "w").write(head + "<!-- sockjs:begin -->\n" + section + "<!-- sockjs:end -->" + tail)
PY
else
    {
        echo "# SockJS xhr-streaming echo: Sockeye and sockjs-node"
        echo
        echo "<!-- sockjs:begin -->"
        cat "$OUT/section.md"
        echo "<!-- sockjs:end -->"
    } > "$MD"
fi
echo "raw output: $OUT; table written to $MD" >&2
