"""Property tests of every codec with Hypothesis (CPython only).

Each property feeds a target of host_tests/codec/fuzz_targets.py (the same
functions the corpus replay runs under MicroPython): arbitrary bytes, and
valid messages mutated (bytes flipped, cut, inserted, repeated), so that
the fuzzer gets past the first check of each codec.  Round trips are
checked with messages built from their fields.

Profiles: `bounded` (make test: derandomized, a fixed number of cases per
target, seconds in all) and `long` (make fuzz: UNDERSTUDY_FUZZ=long).
With UNDERSTUDY_FUZZ_RECORD=1 the first input of every new outcome of a
target (an error message never seen, a first success) is added to
host_tests/corpus/<target>.json, to be replayed under MicroPython.
"""
import json
import os
import sys
from binascii import hexlify

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "codec"))

import fuzz_targets as T
from wire import concert_link, concert_tlv, concert_v2, http, p3, synqpay_link, ws

CORPUS = os.path.join(os.path.dirname(__file__), "corpus")
PROFILE = os.environ.get("UNDERSTUDY_FUZZ", "bounded")
RECORD = os.environ.get("UNDERSTUDY_FUZZ_RECORD") == "1"
# examples per property: the bounded run is part of `make test`
EXAMPLES = int(os.environ.get("UNDERSTUDY_FUZZ_EXAMPLES") or {"bounded": 150, "long": 5000}[PROFILE])

settings.register_profile("bounded", max_examples=EXAMPLES, derandomize=True, deadline=None,
                          database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=EXAMPLES, deadline=None, database=None,
                          print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(PROFILE)

_seen = {}  # type: dict


def run(target, data):
    """Run a target; under UNDERSTUDY_FUZZ_RECORD keep its new outcomes."""
    data = bytes(data)
    out = T.TARGETS[target](data)
    if RECORD:
        key = out if not out.startswith("ok:") else "ok:" + out[3:][:2]
        seen = _seen.setdefault(target, set())
        if key not in seen and len(data) <= 600:
            seen.add(key)
            _record(target, data, out)
    return out


def _record(target, data, out):
    path = os.path.join(CORPUS, target + ".json")
    doc = {"target": target, "cases": []}
    if os.path.exists(path):
        with open(path) as f:
            doc = json.load(f)
    h = hexlify(data).decode()
    if any(c[0] == h for c in doc["cases"]):
        return
    outs = {c[1].split("|")[0] for c in doc["cases"]}
    if out in outs and out.startswith("err"):
        return
    doc["cases"].append([h, out, "found by make fuzz"])
    write_corpus(path, doc)


def write_corpus(path, doc):
    with open(path, "w") as f:
        f.write('{"target": %s, "cases": [\n' % json.dumps(doc["target"]))
        f.write(",\n".join(json.dumps(c) for c in doc["cases"]))
        f.write("\n]}\n")


# -- mutations of valid messages


@st.composite
def mutated(draw, base):
    """A valid message (from strategy base), then a few random edits."""
    b = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 5))
        i = draw(st.integers(0, len(b)))
        if kind == 0 and b and i < len(b):
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == 1 and i < len(b):
            del b[i:i + draw(st.integers(1, 8))]
        elif kind == 2:
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == 3:
            b = b[:i]
        elif kind == 4 and b and i < len(b):
            b[i] = draw(st.sampled_from([0, 2, 3, 4, 5, 6, 13, 10, 21, 23, 127, 128, 255]))
        elif kind == 5:
            b += b[i:i + draw(st.integers(1, 40))]
    return bytes(b)


def either(valid):
    return st.one_of(st.binary(max_size=600), mutated(valid), valid)


# -- Concert V3 TLV

ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=127), min_size=1, max_size=40)
TAG = st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXY"), min_size=2, max_size=2).filter(
    lambda t: t[0] != "Z" and t != "CZ")
ZTAG = st.sampled_from(["ZT", "ZA", "ZB"])


@st.composite
def tlv_pairs(draw):
    pairs = [("CZ", "0300")]
    used = {"CZ"}
    for _ in range(draw(st.integers(0, 8))):
        if draw(st.booleans()):
            tag = draw(TAG)
            if tag in used:
                continue
            used.add(tag)
            pairs.append((tag, draw(ASCII)))
        else:
            tag = draw(ZTAG)
            if tag in used and tag != "ZT":
                continue
            used.add(tag)
            inner = draw(st.dictionaries(TAG, ASCII, min_size=1, max_size=4))
            pairs.append((tag, list(inner.items())))
    return pairs


TLV = tlv_pairs().map(concert_tlv.encode)


@given(either(TLV))
def test_concert_tlv_bytes(data):
    run("concert_tlv", data)


