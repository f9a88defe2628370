#!/usr/bin/env bash
# STOMP fan-out, Sockeye's broker against RabbitMQ's STOMP and Web-STOMP plugins: one
# publisher, N subscribers of /topic/bench, over WebSocket and over TCP, a fresh server per
# run, each shape REPS times; prints a markdown table of the medians with Sockeye/RabbitMQ
# ratios and writes it into benches/FANOUT.md (between its result markers).
#
#   benches/scripts/fanout.sh                          # everything: about 10 minutes
#   REPS=1 SECS=3 SHAPES="100x100" benches/scripts/fanout.sh   # a quick look
#   SERVERS=sockeye TRANSPORTS=tcp benches/scripts/fanout.sh
#
# Shapes are SUBSxSIZE (subscribers x body bytes; default "1000x100 100x100"). Every server is
# pinned to CPU $SERVER_CPU (default 0), the load generator to CPU $LOADGEN_CPU (default 1).
# Sockeye runs as `sockeye-chat --data-dir off --workers 1`; RabbitMQ (Debian's package,
# installed if missing) through benches/scripts/rabbitmq.sh. The publisher is paced by a
# window of $WINDOW messages (default 4) outstanding at the slowest subscriber, or by $RATE
# messages/s (default 0: the window alone). FLOOD=R floods instead: the publisher is paced by
# its RECEIPTs alone (`loadgen fanout --flood R`, at most R SENDs unreceipted), and Sockeye runs
# with --slow-consumer $SLOW_CONSUMER (default disconnect; the load generator is told the same).
# A flood's table is printed and kept under $OUT, not written into FANOUT.md (unless MD is set).
#
# Other work on the machine (builds, fuzzers, even at nice 19: the kernel's autogroups share
# the CPU between sessions, not by nice value) would take half of each core; so the script runs
# in a session of its own whose autogroup gets nice $NICE (default -20, needs root; NICE= to
# leave priorities alone), and gives RabbitMQ's session the same. Raw output and the RESULT
# lines go under $OUT (default target/fanout/<date>).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

NICE=${NICE--20}
if [ -n "$NICE" ] && [ -z "${FANOUT_SESSION:-}" ] && [ -w /proc/self/autogroup ]; then
    export FANOUT_SESSION=1
    exec setsid --wait "$ROOT/benches/scripts/fanout.sh" "$@"
fi
if [ -n "$NICE" ] && [ -n "${FANOUT_SESSION:-}" ]; then
    echo "$NICE" > /proc/self/autogroup 2>/dev/null || echo "could not set the autogroup nice" >&2
fi

REPS=${REPS:-3}
SECS=${SECS:-10}
WARMUP=${WARMUP:-2}
WINDOW=${WINDOW:-4}
RATE=${RATE:-0}
FLOOD=${FLOOD:-}
SLOW_CONSUMER=${SLOW_CONSUMER:-disconnect}
SHAPES=${SHAPES:-"1000x100 100x100"}
TRANSPORTS=${TRANSPORTS:-"ws tcp"}
SERVERS=${SERVERS:-"sockeye rabbitmq"}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
WS_PORT=${WS_PORT:-18080}
TCP_PORT=${TCP_PORT:-18613}
OUT=${OUT:-target/fanout/$(date +%Y%m%d-%H%M%S)}
if [ -n "$FLOOD" ]; then MD=${MD:-}; else MD=${MD:-benches/FANOUT.md}; fi
mkdir -p "$OUT/bin"
COMMAND=benches/scripts/fanout.sh
if [ $# -gt 0 ]; then COMMAND="$COMMAND$(printf ' %q' "$@")"; fi
if [ -n "$FLOOD" ]; then
    PACING="FLOOD=$FLOOD SLOW_CONSUMER=$SLOW_CONSUMER"
    LOADGEN_PACING=(--flood "$FLOOD" --slow-consumer "$SLOW_CONSUMER")
    SOCKEYE_POLICY=(--slow-consumer "$SLOW_CONSUMER")
else
    PACING="WINDOW=$WINDOW"
    LOADGEN_PACING=(--window "$WINDOW")
    SOCKEYE_POLICY=()
fi
SETTINGS="REPS=$REPS SECS=$SECS WARMUP=$WARMUP $PACING RATE=$RATE SHAPES=\"$SHAPES\" TRANSPORTS=\"$TRANSPORTS\" SERVERS=\"$SERVERS\""

REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo "?")
if [ -n "$(git status --porcelain --untracked-files=no -- engine chat 2>/dev/null)" ]; then
    REVISION="$REVISION (with uncommitted changes under engine/ or chat/)"
