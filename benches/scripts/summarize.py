#!/usr/bin/env python3
"""Summarizes compare.sh's results.jsonl: the median of each figure per shape and server, the
Sockeye/peer ratios, and the targets of issue 6 (met or missed, by how much)."""

import json
import statistics
import sys

SHAPES = {
    "d1": "100 conns × 16 B text, depth 1",
    "d16": "100 conns × 16 B text, depth 16",
    "large": "10 conns × 64 KiB binary, depth 1",
    "many": "1000 conns × 512 B text, depth 1",
    "idle": "15,000 idle connections (2 load generator processes, 16 source addresses)",
    "idle10k": "10,000 idle connections (2 load generator processes, 16 source addresses)",
}
ECHO = [
    ("msgs_per_sec", "messages/s", "{:,.0f}"),
    ("mb_per_sec", "MB/s (payload, one way)", "{:,.1f}"),
    ("server_cpu_us_per_msg", "server CPU µs/message", "{:.2f}"),
    ("server_cpu_pct", "server CPU %", "{:.0f}"),
    ("p50_us", "latency p50 µs", "{:,.0f}"),
    ("p99_us", "latency p99 µs", "{:,.0f}"),
    ("loadgen_cpu_pct", "load generator CPU %", "{:.0f}"),
    ("errors", "errors (all runs)", "{:.0f}"),
]
CONNS = [
    ("opened", "connections opened", "{:,.0f}"),
    ("open_secs", "time to open, s", "{:.2f}"),
    ("bytes_per_conn", "server bytes/connection", "{:,.0f}"),
    ("rss_holding_kib", "server RSS holding, KiB", "{:,.0f}"),
    ("rss_after_kib", "server RSS after close, KiB", "{:,.0f}"),
    ("errors", "errors (all runs)", "{:.0f}"),
]


def load(path):
    runs = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                runs.setdefault((r["shape"], r["server"]), []).append(r["result"])
    return runs


def figure(runs, key):
    if not runs:
        return None
    values = [r.get(key) for r in runs]
    if key == "errors":
        return float(sum(v or 0 for v in values))
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, f):
    return "–" if v is None else f.format(v)


def main(path):
    runs = load(path)
    servers = []
    for _, s in runs:
        if s not in servers:
            servers.append(s)
    # Ratios divide Sockeye's figures (the mio echo; else the first server run, e.g.
    # sockeye-tokio) by each other server's.
    subject = "sockeye" if "sockeye" in servers else servers[0]
    peers = [s for s in servers if s != subject]
    name = "Sockeye" if subject == "sockeye" else subject
    head = ["shape", "figure"] + servers + [f"{name}/{p}" for p in peers]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    med = {}
    for shape, title in SHAPES.items():
        if not any(k[0] == shape for k in runs):
            continue
        metrics = CONNS if shape.startswith("idle") else ECHO
        for i, (key, name, f) in enumerate(metrics):
            row = [f"**{title}**" if i == 0 else "", name]
            for s in servers:
                v = figure(runs.get((shape, s), []), key)
                med[(shape, s, key)] = v
                row.append(fmt(v, f))
            for p in peers:
                a, b = med.get((shape, subject, key)), med.get((shape, p, key))
                row.append("–" if key == "errors" or not a or not b else f"{a / b:.2f}")
            print("| " + " | ".join(row) + " |")
    print()
    targets(med)


def targets(med):
    def m(shape, server, key):
        return med.get((shape, server, key))

    fws = "fastwebsockets"
    checks = [
        ("100×16 B depth 1: messages/s ≥ fastwebsockets'", m("d1", "sockeye", "msgs_per_sec"),
         m("d1", fws, "msgs_per_sec"), 1.0, "≥"),
        ("100×16 B depth 1: server CPU/message ≤ 0.9× fastwebsockets'",
         m("d1", "sockeye", "server_cpu_us_per_msg"), m("d1", fws, "server_cpu_us_per_msg"),
         0.9, "≤"),
        ("100×16 B depth 16: messages/s ≥ 8× fastwebsockets' (same shape)",
         m("d16", "sockeye", "msgs_per_sec"), m("d16", fws, "msgs_per_sec"), 8.0, "≥"),
        ("100×16 B depth 16: server CPU/message ≤ 1/8 of fastwebsockets' (same shape)",
         m("d16", "sockeye", "server_cpu_us_per_msg"), m("d16", fws, "server_cpu_us_per_msg"),
         1 / 8, "≤"),
        ("10×64 KiB: MB/s ≥ 1.1× fastwebsockets'", m("large", "sockeye", "mb_per_sec"),
         m("large", fws, "mb_per_sec"), 1.1, "≥"),
        ("1000×512 B: server CPU/message ≤ fastwebsockets'",
         m("many", "sockeye", "server_cpu_us_per_msg"), m("many", fws, "server_cpu_us_per_msg"),
         1.0, "≤"),
        ("1000×512 B: Sockeye's p99 ≤ 3× its p50", m("many", "sockeye", "p99_us"),
         m("many", "sockeye", "p50_us"), 3.0, "≤"),
        ("15,000 idle: ≤ 256 bytes of server memory per connection",
         m("idle", "sockeye", "bytes_per_conn"), 256.0, 1.0, "≤"),
    ]
    print("| target | measured | met |")
    print("|---|---|---|")
    for name, a, b, factor, op in checks:
        if a is None or b is None or b == 0:
            print(f"| {name} | not measured | – |")
            continue
        ratio = a / b
        ok = ratio >= factor if op == "≥" else ratio <= factor
        if name.startswith("15,000"):
            shown = f"{a:,.0f} bytes"
        else:
            shown = f"{ratio:.3f}× (needs {op} {factor:.3g}×)"
        print(f"| {name} | {shown} | {'yes' if ok else 'no'} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "results.jsonl")
