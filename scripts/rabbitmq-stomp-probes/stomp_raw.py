"""A tiny raw STOMP 1.2 client over TCP for probing RabbitMQ's STOMP adapter (no parsing
niceties: header values are not unescaped, so the wire form shows). The node's port comes
from $RABBIT_STOMP_PORT, else from `scripts/rabbitmq.sh env`. Also `ctl`, which runs
`scripts/rabbitmq.sh ctl -q ARGS` and returns its output."""
import os
import select
import socket
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RABBITMQ_SH = os.path.join(HERE, "..", "rabbitmq.sh")


def _port():
    if os.environ.get("RABBIT_STOMP_PORT"):
        return int(os.environ["RABBIT_STOMP_PORT"])
    out = subprocess.run([RABBITMQ_SH, "env"], capture_output=True, text=True, check=True).stdout
    return int(out.split("RABBIT_STOMP_PORT=")[1].split()[0])


PORT = _port()


def ctl(*args):
    return subprocess.run([RABBITMQ_SH, "ctl", "-q", *args], capture_output=True, text=True).stdout


def esc(v):
    return v.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n").replace(":", "\\c")


def frame(cmd, headers=None, body=b""):
    """Raw bytes of a frame, headers written as given (no escaping)."""
    if isinstance(body, str):
        body = body.encode()
    head = cmd + "\n" + "".join(f"{k}:{v}\n" for k, v in (headers or {}).items())
    return head.encode() + b"\n" + body + b"\0"


class C:
    """One STOMP connection; CONNECTs as guest to vhost / unless connect=False."""

    def __init__(self, connect=True, log=True, name="c", **hdrs):
        self.s = socket.create_connection(("127.0.0.1", PORT))
        self.buf = b""
        self.log = log
        self.name = name
        if connect:
            h = {"accept-version": "1.2", "host": "/", "login": "guest", "passcode": "guest"}
            h.update(hdrs)
            self.send("CONNECT", h)
            self.connected = self.recv()

    def send(self, cmd, headers=None, body=b""):
        headers = headers or {}
        if isinstance(body, str):
            body = body.encode()
        out = cmd + "\n"
        for k, v in headers.items():
            out += esc(k) + ":" + (str(v) if cmd == "CONNECT" else esc(str(v))) + "\n"
        if self.log:
            print(f"  {self.name} >>> {cmd} {headers} body={body[:60]!r}")
        self.s.sendall(out.encode() + b"\n" + body + b"\0")

    def rawsend(self, data):
        self.s.sendall(data)

    def _fill(self, timeout):
        r, _, _ = select.select([self.s], [], [], timeout)
        if not r:
            return False
        d = self.s.recv(65536)
        if not d:
            raise EOFError("closed")
        self.buf += d
        return True

    def recv(self, timeout=2.0):
        """The next frame as (command, headers, body), None on timeout, "CLOSED" at EOF."""
        end = time.time() + timeout
        while True:
            while self.buf[:1] == b"\n" or self.buf[:2] == b"\r\n":
                self.buf = self.buf[1:] if self.buf[:1] == b"\n" else self.buf[2:]
            if b"\n\n" in self.buf:
                head, rest = self.buf.split(b"\n\n", 1)
                lines = head.decode().split("\n")
                h = {}
                for line in lines[1:]:
                    k, v = line.split(":", 1)
                    h.setdefault(k, v)
                f = None
                if "content-length" in h:
                    n = int(h["content-length"])
                    if len(rest) >= n + 1:
                        f = (lines[0], h, rest[:n])
                        self.buf = rest[n + 1:]
                elif b"\0" in rest:
                    body, self.buf = rest.split(b"\0", 1)
                    f = (lines[0], h, body)
                if f:
                    if self.log:
                        print(f"  {self.name} <<< {f[0]} {h} body={f[2][:80]!r}")
                    return f
            left = end - time.time()
            if left <= 0:
                return None
            try:
                if not self._fill(left):
                    return None
            except (EOFError, ConnectionResetError):
                if self.log:
                    print(f"  {self.name} <<< (connection closed)")
                return "CLOSED"

    def drain(self, timeout=0.5):
        """Every frame until `timeout` s pass without one; "CLOSED" last if it closed."""
        out = []
        while True:
            f = self.recv(timeout)
            if f is None:
                return out
            out.append(f)
            if f == "CLOSED":
                return out

    def raw(self, timeout=2.0):
        """The raw bytes received within `timeout` s, ending in b"<CLOSED>" if it closed."""
        end = time.time() + timeout
        while time.time() < end:
            try:
                if not self._fill(end - time.time()):
                    break
            except (EOFError, ConnectionResetError):
                self.buf += b"<CLOSED>"
                break
        b, self.buf = self.buf, b""
        return b

    def close(self):
        self.s.close()
