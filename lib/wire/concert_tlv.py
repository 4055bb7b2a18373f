"""Concert V3 (Caisse-AP) TLV codec, sans-I/O.

An element is a 2-letter tag (A-Z), a 3-digit decimal length and that many
ASCII bytes (0x20-0x7F).  Tags starting with Z are constructed: their value
is itself a TLV list, one level deep.  CZ (protocol version) comes first,
every tag appears at most once, except ZT (ticket) which may repeat.
Zero-length elements are never transmitted.

A decoded message is a dict {tag: str}; a Z tag maps to a list of dicts.
Encoding takes an ordered list of (tag, value) pairs, where a value is a str
(None or "" is skipped) or a list of pairs for a constructed tag.
"""


class TLVError(ValueError):
    """Malformed Concert TLV; the message says where and why."""


def _head(buf, i):
    """(tag, value length) of the element at i; TLVError if not one."""
    a = buf[i]
    b = buf[i + 1]
    if not (65 <= a <= 90 and 65 <= b <= 90):
        raise TLVError("bad tag at offset %d" % i)
    d0 = buf[i + 2] - 48
    d1 = buf[i + 3] - 48
    d2 = buf[i + 4] - 48
    if not (0 <= d0 <= 9 and 0 <= d1 <= 9 and 0 <= d2 <= 9):
        raise TLVError("bad length at offset %d" % i)
    # decode(), not chr(a) + chr(b): MicroPython hands back the interned
    # name ("CA", "CB"... are names in the firmware) without allocating, where
    # a concatenation makes a new string per tag (a 112K Concert soak failed)
    return bytes(buf[i:i + 2]).decode(), d0 * 100 + d1 * 10 + d2


def scan(buf, end=None):
    """Offset just past the last complete element of buf[:end], for readers
    of a stream; TLVError as soon as a byte cannot belong to an element.
    A CR or LF stops the walk (registers may end a request with CR/LF)."""
    if end is None:
        end = len(buf)
    i = 0
    while i < end and buf[i] not in (10, 13):
        if end - i < 5:
            for k in range(i, min(i + 2, end)):  # reject early what can never be a tag
                if not 65 <= buf[k] <= 90:
                    raise TLVError("bad tag at offset %d" % i)
            break
        n = _head(buf, i)[1]
        if i + 5 + n > end:
            break
        i += 5 + n
    return i


def strip_eol(buf, end):
    """Length of buf[:end] without trailing CR/LF."""
    while end and buf[end - 1] in (10, 13):
        end -= 1
    return end


def _walk(buf, i, end, nested):
    out = {}  # type: dict
    while i < end:
        if end - i < 5:
            raise TLVError("truncated element at offset %d" % i)
        tag, n = _head(buf, i)
        v = i + 5
        if not n or v + n > end:
            raise TLVError("%s length %d does not fit" % (tag, n))
        if not out and not nested and tag != "CZ":
            raise TLVError("first tag is %s, not CZ" % tag)
        if tag[0] == "Z":
            if nested:
                raise TLVError("%s nested in a constructed tag" % tag)
            if tag in out and tag != "ZT":
                raise TLVError("%s repeated" % tag)
            out.setdefault(tag, []).append(_walk(buf, v, v + n, True))
        else:
            if tag in out:
                raise TLVError("%s repeated" % tag)
            raw = buf[v:v + n]  # one copy, whether buf is bytes or a bytearray
            if min(raw) < 32 or max(raw) > 127:  # C loops, not a Python one per byte
                for k in range(n):
                    if not 32 <= raw[k] <= 127:
                        raise TLVError("byte %d at offset %d is not ASCII text" % (raw[k], v + k))
            out[tag] = str(raw, "ascii")
        i = v + n
    return out


def decode(buf):
    """Decode one whole message (bytes-like) into a dict; TLVError if malformed."""
    end = strip_eol(buf, len(buf))
    if not end:
        raise TLVError("empty message")
    return _walk(buf, 0, end, False)


def encode(pairs):
    """The bytes sent on the wire for [(tag, value)]: a value is a str, or
    a list of pairs (nested).  Joined as bytes once: a str joined, then
    encoded, would need the answer's size in two blocks at once (an
    approved answer with its tickets is about 500 bytes)."""
    out = []
    for tag, value in pairs:
        if isinstance(value, list):
            value = encode(value)
        if not value:
            continue
        t = tag.encode()
        if len(t) != 2 or not (65 <= t[0] <= 90 and 65 <= t[1] <= 90):
            raise TLVError("bad tag %r" % tag)
        n = len(value)
        if n > 999:
            raise TLVError("%s value too long (%d)" % (tag, n))
        out.append(t)
        out.append(b"%03d" % n)
        out.append(value if type(value) is bytes else value.encode())
    return b"".join(out)
