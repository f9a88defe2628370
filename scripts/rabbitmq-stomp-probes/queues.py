"""Probes section 5 of scripts/RABBITMQ-STOMP.md: two subscriptions to one /queue (one
connection and two), the ack header, ACK, NACK with and without requeue, UNSUBSCRIBE with
unacked messages, redelivery when a connection closes, cumulative ack:client, stale ACKs."""
import time

from stomp_raw import C, ctl

for q in ("q5a", "q5b", "q5c", "q10"):
    ctl("delete_queue", q)


def msgs(c, t=0.7):
    out=[]
    for f in c.drain(t):
        if f != "CLOSED" and f[0]=="MESSAGE": out.append((f[1]["subscription"], f[2].decode(), f[1].get("redelivered"), f[1].get("ack")))
        elif f != "CLOSED": out.append(f[0])
    return out
print("== Q5a one connection, two subs to /queue/q5a, client-individual")
c = C(name="c")
c.send("SUBSCRIBE", {"destination": "/queue/q5a", "id": "A", "ack": "client-individual", "receipt": "1"}); c.recv()
c.send("SUBSCRIBE", {"destination": "/queue/q5a", "id": "B", "ack": "client-individual", "receipt": "2"}); c.recv()
p = C(name="p", log=False)
for i in range(6): p.send("SEND", {"destination": "/queue/q5a"}, f"m{i}")
got = msgs(c); print("deliveries:", [(s, b) for s, b, r, a in got])
print("ack header example:", got[0][3])
print("== ACK first, NACK (no requeue header) second, NACK requeue:false third")
c.log=True
c.send("ACK", {"id": got[0][3], "receipt": "ack"}); c.recv()
c.send("NACK", {"id": got[1][3], "receipt": "nack"}); 
print(msgs(c, 1.0))
c.send("NACK", {"id": got[2][3], "requeue": "false", "receipt": "nack2"});
print(msgs(c, 1.0))
print(ctl("list_queues", "name", "messages_ready", "messages_unacknowledged"))
print("== UNSUBSCRIBE A with unacked outstanding; is it redelivered to B?")
unacked_A = [g for g in got[3:] if g[0] == "A"]
print("unacked on A:", [g[1] for g in unacked_A])
c.send("UNSUBSCRIBE", {"id": "A", "receipt": "unsub"})
print(msgs(c, 2.0))
print(ctl("list_queues", "name", "messages_ready", "messages_unacknowledged"))
print("-- ACK after UNSUBSCRIBE of an A message:")
if unacked_A:
    c.send("ACK", {"id": unacked_A[0][3], "receipt": "late-ack"}); print(msgs(c, 1.0))
print(ctl("list_queues", "name", "messages_ready", "messages_unacknowledged"))
print("-- close connection: redelivered to a new subscriber?")
c.close(); time.sleep(0.5)
d = C(name="d")
d.send("SUBSCRIBE", {"destination": "/queue/q5a", "id": "D", "ack": "client-individual"})
print(msgs(d, 1.5))
d.close()
print("== Q5b two connections round robin")
x = C(name="x", log=False); y = C(name="y", log=False)
x.send("SUBSCRIBE", {"destination": "/queue/q5b", "id": "X", "ack": "client-individual", "receipt": "1"}); x.recv()
y.send("SUBSCRIBE", {"destination": "/queue/q5b", "id": "Y", "ack": "client-individual", "receipt": "1"}); y.recv()
for i in range(6): p.send("SEND", {"destination": "/queue/q5b"}, f"m{i}")
gx = msgs(x); gy = msgs(y); print("x:", [b for s,b,r,a in gx], "y:", [b for s,b,r,a in gy])
print("-- x closes with unacked")
x.close(); print("y gets:", msgs(y, 1.5))
y.close()
print("== Q5c ack:client (cumulative)")
c = C(name="c", log=False)
c.send("SUBSCRIBE", {"destination": "/queue/q5c", "id": "A", "ack": "client", "receipt": "1"}); c.recv()
for i in range(4): p.send("SEND", {"destination": "/queue/q5c"}, f"m{i}")
g = msgs(c); print([ (b,a) for s,b,r,a in g])
c.send("ACK", {"id": g[2][3], "receipt": "ack"}); c.recv()
print(ctl("list_queues", "name", "messages_ready", "messages_unacknowledged"))
print("== Q5d bad ACK id")
c.log=True
c.send("ACK", {"id": "bogus", "receipt": "bogus-ack"}); print(msgs(c, 1))
c.send("ACK", {"id": g[0][3], "receipt": "double-ack"}); print(msgs(c, 1))
