"""Synqpay link layer, sans-I/O: frames <-> bytes (docs/SYNQPAY.md).

    STX | type | body | ETX
    Request   01  key(4) | length(4, big-endian) | payload | CRC16(2, big-endian)
    Response  02  length | payload | CRC16             Event 03: the same
    KeepAlive 04, ACK 05: no body                      Error 06: code(1)

CRC16 is CRC-16/MODBUS over length + payload.  The Decoder takes bytes as
they come (frames split or joined anywhere) and hands out whole frames or
the link error a bad one deserves.  It never allocates more than it was
given: a length field above `limit` is refused before any payload arrives.
"""

STX = 0x02
ETX = 0x03
REQUEST = 1
RESPONSE = 2
EVENT = 3
KEEPALIVE = 4
ACK = 5
ERROR = 6
BAD = 0  # what the decoder returns for a bad frame: (BAD, error code, None)

# link error codes
E_MESSAGE = 1  # malformed frame, bytes outside a frame, a frame cut short
E_TYPE = 2  # a frame type this side does not take
E_CRC = 3
E_LEN = 4  # length 0, above the limit, or not where the ETX is
E_AUTH = 5  # not authenticated (decided above the link)

# CRC byte order accepted by the decoder (frames are always sent big-endian)
CRC_BE = 0
CRC_EITHER = 1
CRC_OFF = 2

ZERO_KEY = b"\x00\x00\x00\x00"

# CRC-16/MODBUS four bits at a time: _T[n] is the CRC of nibble n (poly 0xA001)
_T = (0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401,
      0xA001, 0x6C00, 0x7800, 0xB401, 0x5000, 0x9C01, 0x8801, 0x4400)


def crc16(data, start=0, end=None, crc=0xFFFF):
    """CRC-16/MODBUS of data[start:end]; pass crc to go on from an earlier part."""
    for i in range(start, len(data) if end is None else end):
        crc ^= data[i]
        crc = (crc >> 4) ^ _T[crc & 15]
        crc = (crc >> 4) ^ _T[crc & 15]
    return crc


def frame(ftype, payload, key=None):
    """A Request (key given), Response or Event frame around payload (bytes).
    The payload is copied once, into the frame."""
    return b"".join(parts(ftype, payload, key))


def parts(ftype, payload, key=None):
    """The same frame as (head, payload, tail), for a sender that writes them
    one after the other: the payload is not copied."""
    head = bytes((STX, ftype)) + (key or b"") + len(payload).to_bytes(4, "big")
    c = crc16(payload, 0, None, crc16(head, len(head) - 4))
    return head, payload, bytes((c >> 8, c & 255, ETX))


def pieces(ftype, body, key=None):
    """The same frame as (head, *body, tail) for a payload given as pieces
    (bytes-like), which are neither joined nor copied: a sender with little
    room writes a long payload as the short pieces it was made of."""
    head = bytes((STX, ftype)) + (key or b"") + sum(len(b) for b in body).to_bytes(4, "big")
    c = crc16(head, len(head) - 4)
    for b in body:
        c = crc16(b, 0, None, c)
    return (head,) + tuple(body) + (bytes((c >> 8, c & 255, ETX)),)


def control(ftype, code=None):
    """KeepAlive, ACK, or Error with its code."""
    if code is None:
        return bytes((STX, ftype, ETX))
    return bytes((STX, ftype, code, ETX))


class Decoder:
    """Bytes in (feed), frames out (next): (type, key or None, payload) for
    Request/Response/Event, (type, None, None) for KeepAlive/ACK, (ERROR,
    code, None) for an Error frame, (BAD, link error code, None) for a bad
    frame.  `accept`: the types this side takes; a well-formed frame of
    another type is skipped whole with E_TYPE, an unknown type byte too.

    After a bad frame the decoder looks for the next STX after the bad one's
    first byte.  Bytes outside any frame give one E_MESSAGE per run, and none
    right after another error (they are most likely the rest of that frame).
    """

    def __init__(self, limit=4096, crc=CRC_BE, accept=(REQUEST, KEEPALIVE, ACK)):
        self.limit = limit
        self.crc = crc
        self.accept = accept
        self.buf = bytearray()
        self.i = 0  # start of what is not consumed yet
        self.quiet = False

    def feed(self, data):
        if self.i:
            self.buf = self.buf[self.i:]
            self.i = 0
        self.buf += data

    def pending(self):
        """True while a frame has begun and not ended."""
        return self.i < len(self.buf)

    def expire(self):
        """The sender went quiet in the middle of a frame: drop it."""
        if self.i < len(self.buf) and self.buf[self.i] == STX:
            return self._bad(E_MESSAGE, 1)
        return None

    def _bad(self, code, skip):
        self.i += skip
        self.quiet = True
        return (BAD, code, None)

    def next(self):
        b = self.buf
        i = self.i
        n = len(b)
        if i < n and b[i] != STX:
            j = b.find(b"\x02", i)
            self.i = n if j < 0 else j
            if not self.quiet:
                self.quiet = True
                return (BAD, E_MESSAGE, None)
            i = self.i
        if n - i < 3:
            return None
        t = b[i + 1]
        if t < REQUEST or t > ERROR:
            return self._bad(E_TYPE, 1)
        if t >= KEEPALIVE:
            end = i + (3 if t != ERROR else 4)
            if n < end:
                return None
            if b[end - 1] != ETX:
                return self._bad(E_MESSAGE, 1)
            if t not in self.accept:
                return self._bad(E_TYPE, end - i)
            self.i = end
            self.quiet = False
            return (t, b[i + 2] if t == ERROR else None, None)
        at = i + (6 if t == REQUEST else 2)  # the length field
        if n < at + 4:
            return None
        size = int.from_bytes(b[at:at + 4], "big")
        if size == 0 or size > self.limit:
            return self._bad(E_LEN, 1)
        c = at + 4 + size  # the CRC
        if n < c + 3:
            return None
        if b[c + 2] != ETX:
            return self._bad(E_LEN, 1)
        if self.crc != CRC_OFF:
            want = crc16(b, at, c)
            got = (b[c] << 8) | b[c + 1]
            if got != want and (self.crc != CRC_EITHER or got != ((want & 255) << 8 | want >> 8)):
                return self._bad(E_CRC, c + 3 - i)
        if t not in self.accept:
            return self._bad(E_TYPE, c + 3 - i)
        ev = (t, bytes(b[i + 2:i + 6]) if t == REQUEST else None, bytes(b[at + 4:c]))
        self.i = c + 3  # (after what may find no room: then called again, the same frame)
        self.quiet = False
        return ev
