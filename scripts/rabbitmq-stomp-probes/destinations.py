"""Probes sections 1 and 12 of scripts/RABBITMQ-STOMP.md: what each destination form does,
which names are refused, how the MESSAGE's destination is written back, and what
`rabbitmqctl list_stomp_connections` / `list_consumers` show for topic and queue subscriptions."""
from stomp_raw import C, ctl


def probe(sub, send, label=None):
    c = C(name="sub", log=False)
    p = C(name="pub", log=False)
    c.send("SUBSCRIBE", {"destination": sub, "id": "s", "receipt": "r"})
    f = c.recv()
    label = label or f"SUB {sub!r} SEND {send!r}"
    if f[0] != "RECEIPT":
        print(f"{label}: SUBSCRIBE -> {f[0]} {f[1].get('message')} {f[2][:70]!r}")
    else:
        p.send("SEND", {"destination": send, "receipt": "p"}, "m")
        pf = p.recv()
        m = c.recv(0.7)
        if pf[0] != "RECEIPT":
            res = f"SEND -> {pf[0]} {pf[1].get('message')} {pf[2][:70]!r}"
        elif m and m != "CLOSED" and m[0] == "MESSAGE":
            res = f"MESSAGE destination={m[1]['destination']!r}"
        else:
            res = "not delivered"
        print(f"{label}: {res}")
    c.close()
    p.close()


print("== forms")
for d in ["/topic/a.b", "/topic/a/b", "/queue/x", "/queue/a/b", "/exchange/amq.topic/x",
          "/exchange/amq.topic/a/b", "/amq/queue/x", "/temp-queue/t1", "/foo/x", "/topic/",
          "/queue/"]:
    probe(d, d)
probe("/queue/x", "x")
probe("/topic/q.*", "/exchange/amq.topic/q.1")
print("== characters (same string subscribed and sent)")
for ch in [" ", "%2F", "%2f", "%20", "%25", "%", "*", "#", "+", "&", "?", "=", ",", ":", ";",
           "\\", '"', "'", "~", "!", "@", "$", "(", "[", "{", "|", "^", "`", "<", "\u00e9"]:
    probe("/topic/a" + ch + "b", "/topic/a" + ch + "b")
probe("/topic/" + "t" * 300, "/topic/" + "t" * 300, "300-character topic")
probe("/queue/" + "q" * 300, "/queue/" + "q" * 300, "300-character queue")
probe("/topic/caf%C3%A9", "/topic/caf\u00e9")
probe("/topic/a%2Fb", "/topic/a/b")
print("== listings")
c = C(name="sub")
c.send("SUBSCRIBE", {"id": "sub-topic", "destination": "/topic/x", "receipt": "r1"})
c.recv()
c.send("SUBSCRIBE", {"id": "sub-queue", "destination": "/queue/x", "ack": "client-individual",
                     "prefetch-count": "5", "receipt": "r2"})
c.recv()
c.send("SUBSCRIBE", {"id": "sub-ex", "destination": "/exchange/amq.topic/x", "receipt": "r3"})
c.recv()
print(ctl("list_stomp_connections"))
print(ctl("list_stomp_connections", "auth_login", "conn_name", "connection_state", "protocol",
          "version"))
print(ctl("list_consumers"))
print(ctl("list_bindings", "source_name", "destination_name", "routing_key"))
c.close()
