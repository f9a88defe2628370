#!/usr/bin/env python3
"""Writes the committed seed corpus: fuzz/corpus/TARGET/seed-NAME.

Each seed follows the input layout its target documents (fuzz/src/targets/*.rs). Run it again
after changing a layout; libFuzzer's own finds go next to the seeds and are not committed.
"""

import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
KEY = bytes([0x37, 0xFA, 0x21, 0x3D])


def masked(data, key=KEY):
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def frame(opcode, payload=b"", fin=True, key=None, rsv=0):
    """A frame; masked with `key` when given (what a client sends)."""
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if key is not None else 0
    n = len(payload)
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack(">Q", n)
    if key is not None:
        head += key
        payload = masked(payload, key)
    return bytes(head) + payload


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


def sized(sizes):
    return bytes([len(sizes)]) + bytes(sizes)


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def frame_header():
    t = "frame_header"
    write(t, "rfc-hello", bytes([0x81, 0x85]) + KEY + masked(b"Hello"))
    write(t, "len16", bytes([0x82, 0x7E, 0x01, 0x00]))
    write(t, "len64-masked", bytes([0x82, 0xFF]) + struct.pack(">Q", 1 << 16) + KEY)
    write(t, "non-minimal", bytes([0x02, 0x7E, 0x00, 0x05]))
    write(t, "overflow", bytes([0x82, 0x7F, 0x80]) + bytes(7))
    write(t, "reserved", bytes([0x7B, 0x00]))
    write(t, "close-empty", bytes([0x88, 0x80]) + KEY)
    write(t, "partial", bytes([0x81]))


def connection(role):
    t = "connection_" + role
    key = KEY if role == "server" else None
    f = lambda op, p=b"", fin=True, **kw: frame(op, p, fin, key, **kw)  # noqa: E731
    bye = f(0x8, close_payload(1000, b"bye"))
    write(t, "hello", b"\x00" + sized([]) + f(0x1, b"Hello") + bye)
    write(
        t,
        "fragments-ping",
        b"\x00"
        + sized([1, 7, 0x81, 3])
        + f(0x1, "κό".encode()[:3], fin=False)
        + f(0x9, b"ping")
        + f(0x0, "κόσμε".encode()[3:], fin=False)
        + f(0x0, b"", fin=False)
        + f(0x0, b"!")
        + f(0x2, bytes(range(200)))
        + f(0xA, b"pong")
        + bye,
    )
    write(t, "bad-utf8", b"\x00" + sized([5]) + f(0x1, b"ok\xf4\x90\x80\x80") + bye)
    wrong_mask = frame(0x2, b"data", True, None if role == "server" else KEY)
    write(t, "wrong-mask", b"\x00" + sized([2]) + wrong_mask + bye)
    write(t, "tiny-limits", b"\x02" + sized([0x90]) + f(0x2, bytes(300)) + bye)
    write(
        t,
        "too-many-fragments",
        b"\x02" + sized([2, 0]) + b"".join(f(0x0 if i else 0x2, b"x", fin=False) for i in range(10)),
    )
    write(
        t,
        "tiny-limits-fragments",
        b"\x02" + sized([0x83, 60]) + b"".join(f(0x0 if i else 0x2, bytes([i]) * 100, fin=i == 2) for i in range(3)) + bye,
    )
    # Structured (flags bit 2): frame descriptions, encoded by the target.
    def d(b0, payload, wrong=False):
        masked = (role == "server") != wrong
        return bytes([0x80 if wrong else 0, b0]) + struct.pack("<H", len(payload)) + payload + (KEY if masked else b"")

    write(
        t,
        "frames-fragments",
        b"\x06" + sized([0x85])
        + d(0x01, "κόσμε".encode() * 9)
        + d(0x89, b"ping")
        + d(0x00, b"a" * 100)
        + d(0x80, b"b" * 100)
        + d(0x88, close_payload(1000)),
    )
    write(
        t,
        "frames-raw-wrong-mask",
        b"\x04" + sized([3]) + d(0x82, bytes(range(200))) + bytes([0x40, 2, 0x81, 0x00]) + d(0x82, b"x", wrong=True),
    )
    write(t, "close-first", b"\x01" + sized([3]) + f(0x9, b"p") + bye)
    write(t, "bad-close", b"\x00" + sized([]) + f(0x8, close_payload(1005)))
    write(t, "rsv-opcode", b"\x00" + sized([]) + f(0x3, b"", rsv=4) + f(0x8))
    write(t, "long-ping", b"\x00" + sized([]) + f(0x9, bytes(126)) + bye)


