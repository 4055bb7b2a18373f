"""Concert V3 (Caisse-AP) TLV codec, sans-I/O.

An element is a 2-letter tag (A-Z), a 3-digit decimal length and that many
ASCII bytes (0x20-0x7F).  Tags starting with Z are constructed: their value
is itself a TLV list, one level deep.  CZ (protocol version) comes first,
every tag appears at most once, except ZT (ticket) which may repeat.
Zero-length elements are never transmitted.

A decoded message is a dict {tag: str}; 'ZT' (and any other Z tag) maps to a
list of dicts.  Encoding takes an ordered list of (tag, value) pairs where a
value is a str, or a list of pairs for a constructed tag.
"""

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

MAX_VALUE = const(999)
_HEAD = const(5)  # tag + length


class TLVError(ValueError):
    """Malformed Concert TLV; the message says where and why."""


def _tag_ok(b0, b1):
    return 65 <= b0 <= 90 and 65 <= b1 <= 90


def _length(buf, i):
    n = 0
    for k in range(i, i + 3):
        c = buf[k]
        if c < 48 or c > 57:
            raise TLVError("bad length at offset %d" % (i - 2))
        n = n * 10 + c - 48
    return n


def scan(buf, end=None):
    """Walk complete elements of buf[:end] without decoding them.

    Returns the offset just past the last complete element.  Raises TLVError
    as soon as a byte cannot start or continue an element.  A trailing CR/LF
    is not an element and stops the walk (see strip_eol).
    """
    if end is None:
        end = len(buf)
    i = 0
    while i + _HEAD <= end:
        if buf[i] in (13, 10):
            return i
        if not _tag_ok(buf[i], buf[i + 1]):
            raise TLVError("bad tag at offset %d" % i)
        n = _length(buf, i + 2)
        if i + _HEAD + n > end:
            return i
        i += _HEAD + n
    if i < end:
        # fewer than 5 bytes left: only reject what can never become a tag
        for k in range(i, min(i + 2, end)):
            if not (65 <= buf[k] <= 90) and buf[k] not in (13, 10):
                raise TLVError("bad tag at offset %d" % i)
    return i


def strip_eol(buf, end):
    """Length of buf[:end] without trailing CR/LF (tolerated after a request)."""
    while end and buf[end - 1] in (13, 10):
        end -= 1
    return end


def _value(buf, i, n):
    for k in range(i, i + n):
        c = buf[k]
        if c < 32 or c > 127:
            raise TLVError("non-ASCII byte at offset %d" % k)
    return bytes(buf[i:i + n]).decode()


def _walk(buf, start, end, nested):
    out = {}
    i = start
    first = True
    while i < end:
        if end - i < _HEAD:
            raise TLVError("truncated element at offset %d" % i)
        if not _tag_ok(buf[i], buf[i + 1]):
            raise TLVError("bad tag at offset %d" % i)
        tag = chr(buf[i]) + chr(buf[i + 1])
        n = _length(buf, i + 2)
        if n == 0:
            raise TLVError("zero-length %s" % tag)
        v0 = i + _HEAD
        if v0 + n > end:
            raise TLVError("%s value runs past the end" % tag)
        if first and not nested and tag != "CZ":
            raise TLVError("first tag is %s, not CZ" % tag)
        first = False
        if tag[0] == "Z":
            if nested:
                raise TLVError("%s nested in a constructed tag" % tag)
            inner = _walk(buf, v0, v0 + n, True)
            if tag in out:
                if tag != "ZT":
                    raise TLVError("%s repeated" % tag)
                out[tag].append(inner)
            else:
                out[tag] = [inner]
        else:
            if tag in out:
                raise TLVError("%s repeated" % tag)
            out[tag] = _value(buf, v0, n)
        i = v0 + n
    return out


def decode(buf):
    """Decode one whole message (bytes-like) into a dict; TLVError if malformed."""
    end = strip_eol(buf, len(buf))
    if not end:
        raise TLVError("empty message")
    return _walk(buf, 0, end, False)


def _put(out, tag, value):
    if len(tag) != 2 or not _tag_ok(ord(tag[0]), ord(tag[1])):
        raise TLVError("bad tag %r" % tag)
    n = len(value)
    if n > MAX_VALUE:
        raise TLVError("%s value too long (%d)" % (tag, n))
    out.append("%s%03d%s" % (tag, n, value))


def encode_pairs(pairs):
    """Encode [(tag, value)] to str; empty values are skipped (never sent)."""
    out = []
    for tag, value in pairs:
        if isinstance(value, list):
            value = encode_pairs(value)
        if value:
            _put(out, tag, value)
    return "".join(out)


def encode(pairs):
    """Encode [(tag, value)] to the bytes sent on the wire."""
    return encode_pairs(pairs).encode()
