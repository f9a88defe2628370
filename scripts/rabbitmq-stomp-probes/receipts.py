"""Probes section 4 of scripts/RABBITMQ-STOMP.md: whether RECEIPTs keep frame order, SEND
receipts after publisher confirms (and what a nack does), DISCONNECT's receipt, and whether a
SUBSCRIBE is bound when its RECEIPT (or, on the same connection, the next SEND) arrives."""
import re
import time
import uuid

from stomp_raw import C, ctl

BIG = "x" * 65536


def order(label, frames):
    c = C(log=False)
    exp = []
    for cmd, h, b in frames:
        c.send(cmd, h, b)
        exp.append(h["receipt"])
    got = []
    while len(got) < len(exp):
        f = c.recv(5)
        if f is None or f == "CLOSED":
            break
        if f[0] == "RECEIPT":
            got.append(f[1]["receipt-id"])
    inv = sum(1 for i in range(len(got)) for j in range(i + 1, len(got))
              if exp.index(got[i]) > exp.index(got[j]))
    print(f"{label}: {len(got)}/{len(exp)} receipts, in order: {got == exp}, "
          f"inverted pairs: {inv}; first 12: {got[:12]}")
    c.close()


def psend(i):
    return ("SEND", {"destination": "/queue/probe-persist", "persistent": "true",
                     "receipt": f"P{i}"}, BIG)


def tsend(i):
    return ("SEND", {"destination": "/topic/nobody", "receipt": f"T{i}"}, "x")


def sub(i):
    return ("SUBSCRIBE", {"destination": f"/topic/o{i}", "id": f"s{i}", "receipt": f"S{i}"}, "")


print("== receipt order")
order("persistent queue SEND, SUBSCRIBE x50", [f for i in range(50) for f in (psend(i), sub(i))])
order("persistent queue SEND, topic SEND x50", [f for i in range(50) for f in (psend(i), tsend(i))])
order("topic SENDs x200", [tsend(i) for i in range(200)])
order("topic SEND, SUBSCRIBE x100", [f for i in range(100) for f in (tsend(i), sub(i))])
order("persistent queue SENDs x100", [psend(i) for i in range(100)])
ctl("purge_queue", "probe-persist")

print("== DISCONNECT with receipt after 20 persistent SENDs with receipts")
c = C(log=False)
for i in range(20):
    c.send(*psend(i))
c.send("DISCONNECT", {"receipt": "bye"})
print([r.decode() for r in re.findall(rb"receipt-id:(\w+)", c.raw(3))])
time.sleep(1)
print([line for line in ctl("list_queues", "name", "messages").splitlines()
       if line.startswith("probe-persist")])
ctl("purge_queue", "probe-persist")

print("== publisher nack: policy max-length 1, overflow reject-publish")
c = C(log=False)
c.send("SUBSCRIBE", {"destination": "/queue/probe-limited", "id": "x", "receipt": "r"})
c.recv()
c.close()
ctl("set_policy", "probe-lim", "^probe-limited$", '{"max-length":1,"overflow":"reject-publish"}',
    "--apply-to", "queues")
time.sleep(1)
c = C(name="a")
for i in range(3):
    c.send("SEND", {"destination": "/queue/probe-limited", "receipt": f"r{i}"}, f"m{i}")
print(c.raw(2))
c = C(name="b")
c.send("SEND", {"destination": "/queue/probe-limited"}, "no receipt")
c.send("SUBSCRIBE", {"destination": "/topic/alive", "id": "alive", "receipt": "alive"})
print(c.raw(2))
ctl("clear_policy", "probe-lim")
ctl("delete_queue", "probe-limited")

print("== SUBSCRIBE's RECEIPT, then SEND on another connection, 200 times")
a = C(name="a", log=False)
b = C(name="b", log=False)
miss = 0
for i in range(200):
    t = f"/topic/rc{uuid.uuid4().hex[:8]}"
    a.send("SUBSCRIBE", {"destination": t, "id": f"x{i}", "receipt": f"r{i}"})
    assert a.recv(2)[0] == "RECEIPT"
    b.send("SEND", {"destination": t}, "m")
    f = a.recv(2)
    miss += not f or f[0] != "MESSAGE"
    a.send("UNSUBSCRIBE", {"id": f"x{i}"})
print("missed:", miss, "of 200")
print("== same connection: SUBSCRIBE (no receipt) then SEND at once, 200 times; one write")
miss = miss1 = 0
for i in range(200):
    t = f"/topic/sc{uuid.uuid4().hex[:8]}"
    a.send("SUBSCRIBE", {"destination": t, "id": f"y{i}"})
    a.send("SEND", {"destination": t}, "m")
    f = a.recv(2)
    miss += not f or f[0] != "MESSAGE"
    a.send("UNSUBSCRIBE", {"id": f"y{i}"})
    t = f"/topic/sw{uuid.uuid4().hex[:8]}"
    a.rawsend(f"SUBSCRIBE\ndestination:{t}\nid:z{i}\n\n\0SEND\ndestination:{t}\n\nm\0".encode())
    f = a.recv(2)
    miss1 += not f or f[0] != "MESSAGE"
    a.send("UNSUBSCRIBE", {"id": f"z{i}"})
print("missed:", miss, "of 200; in one write:", miss1, "of 200")
print("== UNSUBSCRIBE then SEND on the same connection, 200 times")
late = 0
for i in range(200):
    t = f"/topic/us{uuid.uuid4().hex[:8]}"
    a.send("SUBSCRIBE", {"destination": t, "id": f"w{i}", "receipt": "rs"})
    a.recv(2)
    a.send("UNSUBSCRIBE", {"id": f"w{i}"})
    a.send("SEND", {"destination": t, "receipt": "rx"}, "m")
    f = a.recv(2)
    if f and f[0] == "MESSAGE":
        late += 1
        a.recv(2)
print("messages after UNSUBSCRIBE:", late, "of 200")
