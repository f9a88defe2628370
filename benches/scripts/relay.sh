#!/usr/bin/env bash
# The STOMP broker relay against RabbitMQ direct: one publisher and 1,000 WebSocket subscribers
# of /topic/bench, (a) spread over two sockeye-chat nodes in relay mode (500 each, the
# publisher on node A; both nodes `--relay` to one private RabbitMQ, so each holds one upstream
# subscription of the topic and fans out locally), (b) all on RabbitMQ's Web-STOMP plugin
# directly, and for reference (c) one sockeye-chat node with its own broker, no relay, all
# 1,000 on it. The modes take turns, REPS times (the order reversed every other time), with a
# fresh RabbitMQ (and fresh nodes) per run; prints a markdown table of the medians with the
# ratio and writes it into benches/RELAY.md (between its result markers).
#
#   benches/scripts/relay.sh                                  # REPS=3, windows 4 and 64: about 10 minutes
#   REPS=1 SECS=3 WINDOWS=4 MD= benches/scripts/relay.sh      # a quick look, nothing written
#   MODES="relay rabbitmq" benches/scripts/relay.sh           # without the single node
#
# Pinning (2 cores): every server process (RabbitMQ and both nodes, or RabbitMQ alone) on CPU
# $SERVER_CPU (default 0), the load generator on CPU $LOADGEN_CPU (default 1): the server side
# has one core in either mode, and what the relay adds (two processes, the hops through
# RabbitMQ) is paid on that core. The publisher is paced by a window of W messages outstanding
# at the slowest subscriber (`loadgen fanout --window W`), the same W for both modes, for each W
# in $WINDOWS (default "4 64": 4 is FANOUT.md's choice; RabbitMQ does the same at any window,
# the relay more with more in flight, since a node then writes several messages per write).
# Message size $SIZE (100 B), $SUBS subscribers (1000), $WARMUP s (2) then $SECS s (10)
# measured. MODES (default "relay rabbitmq single"). Nodes run `sockeye-chat --relay stomp://guest:guest@...
# --data-dir off --stomp-listen off --workers 1` on ports $NODE_PORTS (18180 18181).
#
# Before the measured runs, one check run per mode (CHECK=0 to skip; its figures are not in the
# table, since rabbitmqctl and perf take CPU) reads mid-run from RabbitMQ how many consumers it
# holds, how many of them are subscriptions of /topic/bench (queues bound to amq.topic with the
# key "bench") and its STOMP connections; and, for 3 s, each server thread's user and system
# CPU (/proc) and the servers' write system calls and context switches (`perf stat`, if any).
#
# RabbitMQ: scripts/rabbitmq.sh (installs Debian's package if missing) with its own base
# ($RABBIT_BASE, default /tmp/sockeye-rabbitmq-relay) and node name, ports picked free. As in
# fanout.sh the script runs in a session of its own whose autogroup gets nice $NICE (default
# -20, needs root; NICE= to leave priorities alone), and so does RabbitMQ's. Raw output and
# RESULT lines under $OUT (default target/relay/<date>).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

NICE=${NICE--20}
if [ -n "$NICE" ] && [ -z "${RELAY_SESSION:-}" ] && [ -w /proc/self/autogroup ]; then
    export RELAY_SESSION=1
    exec setsid --wait "$ROOT/benches/scripts/relay.sh" "$@"
fi
if [ -n "$NICE" ] && [ -n "${RELAY_SESSION:-}" ]; then
    echo "$NICE" > /proc/self/autogroup 2>/dev/null || echo "could not set the autogroup nice" >&2
fi

