"""Probes section 11 of scripts/RABBITMQ-STOMP.md: how long `scripts/rabbitmq.sh restart` takes
from stop to the STOMP port accepting again (3 times), what an open connection sees, and which
messages survive (persistent vs transient in a durable queue)."""
import socket
import subprocess
import time

from stomp_raw import C, PORT, RABBITMQ_SH, ctl


def accepts():
    try:
        socket.create_connection(("127.0.0.1", PORT), timeout=0.2).close()
        return True
    except OSError:
        return False


for i in range(3):
    t0 = time.time()
    p = subprocess.Popen([RABBITMQ_SH, "restart"], stdout=subprocess.DEVNULL)
    down = up = None
    while True:
        a = accepts()
        if down is None and not a:
            down = time.time() - t0
        if down is not None and a and up is None:
            up = time.time() - t0
        if p.poll() is not None and up is not None:
            break
        time.sleep(0.05)
    print(f"restart {i + 1}: port closed at {down:.2f} s, accepting again at {up:.2f} s, "
          f"command returned at {time.time() - t0:.2f} s (rc {p.returncode})")

ctl("delete_queue", "probe-survive")
c = C(log=False)
c.send("SUBSCRIBE", {"destination": "/topic/r", "id": "t", "receipt": "1"})
c.recv()
p = C(log=False)
p.send("SEND", {"destination": "/queue/probe-survive", "persistent": "true", "receipt": "a"},
       "persistent")
p.recv()
p.send("SEND", {"destination": "/queue/probe-survive", "receipt": "b"}, "transient")
p.recv()
t0 = time.time()
proc = subprocess.Popen([RABBITMQ_SH, "restart"], stdout=subprocess.DEVNULL)
print(f"open connection during restart: {c.raw(5)!r} at {time.time() - t0:.2f} s")
proc.wait()
d = C(name="d")
d.send("SUBSCRIBE", {"destination": "/queue/probe-survive", "id": "s"})
d.drain(1)
