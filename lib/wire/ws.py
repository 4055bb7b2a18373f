"""WebSocket (RFC 6455), server side: handshake, frames, fragments; sans-I/O.

The caller reads a frame in three steps: 2 bytes, then more_head() more
(extended length and mask), then the payload whose length parse_head()
returns after checking it against the caller's limit, so an attacker's
length is refused before anything is allocated.  Message reassembles
fragmented data frames; control frames (close, ping, pong) go to the caller.
A protocol violation raises WSError with the close code to send.
"""
import binascii
import hashlib

CONT = 0
TEXT = 1
BINARY = 2
CLOSE = 8
PING = 9
PONG = 10
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# close codes
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL = 1002
UNSUPPORTED = 1003
BAD_DATA = 1007
TOO_BIG = 1009


class WSError(Exception):
    def __init__(self, code, reason):
        super().__init__(reason)
        self.code = code


def accept(key):
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key."""
    h = hashlib.sha1(key.encode() + _GUID).digest()
    return binascii.b2a_base64(h)[:-1].decode()


def handshake(method, target, version, headers, path):
    """The 101 answer to an opening handshake, or HTTPError saying why not.
    (wire.http is imported here: a server needs it only while a connection
    opens, and may drop it in between.)"""
    from wire.http import HTTPError, has_token, response

    if target.split("?")[0] != path:
        raise HTTPError(404, "Not Found")
    if method != "GET":
        raise HTTPError(405, "Method Not Allowed", (("Allow", "GET"),))
    if not has_token(headers.get("upgrade"), "websocket") or version == "HTTP/1.0":
        raise HTTPError(426, "Upgrade Required",
                        (("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")))
    if headers.get("sec-websocket-version") != "13":
        raise HTTPError(426, "Upgrade Required", (("Sec-WebSocket-Version", "13"),))
    key = headers.get("sec-websocket-key", "")
    try:
        ok = len(binascii.a2b_base64(key)) == 16 and len(key) == 24
    except ValueError:
        ok = False
    if not ok or not has_token(headers.get("connection"), "upgrade") or "host" not in headers:
        raise HTTPError(400, "Bad Request")
    return response(101, "Switching Protocols", (
        ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept(key))))


def more_head(b2):
    """How many header bytes follow the first two: extended length and mask."""
    n = b2[1] & 127
    return (2 if n == 126 else 8 if n == 127 else 0) + (4 if b2[1] & 128 else 0)


def parse_head(h, limit):
    """(fin, opcode, payload length, mask) of a client frame's header."""
    b0 = h[0]
    op = b0 & 15
    fin = bool(b0 & 128)
    if b0 & 112:
        raise WSError(PROTOCOL, "reserved bits set")
    if not h[1] & 128:
        raise WSError(PROTOCOL, "client frames must be masked")
    if op not in (CONT, TEXT, BINARY, CLOSE, PING, PONG):
        raise WSError(PROTOCOL, "unknown opcode %d" % op)
    n = h[1] & 127
    i = 2
    if n == 126:
        n = (h[2] << 8) | h[3]
        i = 4
    elif n == 127:
        if h[2] & 128:
            raise WSError(PROTOCOL, "length out of range")
        n = int.from_bytes(h[2:10], "big")
        i = 10
    if op >= CLOSE and (n > 125 or not fin):
        raise WSError(PROTOCOL, "control frame fragmented or longer than 125")
    if n > limit:
        raise WSError(TOO_BIG, "frame of %d bytes (max %d)" % (n, limit))
    return fin, op, n, bytes(h[i:i + 4])


def unmask(buf, mask):
    """XOR a bytearray with the 4-byte mask, in place, 256 bytes at a time
    (big-int arithmetic runs in C; a byte loop is slow on a board)."""
    for i in range(0, len(buf), 256):
        unmask_piece(buf, mask, i, 256)
    return buf


def unmask_piece(buf, mask, i, piece=64):
    """unmask() of buf[i:i + piece] alone (piece a multiple of 4, i of
    piece): all of it or, if a MemoryError interrupts it, none, so that a
    caller may do that piece again."""
    k = min(piece, len(buf) - i)
    m = int.from_bytes(mask * (piece // 4), "big") >> (8 * (piece - k))
    buf[i:i + k] = (int.from_bytes(buf[i:i + k], "big") ^ m).to_bytes(k, "big")


def frame(op, payload=b""):
    """A server frame (never masked), unfragmented."""
    return head(op, len(payload)) + payload


def head(op, n):
    """The header of an unmasked final frame of n bytes."""
    if n < 126:
        return bytes((128 | op, n))
    if n < 65536:
        return bytes((128 | op, 126, n >> 8, n & 255))
    return bytes((128 | op, 127)) + n.to_bytes(8, "big")


def close_frame(code, reason=""):
    return frame(CLOSE, bytes((code >> 8, code & 255)) + reason.encode()[:123])


def parse_close(payload):
    """(code, reason) of a close frame; code None when it carried none."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise WSError(PROTOCOL, "close frame of 1 byte")
    code = (payload[0] << 8) | payload[1]
    if code < 1000 or code in (1004, 1005, 1006, 1015) or 1011 < code < 3000 or code > 4999:
        raise WSError(PROTOCOL, "invalid close code %d" % code)
    try:
        return code, bytes(payload[2:]).decode()
    except UnicodeError:
        raise WSError(BAD_DATA, "close reason not UTF-8")


class Message:
    """Joins data frames into messages of at most `limit` bytes."""

    def __init__(self, limit):
        self.limit = limit
        self.op = None
        self.buf = b""  # type: bytes | bytearray

    def feed(self, fin, op, payload):
        """(opcode, payload) once a message is whole, else None."""
        if op == CONT:
            if self.op is None:
                raise WSError(PROTOCOL, "continuation without a message")
            if len(self.buf) + len(payload) > self.limit:
                raise WSError(TOO_BIG, "message longer than %d bytes" % self.limit)
            self.buf += payload
        elif self.op is not None:
            raise WSError(PROTOCOL, "new message inside a fragmented one")
        elif fin:
            return op, payload
        else:
            self.op = op
            self.buf = bytearray(payload)
        if not fin:
            return None
        op, data = self.op, self.buf
        self.op, self.buf = None, b""
        return op, data