REPS=${REPS:-3}
SECS=${SECS:-10}
WARMUP=${WARMUP:-2}
WINDOWS=${WINDOWS:-"4 64"}
SUBS=${SUBS:-1000}
SIZE=${SIZE:-100}
MODES=${MODES:-"relay rabbitmq single"}
CHECK=${CHECK:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOADGEN_CPU=${LOADGEN_CPU:-1}
NODE_PORTS=${NODE_PORTS:-"18180 18181"}
export RABBIT_BASE=${RABBIT_BASE:-/tmp/sockeye-rabbitmq-relay}
export RABBIT_NODE=${RABBIT_NODE:-sockeyerelay@localhost}
OUT=${OUT:-target/relay/$(date +%Y%m%d-%H%M%S)}
MD=${MD-benches/RELAY.md}
mkdir -p "$OUT/bin"
COMMAND=benches/scripts/relay.sh
if [ $# -gt 0 ]; then COMMAND="$COMMAND$(printf ' %q' "$@")"; fi
SETTINGS="REPS=$REPS SECS=$SECS WARMUP=$WARMUP WINDOWS=\"$WINDOWS\" SUBS=$SUBS SIZE=$SIZE MODES=\"$MODES\""
read -r PORT_A PORT_B <<< "$NODE_PORTS"

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
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    echo "pid $pid did not stop within 10 s: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

NODE_PIDS=()
rabbit_started=
stop_nodes() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do stop_pid "$pid"; done
    NODE_PIDS=()
}
stop_rabbit() {
    if [ -n "$rabbit_started" ]; then
        "$ROOT/scripts/rabbitmq.sh" stop 2>/dev/null || true
        rabbit_started=
    fi
}
cleanup() {
    stop_nodes
    stop_rabbit
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_rabbit() {
    local env
    env=$(RABBIT_CPU=$SERVER_CPU RABBIT_AUTOGROUP_NICE=$NICE "$ROOT/scripts/rabbitmq.sh" start)
    rabbit_started=1
    eval "$env"
}

# Established connections to port $1 from processes of this machine (the relays' pools).
connections_to() {
    ss -Htn state established "dport = :$1" 2>/dev/null | wc -l
}

# start_nodes N: N sockeye-chat nodes relaying to the running RabbitMQ, pinned; waits until
# every node's relay pool (4 connections) is connected.
start_nodes() {
    local n=$1 port
    local ports
    read -r -a ports <<< "$NODE_PORTS"
    ensure_free "${ports[@]:0:$n}"
    for port in "${ports[@]:0:$n}"; do
        RUST_LOG=warn taskset -c "$SERVER_CPU" "$CHAT" \
            --relay "stomp://guest:guest@127.0.0.1:$RABBIT_STOMP_PORT/" --data-dir off \
            --listen "127.0.0.1:$port" --stomp-listen off --workers 1 $UNLIMITED \
            > "$OUT/node-$port-$NODE_LOG.log" 2>&1 &
        NODE_PIDS+=("$!")
    done
    for port in "${ports[@]:0:$n}"; do wait_listening "$port"; done
    for _ in $(seq 100); do
        if [ "$(connections_to "$RABBIT_STOMP_PORT")" -ge $((4 * n)) ]; then
            sleep 0.2
            return 0
        fi
        sleep 0.1
    done
    echo "the nodes' relays did not connect to RabbitMQ within 10 s" >&2
    return 1
}

# What RabbitMQ holds mid-run: consumers, those of /topic/bench (queues bound to amq.topic
# with the key "bench", consumed), STOMP connections. The three rabbitmqctl at once.
rabbit_census() {
    local dir=$OUT/census-$1
    mkdir -p "$dir"
    "$ROOT/scripts/rabbitmq.sh" ctl -s list_consumers queue_name > "$dir/consumers" 2>&1 &
    "$ROOT/scripts/rabbitmq.sh" ctl -s list_bindings source_name routing_key destination_name \
        > "$dir/bindings" 2>&1 &
    "$ROOT/scripts/rabbitmq.sh" ctl -s list_stomp_connections session_id > "$dir/stomp" 2>&1 &
    wait
    local bench
    bench=$(awk -F'\t' '$1 == "amq.topic" && $2 == "bench" { print $3 }' "$dir/bindings" \
        | grep -cxFf - <(tr -d '"' < "$dir/consumers") || true)
    echo "$(wc -l < "$dir/consumers") $bench $(wc -l < "$dir/stomp")"
}

# threads_cpu SECONDS LABEL=PID...: each thread's user and system CPU over the next SECONDS,
# in % of one core, one JSON object per line (/proc/PID/task/TID/stat, fields 14 and 15).
threads_cpu() {
    python3 - "$@" <<'PY'
import json, os, sys, time
secs, procs = float(sys.argv[1]), [a.split("=", 1) for a in sys.argv[2:]]
tick = os.sysconf("SC_CLK_TCK")
def sample():
    out = {}
    for label, pid in procs:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                stat = open(f"/proc/{pid}/task/{tid}/stat").read()
            except OSError:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2:].split()
            out[(label, tid)] = (name, int(fields[11]), int(fields[12]))
    return out
a = sample()
time.sleep(secs)
b = sample()
threads = {}
for key, (name, u, s) in b.items():
    _, u0, s0 = a.get(key, (name, 0, 0))
    t = threads.setdefault((key[0], name), [0, 0])
    t[0] += u - u0
    t[1] += s - s0
for (label, name), (u, s) in sorted(threads.items()):
    if u + s:
        print(json.dumps({"process": label, "thread": name,
                          "user_pct": round(u / tick / secs * 100, 1),
                          "sys_pct": round(s / tick / secs * 100, 1)}))
PY
}

# probe MODE PIDS LABELS...: what the servers do mid-run (a check run): threads' CPU, write
# system calls and context switches (perf, when there is one), and RabbitMQ's census.
probe() {
    local mode=$1 pids=$2
    shift 2
    threads_cpu 3 "$@" > "$OUT/threads-$mode.jsonl" 2>/dev/null &
    if command -v perf > /dev/null; then
        perf stat -x, -e syscalls:sys_enter_writev,syscalls:sys_enter_write,syscalls:sys_enter_read,context-switches \
            -p "$pids" -o "$OUT/perf-$mode.csv" sleep 3 > /dev/null 2>&1 &
    fi
    if [ "$mode" != single ]; then
        echo "$mode $(rabbit_census "$mode")" >> "$CENSUS"
    fi
    wait
}

RESULTS=$OUT/results.jsonl
CENSUS=$OUT/census.txt
: > "$RESULTS"
: > "$CENSUS"

# run MODE WINDOW REP SECS [check]
run() {
    local mode=$1 window=$2 rep=$3 secs=$4 check=${5:-} log pids target subs_at=() labels
    log=$OUT/$mode-w$window-$rep.txt
    [ -z "$check" ] || log=$OUT/check-$mode.txt
    NODE_LOG=$mode-w$window-$rep
    [ "$mode" = single ] || start_rabbit
    case $mode in
        relay)
            start_nodes 2
            pids="$RABBIT_PID,${NODE_PIDS[0]},${NODE_PIDS[1]}"
            labels=("RabbitMQ=$RABBIT_PID" "node A=${NODE_PIDS[0]}" "node B=${NODE_PIDS[1]}")
            target=ws://127.0.0.1:$PORT_A/ws
            subs_at=(--subscribe-urls "ws://127.0.0.1:$PORT_A/ws,ws://127.0.0.1:$PORT_B/ws")
            ;;
        single)
            # One node, its own broker (as in FANOUT.md): no RabbitMQ.
            ensure_free "$PORT_A"
            RUST_LOG=warn taskset -c "$SERVER_CPU" "$CHAT" --data-dir off \
                --listen "127.0.0.1:$PORT_A" --stomp-listen off --workers 1 $UNLIMITED \
                > "$OUT/node-$PORT_A-$NODE_LOG.log" 2>&1 &
            NODE_PIDS+=("$!")
            wait_listening "$PORT_A"
            pids=${NODE_PIDS[0]}
            labels=("node=$pids")
            target=ws://127.0.0.1:$PORT_A/ws
            ;;
        rabbitmq)
            pids=$RABBIT_PID
            labels=("RabbitMQ=$RABBIT_PID")
            target=$RABBIT_WEB_STOMP_URL
            ;;
    esac
    echo "== $mode window $window ${check:+check }run $rep" >&2
    local census_pid=
    if [ -n "$check" ]; then
        # Early in the window: after the connections (SUBS / 2000 s), the warm-up and 1 s.
        (sleep "$(python3 -c "print($SUBS / 2000 + 1 + $WARMUP + 1)")"
            probe "$mode" "$pids" "${labels[@]}") &
        census_pid=$!
    fi
    taskset -c "$LOADGEN_CPU" "$LOADGEN" fanout --transport ws --url "$target" "${subs_at[@]}" \
        --subs "$SUBS" --size "$SIZE" --window "$window" --seconds "$secs" \
        --warmup "$WARMUP" --server-pid "$pids" > "$log" 2>&1 || true
    [ -z "$census_pid" ] || wait "$census_pid" || true
    sed -n '2p' "$log" >&2
    grep -E '^  (server|subscribers at|errors)' "$log" >&2 || true
    local t0=$SECONDS
    stop_nodes
    if [ $((SECONDS - t0)) -ge 3 ]; then echo "the nodes took $((SECONDS - t0)) s to stop" >&2; fi
    stop_rabbit
    [ -z "$check" ] || return 0
    local result
    result=$(grep '^RESULT ' "$log" | tail -1 | cut -d' ' -f2-)
    if [ -n "$result" ]; then
        printf '{"mode":"%s","window":%s,"rep":%s,"result":%s}\n' \
            "$mode" "$window" "$rep" "$result" >> "$RESULTS"
    else
        echo "no RESULT line in $log" >&2
    fi
}

