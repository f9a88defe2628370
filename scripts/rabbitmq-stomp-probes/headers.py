"""Probes sections 2 and 3 of scripts/RABBITMQ-STOMP.md: wildcard subscriptions and the
MESSAGE's destination; the headers RabbitMQ adds, which SEND headers come through (raw wire
form printed), escapes, repeated headers, refused headers."""
import time

from stomp_raw import C

print("== wildcards")
c = C(name="sub")
c.send("SUBSCRIBE", {"id": "star", "destination": "/topic/rooms.*", "receipt": "r1"})
c.recv()
c.send("SUBSCRIBE", {"id": "hash", "destination": "/topic/rooms.#", "receipt": "r2"})
c.recv()
p = C(name="pub")
for d in ["/topic/rooms.42", "/topic/rooms.42.x", "/topic/rooms"]:
    p.send("SEND", {"destination": d}, d)
    c.drain(0.5)
print("== headers")
c.send("SUBSCRIBE", {"id": "h", "destination": "/topic/hdr", "receipt": "r3"})
c.recv()
c.raw(0.2)
p.send("SEND", {
    "destination": "/topic/hdr", "content-type": "application/json;charset=utf-8",
    "content-encoding": "gzip", "x-foo": "bar", "x-cr": "c\rr", "x-colon": "a:b",
    "x-nl": "line1\nline2", "x-bs": "back\\slash", "priority": "5",
    "expires": str(int(time.time() * 1000) + 60000), "reply-to": "/queue/replies",
    "correlation-id": "cid-1", "subscription": "fake", "redelivered": "true", "ack": "fake-ack",
    "x-Upper": "Case", "content-length": "2", "type": "t1", "app-id": "a1", "user-id": "guest",
    "timestamp": "123", "receipt": "rr", "amqp-message-id": "amid", "x-empty": ""}, "{}")
print(p.recv())
print(c.raw(1.0))
print("-- persistent:true")
p.send("SEND", {"destination": "/topic/hdr", "persistent": "true"}, "p")
print(c.raw(1.0))
print("-- repeated header")
p.rawsend(b"SEND\ndestination:/topic/hdr\nx-dup:first\nx-dup:second\n\nd\0")
print(c.raw(1.0))
print("-- body with NUL")
p.send("SEND", {"destination": "/topic/hdr", "content-length": "3"}, b"a\0b")
print(c.raw(1.0))
print("-- refused headers (each on a fresh connection)")
for h in [{"message-id": "mine"}, {"priority": "abc"}, {"expires": "abc"},
          {"persistent": "maybe"}, {"transaction": ""}, {"user-id": "bob"}]:
    q = C(name="pub", log=False)
    q.send("SEND", dict({"destination": "/topic/hdr"}, **h), "x")
    q.send("SUBSCRIBE", {"destination": "/topic/alive", "id": "alive", "receipt": "alive"})
    print(h, q.raw(1.0))
    q.close()
