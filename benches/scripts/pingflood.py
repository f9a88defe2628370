#!/usr/bin/env python3
"""Unread pings against a running Sockeye server: memory and the other sessions.

A client sends --mib MiB of pings (125-byte payloads, masked) and never reads. The server may
answer each with a pong only while it has room: reading stops once more than half of its
max_backpressure is queued, so its resident memory should grow by at most the cap plus one read
buffer, and another session's echoes should not slow down. Prints one line of figures.

    benches/scripts/pingflood.py --pid PID --url ws://127.0.0.1:9001/ [--mib 200]

Loopback only; every socket operation has a timeout.
"""

import argparse
import base64
import os
import socket
import struct
import sys
import time
from urllib.parse import urlparse


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def frame(opcode, payload):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def connect(url, timeout):
    u = urlparse(url)
    host, port = u.hostname, u.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("loopback targets only")
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET {u.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            sys.exit("the server closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        sys.exit(f"handshake refused: {head[:80]!r}")
    return s, head.split(b"\r\n\r\n", 1)[1]


def read_exact(s, n, buf):
    while len(buf) < n:
        chunk = s.recv(65536)
        if not chunk:
            raise EOFError("closed")
        buf += chunk
    return buf[:n], buf[n:]


def echo_round(url, count):
    s, buf = connect(url, 5)
    start = time.monotonic()
    for i in range(count):
        msg = f"echo {i}".encode()
        s.sendall(frame(0x1, msg))
        while True:
            head, buf = read_exact(s, 2, buf)
            n = head[1] & 0x7F
            if n == 126:
                ext, buf = read_exact(s, 2, buf)
                n = struct.unpack(">H", ext)[0]
            elif n == 127:
                ext, buf = read_exact(s, 8, buf)
                n = struct.unpack(">Q", ext)[0]
            payload, buf = read_exact(s, n, buf)
            if head[0] & 0x0F == 0x1:
                assert payload == msg, "echoed text"
                break
    took = time.monotonic() - start
    s.sendall(frame(0x8, struct.pack(">H", 1000)))
    s.close()
    return took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--url", default="ws://127.0.0.1:9001/")
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    alone = echo_round(a.url, 200)
    flooder, _ = connect(a.url, 2)
    flooder.settimeout(2)
    ping = frame(0x9, b"*" * 125)
    chunk = ping * (1 << 20 // len(ping) + 1)
    offered = a.mib << 20
    before = rss_bytes(a.pid)
    sent = 0
    while sent < offered:
        try:
            sent += flooder.send(chunk[: min(len(chunk), offered - sent)])
        except (socket.timeout, BlockingIOError):
            break
    time.sleep(0.5)
    after = rss_bytes(a.pid)
    during = echo_round(a.url, 200)
    # Still open, held with reading paused? A peek that times out means no close came.
    flooder.settimeout(0.5)
    try:
        state = "closed by the server" if flooder.recv(1, socket.MSG_PEEK) == b"" else "open"
    except socket.timeout:
        state = "open"
    except OSError as e:
        state = f"closed ({e})"
    flooder.close()
    print(
        f"pingflood{(' ' + a.label) if a.label else ''}: {sent / 2**20:.1f} MiB taken of "
        f"{a.mib} MiB offered; server RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB "
        f"(+{(after - before) / 2**20:.2f} MiB); flooding connection {state} (pongs unread); "
        f"200 echoes on another session: {alone * 1000:.1f} ms before, {during * 1000:.1f} ms during"
    )


if __name__ == "__main__":
    main()
