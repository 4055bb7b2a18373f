"""A minimal Synqpay POS for tests: link frames over TCP or TLS, JSON-RPC calls."""
import json
import os
import socket
import ssl

from understudy import paths
from wire import synqpay_link as L

KEY = bytes.fromhex("1234abcd")
CLIENT_TYPES = (L.RESPONSE, L.EVENT, L.ACK, L.ERROR, L.KEEPALIVE)


def rpc(method, params=None, rid="1"):
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params},
                      separators=(",", ":")).encode()


def request(method, params=None, rid="1", key=KEY):
    return L.frame(L.REQUEST, rpc(method, params, rid), key)


def pinned_context():
    """Trusts only the terminal's own root (build/tls/ca.der), hostname checked."""
    with open(os.path.join(paths.TLS, "ca.der"), "rb") as f:
        ca = f.read()
    ctx = ssl.create_default_context(cadata=ca)
    return ctx


def unverified_context():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Serial:
    """A pyserial port with the three socket methods Link uses."""

    def __init__(self, port):
        self.port = port

    def sendall(self, data):
        self.port.write(data)

    def recv(self, n):
        data = self.port.read(1)  # blocks up to the timeout for the first byte
        if not data:
            raise socket.timeout("nothing on the line")
        return data + self.port.read(min(self.port.in_waiting, n - 1))

    def settimeout(self, t):
        self.port.timeout = t

    def close(self):
        self.port.close()


class Link:
    def __init__(self, addr, tls=None, timeout=5.0, stream=None):
        """A link over TCP to addr (TLS with a context), or over `stream`."""
        if stream is None:
            stream = socket.create_connection(addr, timeout=timeout)
            if tls is not None:
                stream = tls.wrap_socket(stream, server_hostname=addr[0])
        self.s = stream
        self.d = L.Decoder(limit=1 << 20, accept=CLIENT_TYPES)
        self.raw = []  # bytes of each frame read, in order

    def send(self, data):
        self.s.sendall(data)

    def frame(self, timeout=5.0):
        """The next frame (type, a, payload), or None when the terminal closed."""
        self.s.settimeout(timeout)
        while True:
            start = self.d.i
            ev = self.d.next()
            if ev is not None:
                self.raw.append(bytes(self.d.buf[start:self.d.i]))
                return ev
            try:
                data = self.s.recv(4096)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                return None
            self.d.feed(data)

    def frame_bytes(self, timeout=5.0):
        """The next frame's exact bytes, or b"" when closed."""
        return self.raw[-1] if self.frame(timeout) is not None else b""

    def answer(self, timeout=5.0):
        """Frames up to the next Response/Error/ACK: (events as dicts, last frame)."""
        events = []
        while True:
            ev = self.frame(timeout)
            if ev is None or ev[0] != L.EVENT:
                return events, ev
            events.append(json.loads(ev[2]))

    def call(self, method, params=None, rid="1", key=KEY, timeout=5.0):
        """Send a request; returns the JSON answer (dict), or ("error", code)."""
        self.send(request(method, params, rid, key))
        _, ev = self.answer(timeout)
        assert ev is not None, "closed without an answer"
        if ev[0] == L.ERROR:
            return ("error", ev[1])
        return json.loads(ev[2])

    def closed(self, timeout=3.0):
        """True if the terminal closes the link (nothing more to read)."""
        return self.frame(timeout) is None

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass
