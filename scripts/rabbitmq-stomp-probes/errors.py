"""Probes section 10 of scripts/RABBITMQ-STOMP.md: which client mistakes make RabbitMQ send an
ERROR, and which close the whole connection. Each case runs on a fresh connection, followed by
SUBSCRIBE{receipt:alive}: OPEN means the receipt came, CLOSED that the socket closed."""
import time

from stomp_raw import C, ctl, frame

# /queue/probe-args exists with x-max-length 1, /queue/probe-plain without arguments.
for q in ("probe-args", "probe-plain", "q10"):
    ctl("delete_queue", q)
_c = C(log=False)
_c.send("SUBSCRIBE", {"destination": "/queue/probe-args", "id": "a", "x-max-length": "1"})
_c.send("SUBSCRIBE", {"destination": "/queue/probe-plain", "id": "b", "receipt": "r"})
_c.recv()
_c.close()

F = frame
def stale_ack(c):
    c.send("SUBSCRIBE", {"destination": "/queue/q10", "id": "a", "ack": "client-individual", "receipt": "s"}); c.recv()
    c.send("SEND", {"destination": "/queue/q10"}, "m"); f = c.recv()
    c.send("ACK", {"id": f[1]["ack"], "receipt": "first-ack"}); c.recv()
    return F("ACK", {"id": f[1]["ack"]})
def stale_nack(c):
    raw = stale_ack(c); return raw.replace(b"ACK", b"NACK", 1)
def dup_sub(c):
    c.send("SUBSCRIBE", {"destination": "/topic/d", "id": "dup", "receipt": "s"}); c.recv()
    return F("SUBSCRIBE", {"destination": "/topic/d2", "id": "dup"})
def pre_lim(c):
    return F("SEND", {"destination": "/queue/probe-args"}, "x")
def qargs(c):
    return F("SUBSCRIBE", {"destination": "/queue/probe-plain", "id": "qa", "x-max-length": "5"})