if [ "$CHECK" = 1 ]; then
    for mode in $MODES; do
        run "$mode" "${WINDOWS%% *}" 0 8 check
    done
fi
for rep in $(seq "$REPS"); do
    # Alternate the order, so neither mode always runs first.
    order=$MODES
    if [ $((rep % 2)) = 0 ]; then order=$(echo "$MODES" | tr ' ' '\n' | tac | tr '\n' ' '); fi
    for window in $WINDOWS; do
        for mode in $order; do
            run "$mode" "$window" "$rep" "$SECS"
        done
    done
done

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
MACHINE="$(nproc) cores ($CPU_MODEL), $(uname -sr), $(grep MemTotal /proc/meminfo | awk '{printf "%.0f GiB", $2/1048576}') RAM"
RABBIT_VERSION=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo "?")
ERLANG_VERSION=$(dpkg-query -W -f '${Version}' erlang-base 2>/dev/null || echo "?")
RUSTC_VERSION=$(rustc --version | cut -d' ' -f2)
TABLE=$OUT/table.md
python3 - "$RESULTS" "$CENSUS" "$SECS" "$SUBS" "$SIZE" "$OUT" "$MODES" > "$TABLE" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
census = [l.split() for l in open(sys.argv[2]) if l.strip()]
secs, subs, size, out, all_modes = sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7].split()
NAMES = {"relay": "2 relay nodes + RabbitMQ", "rabbitmq": "RabbitMQ Web-STOMP direct",
         "single": "1 Sockeye node, own broker"}

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def fmt(v, unit="", digits=0):
    return "–" if v is None else f"{v:,.{digits}f}{unit}"