fi
echo "building (release)..." >&2
cargo build --release -q -p sockeye-chat --bin sockeye-chat
cargo build --release -q -p sockeye-benches --bin loadgen
# Copies: other builds in this tree may replace target/release binaries during the runs.
cp target/release/sockeye-chat target/release/loadgen "$OUT/bin/"
CHAT=$OUT/bin/sockeye-chat
# Load from one address at any rate: the per-session SEND rate and per-address session limits off.
UNLIMITED="--max-send-rate 0 --max-sessions-per-address 0 --max-sessions-per-user 0"
LOADGEN=$OUT/bin/loadgen

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
    for port in "$@"; do
        if port_open "$port"; then
            echo "port $port is already in use: stop whatever listens there first" >&2
            exit 1
        fi
    done
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

RABBIT_VERSION=
rabbit_started=
cleanup() {
    if [ -n "$rabbit_started" ]; then benches/scripts/rabbitmq.sh stop || true; fi
}
trap cleanup EXIT

RESULTS=$OUT/results.jsonl
: > "$RESULTS"

# run SERVER TRANSPORT SUBS SIZE REP
run() {
    local server=$1 transport=$2 subs=$3 size=$4 rep=$5 pid target log
    log=$OUT/$server-$transport-${subs}x$size-$rep.txt
    case $server in
        sockeye)
            ensure_free "$WS_PORT" "$TCP_PORT"
            RUST_LOG=warn taskset -c "$SERVER_CPU" "$CHAT" --listen "127.0.0.1:$WS_PORT" \
                --stomp-listen "127.0.0.1:$TCP_PORT" --data-dir off --workers 1 $UNLIMITED \
                "${SOCKEYE_POLICY[@]}" > "$OUT/server-$server.log" 2>&1 &
            pid=$!
            wait_listening "$WS_PORT"
            wait_listening "$TCP_PORT"
            case $transport in
                ws) target="--url ws://127.0.0.1:$WS_PORT/ws" ;;
                tcp) target="--addr 127.0.0.1:$TCP_PORT" ;;
            esac
            ;;
        rabbitmq)
            pid=$(RABBIT_CPU=$SERVER_CPU RABBIT_AUTOGROUP_NICE=$NICE benches/scripts/rabbitmq.sh start)
            rabbit_started=1
            if [ -z "$RABBIT_VERSION" ]; then
                RABBIT_VERSION=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo "?")
            fi
            case $transport in
                ws) target="--url ws://127.0.0.1:15674/ws" ;;
                tcp) target="--addr 127.0.0.1:61613" ;;
            esac
            ;;
    esac
    echo "== $server $transport ${subs}x$size run $rep" >&2
    # shellcheck disable=SC2086
    taskset -c "$LOADGEN_CPU" "$LOADGEN" fanout --transport "$transport" $target \
        --subs "$subs" --size "$size" --rate "$RATE" "${LOADGEN_PACING[@]}" --seconds "$SECS" \
        --warmup "$WARMUP" --server-pid "$pid" > "$log" 2>&1 || true
    sed -n '2,6p' "$log" >&2
    case $server in
        sockeye) stop_pid "$pid" ;;
        rabbitmq) benches/scripts/rabbitmq.sh stop; rabbit_started= ;;
    esac
    local result
    result=$(grep '^RESULT ' "$log" | tail -1 | cut -d' ' -f2-)
    if [ -n "$result" ]; then
        printf '{"server":"%s","transport":"%s","shape":"%sx%s","rep":%s,"result":%s}\n' \
            "$server" "$transport" "$subs" "$size" "$rep" "$result" >> "$RESULTS"
    else
        echo "no RESULT line in $log" >&2
    fi
}

