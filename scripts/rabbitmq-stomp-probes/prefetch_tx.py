"""Probes sections 6 and 7 of scripts/RABBITMQ-STOMP.md: prefetch-count (and that it is
per connection), several transactions at once on one connection, unknown transactions, ACK
inside a transaction."""
from stomp_raw import C, ctl

for q in ("q6", "q6b", "q7"):
    ctl("delete_queue", q)


def msgs(c, t=0.7):
    out=[]
    for f in c.drain(t):
        if f != "CLOSED" and f[0]=="MESSAGE": out.append((f[1]["subscription"], f[2].decode(), f[1].get("ack")))
        elif f != "CLOSED": out.append(f[0])
        else: out.append("CLOSED")
    return out
p = C(name="p", log=False)
print("== Q6 prefetch-count:2, client-individual, 10 messages")
c = C(name="c", log=False)
c.send("SUBSCRIBE", {"destination": "/queue/q6", "id": "A", "ack": "client-individual", "prefetch-count": "2", "receipt": "1"}); c.recv()
for i in range(10): p.send("SEND", {"destination": "/queue/q6"}, f"m{i}")
g = msgs(c); print("delivered before ack:", [b for s,b,a in g])
c.send("ACK", {"id": g[0][2]}); g2 = msgs(c); print("after 1 ACK:", [b for s,b,a in g2])
print("-- second subscription on the same connection, no prefetch-count header, queue q6b")
c.send("SUBSCRIBE", {"destination": "/queue/q6b", "id": "B", "ack": "client-individual", "receipt": "2"}); c.recv()
for i in range(10): p.send("SEND", {"destination": "/queue/q6b"}, f"n{i}")
g = msgs(c); print("B delivered:", [b for s,b,a in g])
print(ctl("list_consumers", "queue_name", "consumer_tag", "ack_required", "prefetch_count"))
c.close()
print("== Q7 transactions on one connection, two tx ids")
c = C(name="c")
s = C(name="s", log=False)
s.send("SUBSCRIBE", {"destination": "/topic/tx", "id": "S", "receipt": "1"}); s.recv()
c.send("BEGIN", {"transaction": "tx1"}); c.send("BEGIN", {"transaction": "tx2"})
c.send("SEND", {"destination": "/topic/tx", "transaction": "tx1", "receipt": "s1"}, "tx1-a")
c.send("SEND", {"destination": "/topic/tx", "transaction": "tx2", "receipt": "s2"}, "tx2-a")
c.send("SEND", {"destination": "/topic/tx"}, "no-tx")
c.send("SEND", {"destination": "/topic/tx", "transaction": "tx1"}, "tx1-b")
print(" subscriber before commit:", msgs(s))
print(" sender:", msgs(c))
c.send("COMMIT", {"transaction": "tx1", "receipt": "c1"}); print(" sender:", msgs(c))
print(" subscriber after COMMIT tx1:", msgs(s))
c.send("ABORT", {"transaction": "tx2", "receipt": "a2"}); print(" sender:", msgs(c))
print(" subscriber after ABORT tx2:", msgs(s))
print("-- BEGIN twice same id, COMMIT unknown id, SEND in unknown tx")
c.send("BEGIN", {"transaction": "tx3", "receipt": "b3"}); c.send("BEGIN", {"transaction": "tx3", "receipt": "b3b"}); print(msgs(c))
c.send("COMMIT", {"transaction": "nope", "receipt": "cn"}); print(msgs(c))
c.send("SEND", {"destination": "/topic/tx", "transaction": "nope2", "receipt": "sn"}, "x"); print(msgs(c))
c.send("SUBSCRIBE", {"destination": "/topic/alive", "id": "alive", "receipt": "alive?"}); print(msgs(c))
print("-- ACK inside a transaction")
c = C(name="c2")
c.send("SUBSCRIBE", {"destination": "/queue/q7", "id": "Q", "ack": "client-individual", "receipt": "1"}); c.recv()
p.send("SEND", {"destination": "/queue/q7"}, "q7-1")
g = msgs(c)
c.send("BEGIN", {"transaction": "t"}); c.send("ACK", {"id": g[0][2], "transaction": "t", "receipt": "ack-in-tx"}); print(msgs(c))
print(ctl("list_queues", "name", "messages_ready", "messages_unacknowledged"))
c.send("ABORT", {"transaction": "t", "receipt": "abort"}); print(msgs(c))
print(ctl("list_queues", "name", "messages_ready", "messages_unacknowledged"))
c.send("BEGIN", {"transaction": "t2"}); c.send("ACK", {"id": g[0][2], "transaction": "t2"}); c.send("COMMIT", {"transaction": "t2", "receipt": "commit"}); print(msgs(c))
print(ctl("list_queues", "name", "messages_ready", "messages_unacknowledged"))