def ms(us):
    return None if us is None else us / 1000

groups = {}
for r in rows:
    groups.setdefault((r["window"], r["mode"]), []).append(r["result"])
windows = sorted({r["window"] for r in rows})
modes = [m for m in ("relay", "rabbitmq", "single") if any(r["mode"] == m for r in rows)]

print("| window | servers | deliveries/s | msg/s | p50 | p99 | p99 node A / node B | lost / out of order / errors | server CPU µs/delivery | RabbitMQ CPU | nodes' CPU | load generator CPU | deliveries/s of each run |")
print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
verdicts = []
for w in windows:
    stats = {}
    for mode in modes:
        res = groups.get((w, mode))
        if not res:
            continue
        each = [x.get("server_cpu_pct_each") or [] for x in res]
        if mode == "rabbitmq":
            rabbit, nodes = med([e[0] if e else None for e in each]), None
        elif mode == "relay":
            rabbit = med([e[0] if e else None for e in each])
            nodes = med([sum(e[1:]) if len(e) == 3 and None not in e else None for e in each])
        else:
            rabbit, nodes = None, med([e[0] if e else None for e in each])
        at = [x.get("subscribed_at") or [] for x in res]
        per_node = ""
        if mode == "relay":
            a = med([ms(t[0]["p99_us"]) if len(t) == 2 else None for t in at])
            b = med([ms(t[1]["p99_us"]) if len(t) == 2 else None for t in at])
            per_node = f"{fmt(a, ' ms', 1)} / {fmt(b, ' ms', 1)}"
        s = {
            "dps": med([x["deliveries_per_sec"] for x in res]),
            "mps": med([x["msgs_per_sec"] for x in res]),
            "p50": ms(med([x["p50_us"] for x in res])),
            "p99": ms(med([x["p99_us"] for x in res])),
            "cpu": med([x["server_cpu_us_per_delivery"] for x in res]),
            "lost": sum(x["lost"] for x in res),
            "ooo": sum(x["out_of_order"] for x in res),
            "errors": sum(x["errors"] for x in res),
            "subscribed": min(x["subscribed"] for x in res),
        }
        stats[mode] = s
        print(f"| {w} | {NAMES[mode]} | {fmt(s['dps'])} | {fmt(s['mps'])} | {fmt(s['p50'], ' ms', 1)} "
              f"| {fmt(s['p99'], ' ms', 1)} | {per_node} | {s['lost']} / {s['ooo']} / {s['errors']} "
              f"| {fmt(s['cpu'], '', 2)} | {fmt(rabbit, ' %')} | {fmt(nodes, ' %')} "
              f"| {fmt(med([x['loadgen_cpu_pct'] for x in res]), ' %')} "
              f"| {', '.join(fmt(x['deliveries_per_sec']) for x in res)} |")
    a, b = stats.get("relay"), stats.get("rabbitmq")
    if a and b and a["dps"] and b["dps"]:
        ratio = a["dps"] / b["dps"]
        cpu_ratio = (b["cpu"] / a["cpu"]) if a["cpu"] and b["cpu"] else None
        p99_ratio = (b["p99"] / a["p99"]) if a["p99"] and b["p99"] else None
        print(f"| {w} | **relay / RabbitMQ** | **{ratio:.1f}×** | | | {fmt(p99_ratio, '×', 1)} lower | | "
              f"| **{fmt(cpu_ratio, '×', 1)}** less | | | | |")
        ok_ratio = ratio >= 10
        ok_loss = a["errors"] == 0 and a["subscribed"] == subs
        verdicts.append(
            f"- window {w}: relay {fmt(a['dps'])} deliveries/s, {ratio:.1f}× RabbitMQ direct's "
            f"{fmt(b['dps'])} (target ≥ 10×: {'met' if ok_ratio else 'missed, by %.2f×' % (10 / ratio)}); "
            f"lost and errors {a['errors']} over {len(groups[(w, 'relay')])} runs "
            f"(target none: {'met' if ok_loss else 'missed'}); p99 {fmt(a['p99'], ' ms', 1)} "
            f"against {fmt(b['p99'], ' ms', 1)}")
