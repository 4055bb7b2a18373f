"""A scripted P3 POS for tests: the same calls over framed TCP or WebSocket.

    c = connect(fw, "tcp")          # or "ws": the `websockets` client library
    c.send({"type": ..., "tag": ...})   # a dict, or the exact bytes to send
    m = c.recv()                    # the next message (dict); None once closed
    c.recv_raw()                    # the same, as the bytes received

The WebSocket side is a real RFC 6455 client (websockets); the TCP side
frames each message with a 4-byte big-endian byte count, as PayClient does.
"""
import json
import socket
import struct
import uuid

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

SECRET = {"providerMode": "TEST", "merchantIdentifier": "understudy", "merchantSecret": "understudy"}
DEVICE = "devices/understudy"


class Closed(Exception):
    pass


class TCP:
    def __init__(self, addr, timeout=10.0):
        self.s = socket.create_connection(addr, timeout=timeout)

    def send_bytes(self, data):
        self.s.sendall(data)

    def send_raw(self, payload):
        self.s.sendall(struct.pack(">I", len(payload)) + payload)

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            try:
                chunk = self.s.recv(n - len(buf))
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                if buf:
                    raise AssertionError("closed inside a frame after %r" % buf)
                return None
            buf += chunk
        return buf

    def recv_raw(self, timeout=10.0):
        self.s.settimeout(timeout)
        head = self._exact(4)
        if head is None:
            return None
        return self._exact(struct.unpack(">I", head)[0])

    def close(self):
        self.s.close()


class WS:
    def __init__(self, url, timeout=10.0):
        self.ws = ws_connect(url, open_timeout=timeout, max_size=1 << 20, ping_interval=None, legacy=True)

    def send_raw(self, payload):
        self.ws.send(payload.decode("utf-8", "surrogateescape") if isinstance(payload, bytes) else payload)

    def recv_raw(self, timeout=10.0):
        try:
            m = self.ws.recv(timeout)
        except ConnectionClosed:
            return None
        return m.encode() if isinstance(m, str) else m

    def close(self):
        self.ws.close()


def url(fw, path="/"):
    host, port = fw.address("p3-ws")
    return "ws://%s:%d%s" % (host, port, path)


def connect(fw, transport):
    if transport == "tcp":
        return Client(TCP(fw.address("p3-tcp")))
    return Client(WS(url(fw)))


class Client:
    """Messages as dicts over either transport."""

    def __init__(self, t):
        self.t = t

    def send(self, msg):
        self.t.send_raw(msg if isinstance(msg, bytes) else json.dumps(msg).encode())

    def recv_raw(self, timeout=10.0):
        return self.t.recv_raw(timeout)

    def recv(self, timeout=10.0):
        raw = self.recv_raw(timeout)
        return None if raw is None else json.loads(raw)

    def close(self):
        self.t.close()

    # the POS's own steps
    def request(self, typ, body=None, resource=None, tag=None):
        m = {"tag": tag or str(uuid.uuid4()), "type": typ + "_REQUEST"}
        if resource:
            m["resource"] = resource
        if body is not None:
            words = typ.lower().split("_")
            m[words[0] + "".join(w.title() for w in words[1:]) + "Request"] = body
        self.send(m)
        return m["tag"]

    def login(self, **over):
        body = dict(SECRET, **over)
        self.request("LOGIN_MERCHANT", body)
        return self.recv()

    def execute(self, amount, currency="EUR", type="CHARGE", auto_capture=True, **extra):
        tp = {"amount": amount, "currency": currency, "type": type, "autoCapture": auto_capture}
        tp.update(extra)
        return self.request("EXECUTE_TRANSACTION", {"transactionParameters": tp}, DEVICE)

    def until_final(self, tag, timeout=10.0):
        """(updates and actions, the final response) of a transaction."""
        seen = []
        while True:
            m = self.recv(timeout)
            if m is None:
                return seen, None
            if m.get("tag") == tag and m["type"].endswith("_RESPONSE"):
                return seen, m
            seen.append(m)
