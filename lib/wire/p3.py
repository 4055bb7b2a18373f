"""P3 PayProtocol (Payworks PayServer): framing and JSON envelope; sans-I/O.

Over TCP each message is a 4-byte unsigned big-endian byte count, then that
many bytes of UTF-8 JSON.  size() checks a count against the caller's limit
before anything is read, so no length a peer chooses is ever allocated.

JSON is read with the decimals kept as text: MicroPython boards have 32-bit
floats, which cannot hold 123456.78 exactly, so loads() turns every number
with a fraction or exponent into a string and minor() converts amounts to
integer minor units exactly.  dumps() writes messages built as tuples of
(key, value) pairs, so keys come out in a fixed order (MicroPython dicts
have none); bytes are written as they are (amounts: b"12.50"), None values
are left out.  size() and pieces() let a sender write a long message in
small pieces after its length.
"""
import json

from wire.lenient import coerce

# error types (the error.type of a RESPONSE with status ERROR), docs/P3.md; the three
# only the rarer requests answer are defined where they are answered
# (firmware/p3_other_requests.py, in RAM only while it serves one)
MESSAGE_INVALID = "MESSAGE_INVALID"
TYPE_UNKNOWN = "MESSAGE_TYPE_UNKNOWN"
MISSING = "PARAMETER_MISSING"
INVALID = "PARAMETER_INVALID"
RESOURCE_UNKNOWN = "RESOURCE_UNKNOWN"
SERVER_AUTHENTICATION_FAILED = "SERVER_AUTHENTICATION_FAILED"
ACCESSORY_BUSY = "ACCESSORY_BUSY"  # another transaction runs, or the heap is short: try again
TRANSACTION_ERROR = "TRANSACTION_ERROR"  # the transaction ended in error (the response has it)


class P3Error(Exception):
    """An ERROR response: error.type `kind`, a message and a developer detail."""

    def __init__(self, kind, message, detail=None):
        super().__init__(message)
        self.kind = kind
        self.detail = detail


def frame(payload):
    return head(len(payload)) + payload


def head(n):
    """The 4-byte header of an n-byte message."""
    return n.to_bytes(4, "big")


def count(head, limit):
    """The byte count of a 4-byte header; P3Error if above limit."""
    n = int.from_bytes(head, "big")
    if n > limit:
        raise P3Error(MESSAGE_INVALID, "message of %d bytes refused (max %d)" % (n, limit))
    return n


def _quote_decimals(b):
    """JSON bytes with every number that has a fraction or exponent quoted."""
    out = []
    start = i = 0
    n = len(b)
    instr = False
    while i < n:
        c = b[i]
        if instr:
            if c == 92:  # backslash: skip the escaped byte
                i += 1
            elif c == 34:
                instr = False
        elif c == 34:
            instr = True
        elif c == 45 or 48 <= c <= 57:
            j = i
            frac = False
            while j < n and b[j] in b"+-.eE0123456789":
                frac = frac or b[j] in b".eE"
                j += 1
            if frac:
                out.append(b[start:i])
                out.append(b'"' + b[i:j] + b'"')
                start = j
            i = j
            continue
        i += 1
    if not out:
        return b
    out.append(b[start:])
    return b"".join(out)


MAX_DEPTH = 64  # far deeper than any P3 message; json needs heap for every level