print()
print(f"{subs:,} subscribers × {size} B, one publisher; medians of each run's figures, lost, "
      f"out-of-order and errors summed over the runs; {secs} s measured per run. Server CPU is "
      "utime + stime of every server process over the measured seconds (RabbitMQ and both nodes "
      "in relay mode) per delivery; RabbitMQ CPU and nodes' CPU in % of one core (the nodes "
      "summed). p99 node A / node B: the subscribers of each node alone (the publisher is on A).")
if census:
    print()
    print("What RabbitMQ held mid-run (check runs, `rabbitmqctl list_consumers`, `list_bindings`, "
          "`list_stomp_connections`):")
    print()
    for mode, consumers, bench, stomp in census:
        if mode == "relay":
            print(f"- relay: {consumers} consumers, {bench} of them subscriptions of /topic/bench "
                  f"(one per node), over {stomp} STOMP connections (the two nodes' pools); the "
                  f"others are the nodes' cluster topics")
        else:
            print(f"- RabbitMQ direct: {consumers} consumers, {bench} of them subscriptions of "
                  f"/topic/bench (Web-STOMP connections are not listed as STOMP connections: "
                  f"{stomp})")

# The check runs: each thread's CPU, write system calls and context switches, mid-run.
def check_dps(mode):
    try:
        lines = [l for l in open(f"{out}/check-{mode}.txt") if l.startswith("RESULT ")]
        return json.loads(lines[-1][7:])["deliveries_per_sec"] if lines else None
    except OSError:
        return None