for rep in $(seq "$REPS"); do
    for shape in $SHAPES; do
        subs=${shape%x*}
        size=${shape#*x}
        for transport in $TRANSPORTS; do
            for server in $SERVERS; do
                run "$server" "$transport" "$subs" "$size" "$rep"
            done
        done
    done
done

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MACHINE="$(nproc) cores ($CPU_MODEL), $(uname -sr), $(grep MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}') RAM"
TABLE=$OUT/table.md
python3 - "$RESULTS" "$SECS" "$WINDOW" "$RATE" "$FLOOD" "$SLOW_CONSUMER" > "$TABLE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
secs, window, rate, flood, policy = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
groups = {}
for r in rows:
    groups.setdefault((r["shape"], r["transport"], r["server"]), []).append(r["result"])

def med(results, key):
    vals = [x[key] for x in results if x.get(key) is not None]
    return statistics.median(vals) if vals else None

def fmt(v, unit="", digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}{unit}"

def ms(us):
    return None if us is None else us / 1000

order = []
for r in rows:
    k = (r["shape"], r["transport"])
    if k not in order:
        order.append(k)

print("| shape | transport | server | deliveries/s | p50 | p99 | lost / out of order | server CPU µs/delivery | load generator CPU | runs |")
print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
verdicts = []
for shape, transport in order:
    stats = {}
    for server in ("sockeye", "rabbitmq"):
        res = groups.get((shape, transport, server))
        if not res:
            continue
        lost = sum(x["lost"] for x in res)
        ooo = sum(x["out_of_order"] for x in res)
        errors = sum(x["errors"] for x in res)
        s = {
            "dps": med(res, "deliveries_per_sec"),
            "p50": ms(med(res, "p50_us")),
            "p99": ms(med(res, "p99_us")),
            "cpu": med(res, "server_cpu_us_per_delivery"),
            "lg": med(res, "loadgen_cpu_pct"),
            "lost": lost,
            "errors": errors,
        }
        stats[server] = s
        subs, size = shape.split("x")
        label = f"{int(subs):,} × {size} B"
        slow = sum(x.get("slow_disconnected", 0) for x in res)
        dropped = sum(x.get("dropped", 0) for x in res)
        loss = f"{lost} / {ooo}" + ("" if errors == lost + ooo else f" ({errors} errors)")
        if slow:
            loss += f" ({slow} disconnected as slow)"
        if dropped:
            loss += f" ({dropped} dropped by the drop policy)"
        print(f"| {label} | {transport.upper()} | {'Sockeye' if server == 'sockeye' else 'RabbitMQ'} "
              f"| {fmt(s['dps'])} | {fmt(s['p50'], ' ms', 1)} | {fmt(s['p99'], ' ms', 1)} "
              f"| {loss} | {fmt(s['cpu'], '', 2)} | {fmt(s['lg'], ' %')} | {len(res)} |")
    a, b = stats.get("sockeye"), stats.get("rabbitmq")
    if a and b and a["dps"] and b["dps"]:
        ratio = a["dps"] / b["dps"]
        cpu_ratio = (b["cpu"] / a["cpu"]) if a["cpu"] and b["cpu"] else None
        print(f"| | | **Sockeye / RabbitMQ** | **{ratio:.1f}×** | | | | **{fmt(cpu_ratio, '×', 1)}** less | | |")
        if shape.startswith("1000x"):
            ok_ratio = ratio >= 20
            ok_p99 = a["p99"] is not None and a["p99"] < 50
            ok_loss = a["errors"] == 0
            verdicts.append(
                f"- {shape.replace('x', ' subscribers × ')} B over {transport.upper()}: deliveries/s "
                f"{ratio:.1f}× RabbitMQ's (target ≥ 20×: {'met' if ok_ratio else 'missed, by %.1f×' % (20 / ratio)}); "
                f"Sockeye's p99 {fmt(a['p99'], ' ms', 1)} (target < 50 ms: {'met' if ok_p99 else 'missed'}); "
                f"loss and errors {a['errors']} (target none: {'met' if ok_loss else 'missed'})")
print()
pacing = (f"Publisher paced by its receipts alone (at most {flood} SENDs unreceipted), Sockeye "
          f"with --slow-consumer {policy}" if flood else
          f"Publisher window {window} messages at the slowest subscriber")
print(f"Medians of each run's figures; lost and out-of-order messages summed over the runs. "
      f"{pacing}"
      + (f", rate {rate} msg/s" if rate not in ("0", "0.0") else "")
      + f"; {secs} s measured per run. Server CPU is utime + stime of the server process "
      "(with the loopback receive work its sends trigger) over the measured seconds.")
if verdicts:
    print()
    print("Targets (1,000 subscribers × 100 B):")
    print()
    print("\n".join(verdicts))
PY

{
    echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'), $MACHINE; Sockeye at $REVISION;"
    echo "RabbitMQ ${RABBIT_VERSION:-not run} (Debian package); servers on CPU $SERVER_CPU, load generator on CPU $LOADGEN_CPU."
    echo
    echo '```sh'
    echo "$SETTINGS $COMMAND"
    echo '```'
    echo
    cat "$TABLE"
} > "$OUT/section.md"
cat "$OUT/section.md"

# Replace the results section of FANOUT.md, keeping the rest of the file.
if [ -z "$MD" ]; then
    echo "raw output and table: $OUT (a flood's table is not written into FANOUT.md)" >&2
    exit 0
fi
if [ -f "$MD" ] && grep -q '<!-- fanout:begin -->' "$MD"; then
    python3 - "$MD" "$OUT/section.md" <<'PY'
import sys
md, section = sys.argv[1], open(sys.argv[2]).read()
text = open(md).read()
head, rest = text.split("<!-- fanout:begin -->", 1)
_, tail = rest.split("<!-- fanout:end -->", 1)
open(md, "w").write(head + "<!-- fanout:begin -->\n" + section + "<!-- fanout:end -->" + tail)
PY
else
    {
        echo "# STOMP fan-out: Sockeye and RabbitMQ"
        echo
        echo "<!-- fanout:begin -->"
        cat "$OUT/section.md"
        echo "<!-- fanout:end -->"
    } > "$MD"
fi
echo "raw output: $OUT; table written to $MD" >&2