@given(tlv_pairs(), st.sampled_from([b"", b"\r", b"\r\n", b"\n"]))
def test_concert_tlv_roundtrip(pairs, eol):
    m = concert_tlv.decode(concert_tlv.encode(pairs) + eol)
    want = {}
    for tag, v in pairs:
        if isinstance(v, list):
            want.setdefault(tag, []).append(dict(v))
        else:
            want[tag] = v
    assert m == want


# -- Concert V2

V2 = st.builds(
    lambda pos, amt, ind, mode, typ, cur, priv, ext: (
        "%02d%08d%s%s%s%03d%s" % (pos, amt, ind, mode, typ, cur, priv) + ext).encode(),
    st.integers(0, 99), st.integers(0, 99999999), st.sampled_from("01"), st.sampled_from("1C0"),
    st.sampled_from("0123"), st.integers(0, 999),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=10, max_size=10),
    st.sampled_from(["", "A010B010", "A011B011", "A010B012"]))


@given(either(V2))
def test_concert_v2_bytes(data):
    run("concert_v2", data)


@given(V2)
def test_concert_v2_valid_requests_decode(data):
    assert run("concert_v2", data) == "ok"


# -- Concert serial link


@st.composite
def line(draw):
    """What a register (or a noisy line) sends: sessions, frames, noise."""
    out = bytearray([draw(st.integers(0, 255))])  # the chunk size
    for _ in range(draw(st.integers(1, 6))):
        k = draw(st.integers(0, 4))
        if k == 0:
            out.append(concert_link.ENQ)
        elif k == 1:
            body = draw(st.binary(max_size=90))
            f = bytearray(concert_link.frame(body, draw(st.booleans())))
            if draw(st.booleans()):
                f[-1] ^= 1  # bad LRC
            out += f
        elif k == 2:
            out.append(draw(st.sampled_from([concert_link.EOT, concert_link.ACK, concert_link.NAK])))
        elif k == 3:
            out += b"\xff" * 17  # a time-out (chunk of 0xFF)
        else:
            out += draw(st.binary(max_size=20))
    return bytes(out)


@given(st.one_of(st.binary(max_size=600), line(), mutated(line())))
def test_concert_link_line(data):
    run("concert_link", data)


@given(st.binary(max_size=T.LIMIT + 10))
def test_concert_link_roundtrip(data):
    run("concert_link_roundtrip", data)


# -- P3

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10 ** 15, 10 ** 15) | st.text(max_size=20)
    | st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-10 ** 9, max_value=10 ** 9),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=20)


def _dump(v):
    if isinstance(v, dict):
        return "{" + ",".join("%s:%s" % (json.dumps(k), _dump(x)) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ",".join(_dump(x) for x in v) + "]"
    if v is not None and not isinstance(v, (bool, int, str)):
        return str(v)  # a Decimal, written as it is
    return json.dumps(v)


def _as_read(v):
    """What p3.loads makes of v: decimals with a fraction or exponent as text."""
    if isinstance(v, dict):
        return {k: _as_read(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_as_read(x) for x in v]
    if v is not None and not isinstance(v, (bool, int, str)):
        s = str(v)
        return s if ("." in s or "e" in s.lower()) else int(s)
    return v


P3MSG = st.dictionaries(st.text(max_size=10), JSON, max_size=6).map(lambda d: _dump(d).encode())


@given(either(P3MSG))
def test_p3_bytes(data):
    run("p3_loads", data)


@given(st.dictionaries(st.text(max_size=10), JSON, max_size=6))
def test_p3_loads_keeps_decimals_exact(d):
    assert p3.loads(_dump(d).encode()) == _as_read(d)


@given(st.binary(min_size=4, max_size=4))
def test_p3_count(data):
    run("p3_count", data)


@given(st.text(max_size=14))
def test_p3_minor_never_raises(s):
    a = p3.minor(s, 2)
    assert a is None or (type(a) is int and a >= 0)


SECRET = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters='"\\'),
                 min_size=6, max_size=20)


@given(SECRET, st.dictionaries(st.sampled_from(["tag", "type", "subject", "merchantIdentifier"]),
                               st.text(max_size=30), max_size=4),
       st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]), st.integers(0, 400),
       st.booleans())
def test_p3_redact_hides_the_secret(secret, extra, seps, cut, twice):
    secret = "s3cr3t" + secret  # found nowhere else
    body = dict(extra, providerMode="TEST", merchantSecret=secret)
    if twice:
        body["subject"] = '"merchantSecret":"x"'  # the key's text inside a value first
    msg = {"type": "LOGIN_MERCHANT_REQUEST", "tag": "t"}
    if twice:
        msg["note"] = '"merchantSecret":"y"'
    msg["loginMerchantRequest"] = body
    data = json.dumps(msg, separators=seps).encode()
    cut = min(cut, len(data))
    red = p3.redact(data[:max(cut, data.find(b'"merchantSecret"', data.find(b"loginMerchant"))
                              + 20)])
    assert secret.encode() not in red


# -- WebSocket


@st.composite
def ws_frame(draw):
    op = draw(st.sampled_from([0, 1, 2, 8, 9, 10, 3]))
    fin = draw(st.booleans()) if op < 8 else True
    payload = draw(st.binary(max_size=140 if op < 8 else 125))
    if op == 8:
        payload = draw(st.sampled_from([b"", b"\x03\xe8", b"\x03\xe8bye", b"\x03\xed", b"\x01"]))
    n = len(payload)
    ext = draw(st.sampled_from([0, 126, 127])) if n < 126 else 126
    mask = draw(st.binary(min_size=4, max_size=4))
    head = bytearray([(128 if fin else 0) | op])
    if ext == 0 and n < 126:
        head.append(128 | n)
    elif ext == 126:
        head += bytes([128 | 126, n >> 8, n & 255])
    else:
        head += bytes([128 | 127]) + n.to_bytes(8, "big")
    masked = bytes(payload[i] ^ mask[i % 4] for i in range(n))
    return bytes(head) + mask + masked


WS = st.lists(ws_frame(), max_size=5).map(b"".join)


@given(either(WS))
def test_ws_frames(data):
    run("ws_frames", data)


@given(st.binary(max_size=600))
def test_ws_unmask(data):
    run("ws_unmask", data)


@given(st.lists(st.binary(max_size=100), min_size=1, max_size=5))
def test_ws_fragments_join_up_to_the_limit(parts):
    m = ws.Message(T.LIMIT)
    total = sum(len(p) for p in parts)
    out = None
    try:
        for i, p in enumerate(parts):
            out = m.feed(i == len(parts) - 1, ws.TEXT if i == 0 else ws.CONT, p)
    except ws.WSError as e:
        assert e.code == ws.TOO_BIG and total > T.LIMIT
        return
    assert total <= T.LIMIT or len(parts) == 1
    assert out == (ws.TEXT, b"".join(parts))


# -- Synqpay link


@st.composite
def synqpay_stream(draw):
    out = bytearray([draw(st.integers(0, 255))])
    for _ in range(draw(st.integers(1, 5))):
        k = draw(st.integers(0, 4))
        if k == 0:
            typ = draw(st.sampled_from([1, 2, 3]))
            payload = draw(st.binary(min_size=1, max_size=T.LIMIT + 20))
            out += synqpay_link.frame(typ, payload, b"\0\1\2\3" if typ == 1 else None)
        elif k == 1:
            out += synqpay_link.control(draw(st.sampled_from([4, 5])))
        elif k == 2:
            out += synqpay_link.control(6, draw(st.integers(0, 255)))
        elif k == 3:
            out += b"\xfe" * 17  # a time-out
        else:
            out += draw(st.binary(max_size=20))
    return bytes(out)


@given(st.one_of(st.binary(max_size=600), synqpay_stream(), mutated(synqpay_stream())))
def test_synqpay_link(data):
    run("synqpay_link", data)


@given(st.binary(min_size=1, max_size=T.LIMIT + 1))
def test_synqpay_roundtrip(data):
    run("synqpay_roundtrip", data)


@given(st.binary(max_size=8))
def test_synqpay_huge_length_is_refused_before_the_payload(tail):
    d = synqpay_link.Decoder(T.LIMIT)
    d.feed(b"\x02\x01\0\0\0\0\x7f\xff\xff\xff" + tail)
    assert d.next() == (synqpay_link.BAD, synqpay_link.E_LEN, None)


# -- HTTP


TOKEN = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"),
                min_size=1, max_size=12)


@st.composite
def http_request(draw):
    method = draw(st.sampled_from(["GET", "POST", "HEAD", "PUT"]))
    target = draw(st.sampled_from(["/", "/x", "/?a=1", "*"]))
    lines = ["%s %s HTTP/1.%d" % (method, target, draw(st.integers(0, 1)))]
    hdrs = draw(st.lists(st.tuples(TOKEN, st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                                  max_size=30)), max_size=5))
    if draw(st.booleans()):
        hdrs += [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                 ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")]
    lines += ["%s: %s" % h for h in hdrs]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@given(either(http_request()))
def test_http_head(data):
    run("http_head", data)


@given(http_request())
def test_http_valid_heads_parse(data):
    out = run("http_head", data)
    assert out.startswith("ok"), out
    method, target, version, _ = http.parse_head(data[:http.head_end(data)])
    assert data.decode().startswith("%s %s %s\r\n" % (method, target, version))


@given(st.binary(max_size=300))
def test_ws_close_payload(payload):
    try:
        code, _ = ws.parse_close(payload)
    except ws.WSError as e:
        assert e.code in (ws.PROTOCOL, ws.BAD_DATA)
        return
    assert code is None or 1000 <= code <= 4999


def test_v2_and_tlv_errors_are_value_errors():
    # what adapters catch: the codecs' own errors, nothing wider
    assert issubclass(concert_tlv.TLVError, ValueError) and issubclass(concert_v2.V2Error, ValueError)