def perf_counts(mode):
    counts = {}
    try:
        for line in open(f"{out}/perf-{mode}.csv"):
            f = line.strip().split(",")
            if len(f) > 2 and not line.startswith("#") and f[0].isdigit():
                counts[f[2].split(":")[-1]] = int(f[0]) / 3
    except OSError:
        pass
    return counts

probes = []
for mode in all_modes:
    path = f"{out}/threads-{mode}.jsonl"
    if not os.path.exists(path):
        continue
    threads = [json.loads(l) for l in open(path) if l.strip()]
    dps = check_dps(mode)
    perf = perf_counts(mode)
    writes = perf.get("sys_enter_writev", 0) + perf.get("sys_enter_write", 0)
    busy = [t for t in threads if t["user_pct"] + t["sys_pct"] >= 1]
    parts = ", ".join(f"{t['process']} `{t['thread']}` {t['user_pct']:.0f} % user + "
                      f"{t['sys_pct']:.0f} % system" for t in busy)
    line = f"- {NAMES[mode]}: {fmt(dps)} deliveries/s; threads (≥ 1 % of a core): {parts}"
    if writes and dps:
        line += (f"; {fmt(writes)} write system calls/s (write + writev), "
                 f"{dps / writes:.1f} deliveries per write, "
                 f"{fmt(perf.get('context-switches'))} context switches/s")
    probes.append(line)
if probes:
    print()
    print("Where the time goes (the check runs, 3 s early in the window: each server thread's CPU "
          "from /proc, system calls and context switches of the server processes from `perf stat`):")
    print()
    print("\n".join(probes))
if verdicts:
    print()
    print("Target (relay ≥ 10× RabbitMQ direct's deliveries/s, nothing lost):")
    print()
    print("\n".join(verdicts))
PY

{
    echo "Run on $(date -u '+%Y-%m-%d %H:%M UTC'), $MACHINE; Sockeye at $REVISION"
    echo "(rustc $RUSTC_VERSION, release); RabbitMQ $RABBIT_VERSION (Debian package, Erlang $ERLANG_VERSION);"
    echo "servers (RabbitMQ and both nodes) on CPU $SERVER_CPU, load generator on CPU $LOADGEN_CPU."
    echo
    echo '```sh'
    echo "$SETTINGS $COMMAND"
    echo '```'
    echo
    cat "$TABLE"
} > "$OUT/section.md"
cat "$OUT/section.md"

if [ -z "$MD" ]; then
    echo "raw output and table: $OUT" >&2
    exit 0
fi
if [ -f "$MD" ] && grep -q '<!-- relay:begin -->' "$MD"; then
    python3 - "$MD" "$OUT/section.md" <<'PY'
import sys
md, section = sys.argv[1], open(sys.argv[2]).read()
text = open(md).read()
head, rest = text.split("<!-- relay:begin -->", 1)
_, tail = rest.split("<!-- relay:end -->", 1)
open(md, "w").write(head + "<!-- relay:begin -->\n" + section + "<!-- relay:end -->" + tail)
PY
else
    {
        echo "# STOMP broker relay: two Sockeye nodes on RabbitMQ, and RabbitMQ direct"
        echo
        echo "<!-- relay:begin -->"
        cat "$OUT/section.md"
        echo "<!-- relay:end -->"
    } > "$MD"
fi
echo "raw output: $OUT; table written to $MD" >&2