def _too_deep(data):
    """True if arrays and objects nest deeper than MAX_DEPTH (strings skipped).
    Most messages have fewer brackets than that in all: no scan for them."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False
    depth = 0
    quoted = escaped = False
    for c in data:
        if quoted:
            if escaped:
                escaped = False
            elif c == 92:  # backslash
                escaped = True
            elif c == 34:
                quoted = False
        elif c == 34:
            quoted = True
        elif c == 91 or c == 123:
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif c == 93 or c == 125:
            depth -= 1
    return False


def loads(data):
    """The JSON object a message holds; P3Error(MESSAGE_INVALID) if none."""
    if not hasattr(data, "count"):  # a memoryview
        data = bytes(data)
    if _too_deep(data):
        raise P3Error(MESSAGE_INVALID, "message nested too deep")
    if b"." in data or b"e" in data or b"E" in data:
        data = _quote_decimals(data)
    try:
        text = str(data, "utf-8")
    except UnicodeError:
        raise P3Error(MESSAGE_INVALID, "message is not valid UTF-8")
    try:
        obj = json.loads(text)
    except ValueError:
        raise P3Error(MESSAGE_INVALID, "message is not valid JSON")
    except RuntimeError:  # CPython's RecursionError: nested too deep (MicroPython: MemoryError)
        raise P3Error(MESSAGE_INVALID, "message nested too deep")
    if not isinstance(obj, dict):
        raise P3Error(MESSAGE_INVALID, "message is not a JSON object")
    return obj


def _dump(v, put):
    if isinstance(v, tuple):
        put(b"{")
        sep = b""
        for k, x in v:
            if x is not None:  # a key from a peer may need escapes: json writes it
                put(sep + ('"' + k + '"' if k.isalpha() else json.dumps(k)).encode() + b":")
                _dump(x, put)
                sep = b","
        put(b"}")
    elif isinstance(v, list):
        put(b"[")
        for i, x in enumerate(v):
            if i:
                put(b",")
            _dump(x, put)
        put(b"]")
    elif isinstance(v, bytes):
        put(v)
    elif isinstance(v, dict):
        _dump(tuple(v.items()), put)
    else:
        put(json.dumps(v).encode())


def dumps(msg):
    out = bytearray()
    _dump(msg, out.extend)
    return out


def size(msg):
    """The byte length of dumps(msg), without building it."""
    n = [0]

    def count(b):
        n[0] += len(b)

    _dump(msg, count)
    return n[0]


def pieces(msg, put, chunk, buf):
    """Write dumps(msg) through put() in pieces of at most `chunk` bytes (but
    for a longer single value), all made in buf, a bytearray of chunk bytes
    the caller keeps: a long message needs neither one long block nor a
    new one per piece (a fragmented heap may have neither).  put() uses or
    copies each piece before it returns."""
    buf[:] = b""  # empty, its room kept: extend() below does not allocate

    def add(b):
        if buf and len(buf) + len(b) > chunk:
            put(buf)
            buf[:] = b""
        buf.extend(b)

    _dump(msg, add)
    if buf:
        put(buf)


def camel(typ):
    """LOGIN_MERCHANT_REQUEST -> loginMerchantRequest (where the body sits)."""
    p = typ.lower().split("_")
    return p[0] + "".join([x[:1].upper() + x[1:] for x in p[1:]])


def message(typ, tag=None, resource=None, status=None, error=None, body=None):
    """A message in envelope order; the body under camel(typ)."""
    return (("type", typ), ("tag", tag), ("resource", resource), ("status", status),
            ("error", error), (camel(typ), body))


def error(typ, tag, resource, e):
    """The ERROR response for a P3Error."""
    err = (("type", e.kind), ("message", str(e)), ("developerMessage", e.detail or str(e)))
    return message(typ, tag, resource, "ERROR", err)


def field(d, key, path, types=str, need=True):
    """d[key] checked: P3Error naming path+key if missing (when needed) or of
    the wrong type (bool is not a number here)."""
    v = d.get(key)
    if v is None:
        if need:
            raise P3Error(MISSING, "%s%s is missing" % (path, key), path + key)
        return None
    if not isinstance(v, types) or (isinstance(v, bool) and types is not bool):
        raise P3Error(INVALID, "%s%s has the wrong type" % (path, key), path + key)
    return v


# The spellings seen in the wild for "the cardholder signs the paper
# receipt"; booleans sent as text are coerced as PayServer's JSON reader
# does (wire.lenient, docs/P3.md).
_FLAGS = ("autoCapture", "signatureOnReceipt", "verified")
_ALIASES = (("verifyOnReceipt", "signatureOnReceipt"), ("onReceipt", "signatureOnReceipt"))


def relax(body):
    """Coerce, in place, what a lenient server accepts in a request body and
    its transactionParameters: text booleans, and the other spellings of
    signatureOnReceipt.  Returns a note per change, for the log; what is not
    unambiguous is left for field() to refuse."""
    notes = []
    for d in (body, body.get("transactionParameters")):
        if not isinstance(d, dict):
            continue
        for alias, key in _ALIASES:
            if alias in d and key not in d:
                d[key] = d.pop(alias)
                notes.append("%s taken as %s" % (alias, key))
        notes += coerce(d, _FLAGS)
    return notes


def currency_field(d, path, need=True):
    """(ISO numeric, decimals) of the alphabetic code d["currency"]; P3Error
    if it is missing (when needed), of the wrong type or not a known code."""
    code = field(d, "currency", path, str, need)
    if code is None:
        return None
    # imported here, not at the top: one global fewer keeps this module's
    # dict a size smaller on the board (64 bytes)
    from wire import currency

    row = currency.by_alpha(code)
    if row is None:
        raise P3Error(INVALID, "currency %s is not known" % code, path + "currency")
    return row[1], row[2]


def amount_field(d, path, places, need=True):
    """d["amount"] in minor units; P3Error if it is missing (when needed) or
    not a positive amount with at most `places` decimals."""
    v = field(d, "amount", path, (int, str), need)
    if v is None:
        return None
    a = minor(v, places)
    if not a:
        raise P3Error(INVALID, "amount %s is not a positive amount with at most %d decimals"
                      % (v, places), path + "amount")
    return a


def minor(v, places):
    """An amount (an int, or decimal text as loads() keeps it) in minor units;
    None unless it is a plain non-negative decimal with at most `places`
    significant decimals and at most 12 digits in all."""
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str):
        return None
    i, _, f = v.partition(".")
    f = f.rstrip("0")
    if not i or not _ascii_digits(i) or not _ascii_digits(f) or len(f) > places:
        return None
    digits = i.lstrip("0") + f + "0" * (places - len(f))
    if len(digits) > 12:
        return None
    return int(i + f + "0" * (places - len(f)))


def _ascii_digits(s):
    """True if s is only 0-9 (str.isdigit() also takes superscripts, which
    int() refuses, and other scripts' digits)."""
    for c in s:
        if not "0" <= c <= "9":
            return False
    return True


def decimal(amount, places):
    """Minor units -> the bytes of a JSON number: 1250, 2 -> b"12.50"."""
    if not places:
        return b"%d" % amount
    p = 10 ** places
    return b"%d.%0*d" % (amount // p, places, amount % p)


def redact(data, keys=(b'"merchantSecret"', b'"signature"')):
    """The message for a log line: the string values of these keys replaced
    by ***, up to the end when the message is cut inside one."""
    for k in keys:
        i = data.find(k)
        while i >= 0:  # every occurrence: JSON lets a key repeat (the last one counts)
            c = data.find(b":", i + len(k))
            a = data.find(b'"', c) if c >= 0 else -1
            if a < 0:
                break
            z = a + 1
            while z < len(data) and data[z] != 34:
                z += 2 if data[z] == 92 else 1
            data = data[:a + 1] + b"***" + data[z:]
            i = data.find(k, a + 4)
    return data
