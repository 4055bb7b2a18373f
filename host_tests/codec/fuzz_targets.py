"""What every codec must survive, for any bytes: one function per target.

Each target takes arbitrary bytes, drives one codec with them and checks
its invariants: it raises nothing but the codec's own error (those are
caught here and reported as "err:<Class>"), its buffers never grow past the
configured maximum, and whatever decodes encodes back to the same thing.
Anything else (an AssertionError, a TypeError, an IndexError...) escapes: a
bug.  The Hypothesis tests (host_tests/test_fuzz_codecs.py, CPython) and the
corpus replay (test_corpus.py, CPython and MicroPython) call the same
functions, so a case found on CPython is replayed on the interpreter the
firmware runs on.  No pytest, no hypothesis here: MicroPython imports it.
"""
from wire import concert_link, concert_tlv, concert_v2, http, p3, synqpay_link, ws

LIMIT = 256  # the small maximum the buffering codecs are given here


def _chunks(data):
    """Split data where its own bytes say (so a case replays identically):
    the first byte's low nibble + 1 is the chunk size."""
    if not data:
        return []
    k = (data[0] & 15) + 1
    rest = data[1:]
    return [rest[i:i + k] for i in range(0, len(rest), k)]


# -- Concert V3 TLV


def concert_tlv_decode(data):
    try:
        n = concert_tlv.scan(data)
        assert 0 <= n <= len(data)
    except concert_tlv.TLVError:
        pass
    try:
        m = concert_tlv.decode(data)
    except concert_tlv.TLVError:
        return "err:TLVError"
    # what decodes encodes back to the same dict
    pairs = [("CZ", m["CZ"])]  # first; the rest in any order (MicroPython's dicts have none)
    for tag in m:
        v = m[tag]
        if isinstance(v, list):
            for inner in v:
                pairs.append((tag, [(k, inner[k]) for k in inner]))
        elif tag != "CZ":
            pairs.append((tag, v))
    assert concert_tlv.decode(concert_tlv.encode(pairs)) == m, m
    return "ok"


# -- Concert V2 (E, E+)


def concert_v2_decode(data):
    s = concert_v2.salvage(data)  # never raises, whatever the bytes
    assert len(s["pos"]) == 2 and len(s["amount"]) == 8 and len(s["currency"]) == 3
    assert len(concert_v2.encode(s, concert_v2.REFUSED)) in (25, 80)
    try:
        m = concert_v2.decode(data)
    except concert_v2.V2Error:
        return "err:V2Error"
    ans = concert_v2.encode(m, concert_v2.ACCEPTED, "x")
    assert len(ans) == (80 if m["ind"] == "1" else 25)
    assert concert_v2.decode(bytes(data)) == m
    return "ok"


# -- Concert serial link


def link_line(data):
    """The line brings these bytes (chunked); a zero chunk byte is a time-out."""
    ln = concert_link.Link(retries=2, max_msg=LIMIT, max_frame=64)
    got = []
    for chunk in _chunks(data):
        if chunk[0] == 0xFF:
            ev = ln.timeout()
        else:
            ev = ln.receive(chunk)
        assert len(ln.msg) <= LIMIT
        for kind, detail in ev:
            assert kind in ("request", "nak", "abandoned", "sent", "failed"), kind
            if kind == "request":
                assert len(detail) <= LIMIT
                got.append(detail)
                ln.send(b"ANSWER" * 20)  # the terminal answers every request
        out = ln.output()
        assert len(out) <= len(chunk) + 140  # a control byte per byte, and the answer
    return "ok:%d" % len(got)


def link_roundtrip(data):
    """Any message up to the limit, framed as a register does, arrives whole."""
    msg = bytes([32 + (b % 95) for b in data[:LIMIT]])
    ln = concert_link.Link(max_msg=LIMIT, max_frame=64)
    assert ln.receive(bytes([concert_link.ENQ])) == ()
    assert ln.output() == bytes([concert_link.ACK])
    ev = ()
    for i in range(0, max(len(msg), 1), 64):
        part = msg[i:i + 64]
        ev = ln.receive(concert_link.frame(part, i + 64 >= len(msg)))
        assert ln.output() == bytes([concert_link.ACK])
    assert ev == [("request", msg)], ev
    return "ok"


# -- P3 framing and envelope


def p3_count(data):
    head = (bytes(data[:4]) + b"\0\0\0\0")[:4]
    try:
        n = p3.count(head, LIMIT)
    except p3.P3Error as e:
        assert e.kind == p3.MESSAGE_INVALID
        return "err:P3Error"
    assert 0 <= n <= LIMIT
    return "ok"


def p3_loads(data):
    red = p3.redact(bytes(data))
    assert isinstance(red, bytes)
    try:
        text = bytes(data).decode()
    except UnicodeError:
        text = None
    if text is not None:
        a = p3.minor(text, 2)
        assert a is None or (type(a) is int and 0 <= a < 10 ** 12), a
    try:
        m = p3.loads(data)
    except p3.P3Error as e:
        assert e.kind == p3.MESSAGE_INVALID
        return "err:P3Error"
    assert isinstance(m, dict)
    # what was read writes back to JSON that reads the same (dumps leaves
    # out the None values of objects)
    assert p3.loads(p3.dumps(m)) == _no_none(m)
    return "ok"


