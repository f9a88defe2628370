"""Probes sections 8 and 9 of scripts/RABBITMQ-STOMP.md: heart-beat negotiation, the
server's EOLs, what a silent client gets; CONNECT with right and wrong host, login, passcode,
without them, STOMP, older versions; a refused CONNECT's socket."""
import time

from stomp_raw import C

print("== Q8 heart-beat:10000,10000")
c = C(name="c", **{"heart-beat": "10000,10000"})
print("== heart-beat 0,1000 -> server sends EOLs every ~1 s?")
c = C(name="c", **{"heart-beat": "0,1000"})
t0 = time.time(); data = b""
while time.time() - t0 < 3.5:
    c._fill(0.1)
print("bytes in 3.5 s:", c.buf, "count", len(c.buf))
print("== heart-beat 1000,0 -> client promises 1 s, then stays silent")
c = C(name="c", **{"heart-beat": "1000,0"})
t0 = time.time()
while True:
    try:
        if c._fill(0.5): pass
    except (EOFError, ConnectionResetError) as e:
        print(f"closed after {time.time()-t0:.1f} s; got {c.buf!r}"); break
    if time.time() - t0 > 15: print("still open after 15 s"); break
print("== heart-beat 1000,0 but sending EOLs every 0.5 s keeps it?")
c = C(name="c", **{"heart-beat": "1000,0"})
t0 = time.time(); closed = False
while time.time() - t0 < 6:
    c.rawsend(b"\n"); time.sleep(0.5)
    try: c._fill(0)
    except Exception: closed = True; break
print("closed" if closed else "open after 6 s of EOLs")
print("== Q9 vhost / auth")
for h in [{"host": "/"}, {"host": "nosuch"}, {"passcode": "wrong"}, {"login": "nobody", "passcode": "x"}, {"host": ""}]:
    c = C(name="c", connect=False)
    hh = {"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "guest"}; hh.update(h)
    c.send("CONNECT", hh)
    f = c.recv(2); print("   then:", c.recv(1))
print("-- no host header, no login")
c = C(name="c", connect=False); c.send("CONNECT", {"accept-version": "1.2"}); c.recv(); 
c = C(name="c", connect=False); c.send("STOMP", {"accept-version": "1.2", "host": "/"}); c.recv()
c = C(name="c", connect=False); c.send("CONNECT", {"accept-version": "1.0,1.1"}); c.recv()
c = C(name="c", connect=False); c.send("CONNECT", {}); c.recv()
c = C(name="c", log=False, **{"heart-beat": "0,1000"})
c.buf = b""; t0 = time.time(); ts = []
while time.time() - t0 < 4.2:
    if c._fill(0.05):
        ts.append(round(time.time() - t0, 2)); c.buf = b""
print("server EOL times for cy=1000:", ts)
for hb in (2000, 5000):
    c = C(name="c", log=False, **{"heart-beat": f"{hb},0"})
    t0 = time.time()
    while True:
        try: c._fill(0.2)
        except Exception: print(f"cx={hb}: silent client closed after {time.time()-t0:.2f} s, bytes {c.buf!r}"); break
print("== bad CONNECT: closed?")
c = C(name="c", connect=False, log=False)
c.send("CONNECT", {"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "wrong"})
t0 = time.time(); print(c.raw(3), f"{time.time()-t0:.2f}")
print("== refused CONNECT, then a SEND")
c = C(name="c", connect=False, log=False)
c.send("CONNECT", {"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "wrong"})
time.sleep(0.3)
c.send("SEND", {"destination": "/topic/x", "receipt": "r"}, "after bad connect")
t0 = time.time()
print(c.raw(12), f"{time.time() - t0:.2f} s")