REQUEST = (
    b"GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: https://chat.example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
)


def handshake():
    t = "handshake"
    write(t, "request", b"\x00" + REQUEST)
    write(t, "request-origins-protocols", b"\x30" + REQUEST)
    write(t, "request-version-8", b"\x00" + REQUEST.replace(b"Version: 13", b"Version: 8"))
    write(t, "request-post", b"\x00" + REQUEST.replace(b"GET", b"POST"))
    write(t, "request-small-head", b"\x03" + REQUEST)
    write(t, "request-few-headers", b"\x04" + REQUEST)
    write(t, "plain-http", b"\x00GET /index.html HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    write(t, "response", b"\x20" + RESPONSE)
    write(t, "response-404", b"\x00HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


def utf8():
    t = "utf8_incremental"
    write(t, "greek", sized([1, 1, 3]) + "κόσμε".encode())
    write(t, "astral", sized([2, 1]) + "a€b𝄞c".encode())
    write(t, "above-max", sized([1]) + b"\xf4\x90\x80\x80")
    write(t, "surrogate", sized([1, 2]) + b"ab\xed\xa0\x80cd")
    write(t, "overlong", sized([3]) + b"ab\xc0\xafcd")
    write(t, "truncated", sized([1]) + b"x\xe2\x82")
    write(t, "long", sized([0x81, 7]) + ("ascii and ünïcödé 𝄞 " * 20).encode())


def mask():
    t = "mask"
    head = lambda off, start, sizes: KEY + struct.pack("<I", off) + bytes([start]) + sized(sizes)  # noqa: E731
    write(t, "rfc", head(0, 0, []) + b"Hello")
    write(t, "unaligned", head(1, 3, [5, 101]) + bytes(range(256)) + bytes(44))
    write(t, "tails", head(0xFFFFFFFF, 7, [1, 2, 3, 4, 5, 6, 7, 8, 9]) + bytes(range(100)))


def roundtrip():
    t = "roundtrip"
    seed = struct.pack("<Q", 42)

    def msg(op, payload):
        return bytes([op]) + struct.pack("<H", len(payload)) + payload

    ops = (
        msg(0x04, "héllo".encode())  # text, one frame
        + msg(0x00, bytes(range(256)))  # binary, one frame
        + msg(0x02, b"ping")
        + msg(0x03, b"pong")
        # text in 4 fragments with a ping after the second; cuts inside code points
        + msg(0x1D, "κόσμε𝄞".encode())
        + bytes([1, 0x83, 0, 0])
        # binary in 2 fragments, empty payload
        + msg(0x09, b"")
        + bytes([0, 0])
    )
    write(t, "client-mixed", b"\x00" + seed + sized([]) + ops)
    write(t, "server-mixed-close", b"\x03" + seed + sized([1, 0x82]) + bytes([0]) + bytes([3]) + b"bye" + ops)
    write(t, "invalid-text", b"\x02" + seed + sized([7]) + bytes([5]) + bytes([0]) + msg(0x04, b"\xff\xfe ok \xc3"))
    many = b"".join(msg(0x00, bytes([i])) for i in range(70))  # > 64 keys: refills the pool
    large = bytes([0x0C]) + struct.pack("<H", 3) + "é!".encode() + struct.pack("<H", 1000)
    write(t, "large-text", b"\x00" + seed + sized([0xFF, 0x81]) + large + msg(0x02, b"after"))
    write(t, "many-frames", b"\x00" + seed + sized([3]) + many)


def inflate():
    """Seeds of the inflate target: flags, piece sizes, then (op, u16 length, bytes) messages."""
    t = "inflate"
    import zlib

    def deflate(data):
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]

    def msg(op, data):
        return bytes([op]) + struct.pack("<H", len(data)) + data

    json = b'{"roomId":"general-1","type":"TALK","message":"hello hello hello"}'
    write(t, "valid-text", b"\x00" + sized([3, 0x81]) + msg(0x03, json) + msg(0x0F, json * 4))
    write(t, "takeover", b"\x01" + sized([1]) + msg(0x03, json) + msg(0x03, json) + msg(0x13, b"plain"))
    write(t, "rfc-hello-raw", b"\x00" + sized([]) + msg(0x02, bytes.fromhex("f248cdc9c90700")))
    write(t, "stored-block-raw", b"\x00" + sized([2]) + msg(0x02, bytes.fromhex("000500faff48656c6c6f")))
    write(t, "bomb-raw", b"\x02" + sized([0x90]) + msg(0x00, deflate(bytes(100000))))
    write(t, "bad-data", b"\x00" + sized([]) + msg(0x00, b"\xff\xff\xff") + msg(0x01, b"after"))
    write(t, "invalid-utf8-raw", b"\x00" + sized([1]) + msg(0x02, deflate(b"caf\xc3 ok")))


def broker():
    """Steps of three bytes (op, slot, arg), see fuzz/src/targets/broker.rs. A slot's first
    step connects it, whatever its op."""
    t = "broker"

    def arg(pred):
        return next(a for a in range(256) if pred(a))

    def subscribe(slot, sid, dest, ack):
        return bytes([0, slot, arg(lambda a: a % 3 == sid and (a >> 2) % 5 == dest and (a >> 5) % 3 == ack)])

    def send(slot, dest, tx=None):
        return bytes([2, slot, arg(lambda a: a % 4 == dest and ((a & 0x80 != 0) == (tx is not None))
                                   and (tx is None or (a >> 5) & 1 == tx))])

    def ack(slot, nack=False, pick=0, tx=None):
        return bytes([5 if nack else 4, slot, arg(lambda a: a & 0x40 == 0 and a % 64 >= pick
                                                  and ((a & 0x80 != 0) == (tx is not None))
                                                  and (tx is None or (a >> 5) & 1 == tx))])

    def tx(slot, what, t):
        return bytes([6, slot, arg(lambda a: a & 1 == t and (a >> 1) % 3 == what)])

    connect = b"".join(bytes([0, s, 0]) for s in range(4))
    # Competing consumers on /queue/a (client, client-individual, auto), sends, ACK and NACK.
    write(t, "queue-acks", connect + subscribe(0, 0, 0, 1) + subscribe(1, 0, 0, 2)
          + subscribe(2, 0, 0, 0) + send(3, 0) * 6 + ack(0) + ack(1, nack=True) + ack(1)
          + send(3, 0) * 4 + bytes([7, 0, 0]) + ack(1) * 3 + bytes([7, 1, 1]))
    # A transaction of sends and an ACK, committed; another aborted; a queue pattern.
    write(t, "transactions", connect + subscribe(0, 1, 2, 1) + tx(3, 0, 0) + send(3, 1, 0) * 3
          + send(3, 0, 0) + tx(3, 1, 0) + ack(0, tx=None) + tx(0, 0, 1) + ack(0, pick=1, tx=1)
          + tx(0, 1, 1) + tx(3, 0, 1) + send(3, 1, 1) + tx(3, 2, 1) + bytes([7, 0, 0]))
    # Nobody can take more: held, dropped past four; then a subscriber drains them.
    write(t, "held", connect + send(3, 1) * 9 + subscribe(0, 2, 1, 2) + ack(0) * 4
          + subscribe(1, 0, 4, 0) + send(2, 3) + subscribe(2, 1, 3, 0) + send(2, 2))
    import random
    r = random.Random(6455)
    for n in range(4):
        write(t, f"random-{n}", bytes(r.randrange(256) for _ in range(1200)))


if __name__ == "__main__":
    frame_header()
    connection("server")
    connection("client")
    handshake()
    utf8()
    mask()
    roundtrip()
    inflate()
    broker()