def _no_none(v):
    if isinstance(v, dict):
        return {k: _no_none(v[k]) for k in v if v[k] is not None}
    if isinstance(v, list):
        return [_no_none(x) for x in v]
    return v


# -- WebSocket


def ws_frames(data):
    """A client's frames: each header parsed against the limit, payloads
    unmasked and joined into messages no longer than the limit."""
    msg = ws.Message(LIMIT)
    i = 0
    n = len(data)
    out = 0
    try:
        while n - i >= 2:
            need = 2 + ws.more_head(data[i:i + 2])
            if n - i < need:
                break
            fin, op, size, mask = ws.parse_head(data[i:i + need], LIMIT)
            assert 0 <= size <= LIMIT and len(mask) == 4
            i += need
            payload = ws.unmask(bytearray(data[i:i + size]), mask)
            i += size
            if op >= ws.CLOSE:
                if op == ws.CLOSE:
                    ws.parse_close(payload)
                continue
            m = msg.feed(fin, op, payload)
            assert len(msg.buf) <= LIMIT
            if m is not None:
                assert len(m[1]) <= LIMIT
                out += 1
    except ws.WSError as e:
        assert e.code in (ws.PROTOCOL, ws.TOO_BIG, ws.BAD_DATA), e.code
        return "err:WSError"
    return "ok:%d" % out


def ws_unmask(data):
    mask = (bytes(data[:4]) + b"\1\2\3\4")[:4]
    body = bytes(data[4:])
    x = ws.unmask(bytearray(body), mask)
    assert len(x) == len(body)
    for k in range(len(body)):
        assert x[k] == body[k] ^ mask[k % 4]
    assert bytes(ws.unmask(x, mask)) == body
    return "ok"


# -- Synqpay link


def synqpay_stream(data):
    """A peer's bytes, chunked: frames or link errors, nothing buffered past
    one frame of the limit (header 10, CRC 2, ETX 1) and one chunk."""
    d = synqpay_link.Decoder(LIMIT, synqpay_link.CRC_EITHER)
    frames = 0
    for chunk in _chunks(data):
        if chunk[0] == 0xFE:  # the sender went quiet: what the adapter does then
            ev = d.expire()
            assert ev is None or ev == (synqpay_link.BAD, synqpay_link.E_MESSAGE, None), ev
            assert ev is not None or not d.pending(), "pending, and nothing to expire"
        else:
            d.feed(chunk)
            ev = d.next()
        k = 0
        while ev is not None:
            k += 1
            assert k <= 2 * len(d.buf) + 2, "next() does not advance"
            t, a, payload = ev
            if t == synqpay_link.BAD:
                assert a in (synqpay_link.E_MESSAGE, synqpay_link.E_TYPE, synqpay_link.E_CRC,
                             synqpay_link.E_LEN), a
            else:
                assert t in d.accept or t == synqpay_link.ERROR
                if payload is not None:
                    assert 0 < len(payload) <= LIMIT
                frames += 1
            ev = d.next()
        assert len(d.buf) - d.i <= LIMIT + 13, len(d.buf) - d.i
    d.expire()
    return "ok:%d" % frames


def synqpay_roundtrip(data):
    """Frames of any payload, split anywhere, come out as they went in."""
    payload = bytes(data[1:LIMIT + 1]) or b"x"
    key = b"\x12\x34\x56\x78"
    wire = synqpay_link.frame(synqpay_link.REQUEST, payload, key) + synqpay_link.control(
        synqpay_link.KEEPALIVE) + synqpay_link.frame(synqpay_link.REQUEST, payload[1:] + b"!", key)
    d = synqpay_link.Decoder(LIMIT)
    got = []
    k = (data[0] % 17) + 1 if data else 1
    for i in range(0, len(wire), k):
        d.feed(wire[i:i + k])
        ev = d.next()
        while ev is not None:
            got.append(ev)
            ev = d.next()
    assert got == [(1, key, payload), (4, None, None), (1, key, payload[1:] + b"!")], got
    return "ok"


# -- HTTP request heads


def http_head(data):
    e = http.head_end(data)
    assert e == -1 or 4 <= e <= len(data)
    try:
        method, target, version, headers = http.parse_head(data)
    except http.HTTPError as err:
        assert err.status == 400
        return "err:HTTPError"
    assert version.startswith("HTTP/1.")
    for k in headers:
        assert k == k.lower() and isinstance(headers[k], str)
    try:
        ws.handshake(method, target, version, headers, "/")
    except http.HTTPError as err:
        assert err.status in (400, 404, 405, 426)
        return "ok:%d" % err.status
    return "ok:101"


TARGETS = {
    "concert_tlv": concert_tlv_decode,
    "concert_v2": concert_v2_decode,
    "concert_link": link_line,
    "concert_link_roundtrip": link_roundtrip,
    "p3_count": p3_count,
    "p3_loads": p3_loads,
    "ws_frames": ws_frames,
    "ws_unmask": ws_unmask,
    "synqpay_link": synqpay_stream,
    "synqpay_roundtrip": synqpay_roundtrip,
    "http_head": http_head,
}