cases = [
  ("SEND /topic/a/b", F("SEND", {"destination": "/topic/a/b"}, "x")),
  ("SUBSCRIBE /topic/a/b", F("SUBSCRIBE", {"destination": "/topic/a/b", "id": "1"})),
  ("SEND /topic/a%2Fb", F("SEND", {"destination": "/topic/a%2Fb"}, "x")),
  ("SEND /queue/a%2Fb", F("SEND", {"destination": "/queue/a%2Fb"}, "x")),
  ("SEND /queue/ (empty name)", F("SEND", {"destination": "/queue/"}, "x")),
  ("SEND /topic/ (empty)", F("SEND", {"destination": "/topic/"}, "x")),
  ("SEND /queue/a b (space)", F("SEND", {"destination": "/queue/a b"}, "x")),
  ("SEND /topic/a b (space)", F("SEND", {"destination": "/topic/a b"}, "x")),
  ("SEND /topic/caf\u00e9 (utf-8)", F("SEND", {"destination": "/topic/caf\u00e9"}, "x")),
  ("SEND /queue/ + 300 chars", F("SEND", {"destination": "/queue/" + "q" * 300}, "x")),
  ("SEND /topic/ + 300 chars", F("SEND", {"destination": "/topic/" + "t" * 300}, "x")),
  ("SUBSCRIBE /topic/ + 300 chars", F("SUBSCRIBE", {"destination": "/topic/" + "t" * 300, "id": "l"})),
  ("SEND /foo/x (unknown prefix)", F("SEND", {"destination": "/foo/x"}, "x")),
  ("SEND x (no prefix)", F("SEND", {"destination": "x"}, "x")),
  ("SEND without destination", F("SEND", {}, "x")),
  ("SUBSCRIBE without id", F("SUBSCRIBE", {"destination": "/topic/noid"})),
  ("SUBSCRIBE duplicate id", dup_sub),
  ("SUBSCRIBE ack:bogus", F("SUBSCRIBE", {"destination": "/topic/ab", "id": "ab", "ack": "bogus"})),
  ("SUBSCRIBE prefetch-count:abc", F("SUBSCRIBE", {"destination": "/queue/pf", "id": "pf", "prefetch-count": "abc"})),
  ("UNSUBSCRIBE unknown id", F("UNSUBSCRIBE", {"id": "nope"})),
  ("UNSUBSCRIBE without id", F("UNSUBSCRIBE", {})),
  ("ACK bogus id", F("ACK", {"id": "bogus"})),
  ("ACK well-formed unknown id", F("ACK", {"id": "T_zz@@session-abc@@99"})),
  ("ACK already acked (stale)", stale_ack),
  ("NACK already acked (stale)", stale_nack),
  ("SEND with message-id header", F("SEND", {"destination": "/topic/x", "message-id": "m"}, "x")),
  ("SEND user-id other than login", F("SEND", {"destination": "/topic/x", "user-id": "bob"}, "x")),
  ("SEND to /queue with other args (inequivalent)", pre_lim),
  ("SUBSCRIBE existing /queue/x with x-max-length", qargs),
  ("SEND /exchange/nosuch/x", F("SEND", {"destination": "/exchange/nosuch/x"}, "x")),
  ("SUBSCRIBE /exchange/nosuch/x", F("SUBSCRIBE", {"destination": "/exchange/nosuch/x", "id": "e"})),
  ("SEND /amq/queue/nosuch", F("SEND", {"destination": "/amq/queue/nosuch"}, "x")),
  ("SUBSCRIBE /amq/queue/nosuch", F("SUBSCRIBE", {"destination": "/amq/queue/nosuch", "id": "aq"})),
  ("COMMIT unknown tx", F("COMMIT", {"transaction": "nope"})),
  ("BEGIN without transaction", F("BEGIN", {})),
  ("unknown command FOO", F("FOO", {"a": "b"})),
  ("header line without colon", b"SEND\ndestination:/topic/x\nnocolon\n\nx\0"),
  ("content-length too short", b"SEND\ndestination:/topic/x\ncontent-length:1\n\nxyz\0"),
  ("bad escape \\t in header", b"SEND\ndestination:/topic/x\nx-h:a\\tb\n\nx\0"),
  ("SEND expires:abc", F("SEND", {"destination": "/topic/x", "expires": "abc"}, "x")),
  ("SEND priority:abc", F("SEND", {"destination": "/topic/x", "priority": "abc"}, "x")),
  ("SEND persistent:maybe", F("SEND", {"destination": "/topic/x", "persistent": "maybe"}, "x")),
  ("SEND body 5 MiB", F("SEND", {"destination": "/topic/x"}, b"b" * (5 << 20))),
  ("second CONNECT", F("CONNECT", {"accept-version": "1.2", "host": "/"})),
]
for name, frame in cases:
    c = C(name="c", log=False)
    if callable(frame): frame = frame(c)
    c.buf = b""
    try:
        c.rawsend(frame)
        time.sleep(0.3)
        c.rawsend(F("SUBSCRIBE", {"destination": "/topic/alive", "id": "alive-probe", "receipt": "alive"}))
    except (BrokenPipeError, ConnectionResetError):
        pass
    raw = c.raw(2.0)
    errs = []
    for part in raw.split(b"ERROR\n")[1:]:
        head, _, body = part.partition(b"\n\n")
        msg = [l for l in head.split(b"\n") if l.startswith(b"message:")]
        errs.append((msg[0][8:].decode() if msg else "?") + " | " + body.split(b"\0")[0].decode(errors="replace").strip().replace("\n", " ")[:90])
    alive = b"receipt-id:alive" in raw
    closed = raw.endswith(b"<CLOSED>")
    status = "OPEN (receipt)" if alive else ("CLOSED" if closed else "no receipt, open")
    print(f"{name:48s} => {status:16s} {errs}")
    c.close()
