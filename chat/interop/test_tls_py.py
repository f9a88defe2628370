"""Interop over TLS from Python: `websockets` (sync client) over wss:// and stomp.py over STOMP
with TLS, each with an ssl context trusting the test CA; and the same without the CA refused.
Run by tls.sh against a sockeye-chat started with --tls-cert/--tls-key/--stomp-tls:
SOCKEYE_CA, SOCKEYE_WSS, SOCKEYE_STOMP_PORT. Every wait is bounded."""

import os
import ssl
import threading

import pytest
import stomp
from websockets.sync.client import connect

if "SOCKEYE_WSS" not in os.environ:
    raise RuntimeError("no server to test: run chat/interop/tls.sh (it sets SOCKEYE_WSS)")

CA = os.environ["SOCKEYE_CA"]
WSS = os.environ["SOCKEYE_WSS"]
STOMP_PORT = int(os.environ["SOCKEYE_STOMP_PORT"])
WAIT = 5


def context(ca=CA):
    ctx = ssl.create_default_context(cafile=ca)
    return ctx


def test_websockets_over_wss_with_the_ca():
    with connect(WSS, ssl=context(), subprotocols=["v12.stomp"], open_timeout=WAIT) as ws:
        assert ws.subprotocol == "v12.stomp"
        ws.send("CONNECT\naccept-version:1.2\nhost:localhost\n\n\0")
        frame = ws.recv(timeout=WAIT)
        assert frame.startswith("CONNECTED\n"), frame
        ws.send("SUBSCRIBE\nid:0\ndestination:/topic/tls.py\nreceipt:r1\n\n\0")
        frame = ws.recv(timeout=WAIT)
        assert frame.startswith("RECEIPT\n"), frame


def test_websockets_without_the_ca_is_refused():
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(WSS, ssl=ssl.create_default_context(), subprotocols=["v12.stomp"], open_timeout=WAIT)


def test_websockets_checks_the_name():
    # The certificate names localhost, 127.0.0.1 and ::1, not this.
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(
            WSS,
            ssl=context(),
            server_hostname="wrong.test",
            subprotocols=["v12.stomp"],
            open_timeout=WAIT,
        )


class Listener(stomp.ConnectionListener):
    def __init__(self):
        self.messages = []
        self.got = threading.Event()

    def on_message(self, frame):
        self.messages.append(frame.body)
        self.got.set()


def test_stomp_py_over_tls():
    conn = stomp.Connection12([("localhost", STOMP_PORT)], timeout=WAIT, heartbeats=(0, 0))
    conn.set_ssl(for_hosts=[("localhost", STOMP_PORT)], ca_certs=CA)
    listener = Listener()
    conn.set_listener("l", listener)
    conn.connect(wait=True)
    try:
        conn.subscribe("/topic/tls.stomppy", id="1", ack="auto")
        conn.send("/topic/tls.stomppy", "hello over tls", receipt="s1")
        assert listener.got.wait(WAIT), "no MESSAGE over STOMP/TLS"
        assert listener.messages == ["hello over tls"]
    finally:
        conn.disconnect()
