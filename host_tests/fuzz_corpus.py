"""Write the seed cases of the fuzzing corpus (host_tests/corpus/*.json).

    .venv/bin/python host_tests/fuzz_corpus.py      (make fuzz runs it)

Per target: valid messages, every prefix of one (truncated frames), inputs
with oversize lengths, and the inputs of the bugs found (regressions).  The
outcome written is what the target returns on CPython now; test_corpus.py
replays them on CPython and MicroPython and expects the same.  Cases that
`make fuzz` found (UNDERSTUDY_FUZZ_RECORD=1) are kept.
"""
import json
import os
import sys
from binascii import hexlify

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "codec"), os.path.join(os.path.dirname(HERE), "lib")]

import fuzz_targets as T  # noqa: E402
from wire import concert_link, concert_tlv, synqpay_link  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")
ODOO = b"CZ0040300CJ012012345678901CA00201CE003978CD0010CB0041250"
WS_HEAD = (b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
LOGIN = (b'{"type":"LOGIN_MERCHANT_REQUEST","tag":"A","loginMerchantRequest":'
         b'{"providerMode":"TEST","merchantIdentifier":"m","merchantSecret":"s3cr3t"}}')


def prefixes(b, step=1):
    return [b[:i] for i in range(0, len(b) + 1, step)]


def ws_frame(op, payload, fin=True, mask=b"\x11\x22\x33\x44", ext=None):
    n = len(payload)
    head = bytearray([(128 if fin else 0) | op])
    if ext is None and n < 126:
        head.append(128 | n)
    elif ext == 127:
        head += bytes([255]) + n.to_bytes(8, "big")
    else:
        head += bytes([128 | 126, n >> 8, n & 255])
    return bytes(head) + mask + bytes(payload[i] ^ mask[i % 4] for i in range(n))


def seeds():
    tlv_ok = concert_tlv.encode([("CZ", "0300"), ("CA", "01"), ("ZT", [("AK", "line")]),
                                 ("ZT", [("AK", "two")])])
    sq = synqpay_link.frame(synqpay_link.REQUEST, b'{"jsonrpc":"2.0","id":"1","method":"getStatus"}',
                            b"\x12\x34\xab\xcd")
    v2 = b"01000012500110978PRIVATE123"[:26]
    return {
        "concert_tlv": [ODOO, ODOO + b"\r\n", tlv_ok, b"CZ0040300CZ0040300", b"CA00201CZ0040300",
                        b"CZ0040300ZT010ZT0030ab", b"CZ0040300CB999" + b"1" * 20, b"CZ0040300CB000",
                        b"CZ0040300CB003\x001\xff", b"\r\n", b"cz0040300"] + prefixes(ODOO),
        "concert_v2": [v2, v2 + b"A010B010", v2 + b"A012B010", v2[:25], b"\x00" * 26, b"\xff" * 34,
                       b"ab" + v2[2:]] + prefixes(v2 + b"A011B011", 3),
        "concert_link": [b"\x03" + b"\x05" + concert_link.frame(ODOO) + b"\x04\x06\x06\x06",
                         b"\x00\x05\x02" + b"A" * 300 + b"\x03\x00",  # a frame over the limit
                         b"\x0f" + b"\x05\x02AB\x17\x41\x04" + b"\xff" * 16,  # ETB, then EOT
                         b"\x01" + bytes(range(256)), b"\x0f" + b"\xff" * 64,
                         b"\x02\x05\x02\x02\x02\x03\x00\x15\x15\x15\x15"],
        "concert_link_roundtrip": [b"", b"x", bytes(range(200)), b"\xff" * 256, b"A" * 64, b"B" * 65],
        "p3_count": [b"", b"\x00\x00\x01\x00", b"\x00\x00\x01\x01", b"\xff\xff\xff\xff", b"\x80"],
        "p3_loads": [LOGIN, b"{}", b"[]", b"", b"\xff\xfe{}", b'{"a":1.50,"b":-2e3}', b'{"\\f":[]}',
                     b'{"a":"\\u00e9"}', b'{"amount":"\xc2\xb2"}', b"\xc2\xb2", b"1.\xd9\xa2",
                     b'{"a":' + b"[" * 50 + b"]" * 50 + b"}", b'{"a":1} x', b"nul", b'{"a":NaN}',
                     b'{"merchantSecret":"a","merchantSecret":"b"}'] + prefixes(LOGIN, 7),
        "ws_frames": [ws_frame(1, b"hello"), ws_frame(1, b"he", False) + ws_frame(0, b"llo"),
                      ws_frame(1, b"x" * 300, ext=126), ws_frame(2, b"a" * 200, ext=127),
                      ws_frame(8, b"\x03\xe8bye"), ws_frame(8, b"\x03"), ws_frame(8, b"\x03\xed"),
                      ws_frame(8, b"\x03\xe8\xff"), ws_frame(9, b"p" * 126, ext=126),
                      ws_frame(0, b"x"), ws_frame(3, b""), b"\x81\x05hello",
                      b"\x81\xff\x80" + b"\x00" * 7 + b"abcd", b"\xf1\x80abcd",
                      ws_frame(1, b"a" * 200, False) + ws_frame(0, b"b" * 100)]
        + prefixes(ws_frame(1, b"abc", ext=127)),
        "ws_unmask": [b"", b"abcd", b"\x00\x00\x00\x00" + bytes(range(256)) * 2, b"\xff" * 600],
        "synqpay_link": [b"\x00" + sq, b"\x03" + sq + synqpay_link.control(4) + sq,
                         b"\x00\x02\x01\x12\x34\xab\xcd\x7f\xff\xff\xff",
                         b"\x05" + sq[:20] + b"\xfe" * 6 + sq,  # cut, expired, then whole
                         b"\x01" + sq[:20] + b"xyz" + b"\xfe" * 2 + b"\xfe" * 2,  # expired twice
                         b"\x00\x02\x07\x03\x02\x06\x09\x03\x02\x05\x03",
                         b"\x0f" + b"garbage" * 20 + sq] + [b"\x0f" + p for p in prefixes(sq, 5)],
        "synqpay_roundtrip": [b"\x00x", b"\x05" + b"y" * 256, b"\x10" + bytes(range(256))],
        "http_head": [WS_HEAD, WS_HEAD.replace(b"13", b"8"), WS_HEAD.replace(b"GET", b"POST"),
                      b"GET / HTTP/1.1\r\n\r\n", b"GET /\r\n\r\n", b"\xff\xfe\r\n\r\n",
                      b"GET / HTTP/1.1\r\n folded\r\n\r\n", b"GET / HTTP/1.1\r\n: x\r\n\r\n",
                      b"G(T / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nA: 1\r\nA: 2\r\nHost: h\r\n\r\n",
                      b"GET / HTTP/2\r\n\r\n", b""] + prefixes(WS_HEAD, 9),
    }


# where MicroPython's own modules differ from CPython's, and that is fine:
# CPython's json reads NaN (a float no field takes), MicroPython's refuses it
MP_DIFFERS = {b'{"a":NaN}': "err:P3Error"}


def outcome(target, data):
    try:
        return T.TARGETS[target](data)
    except Exception as e:  # a bug: the seed is kept, and the replay fails until fixed
        return "bug %s" % type(e).__name__


def main():
    os.makedirs(CORPUS, exist_ok=True)
    total = 0
    for target, cases in sorted(seeds().items()):
        path = os.path.join(CORPUS, target + ".json")
        found = []
        if os.path.exists(path):
            with open(path) as f:
                found = [c for c in json.load(f)["cases"] if c[2] == "found by make fuzz"]
        rows = []
        seen = set()
        for data in cases:
            h = hexlify(data).decode()
            if h not in seen:
                seen.add(h)
                out = outcome(target, data)
                if data in MP_DIFFERS:
                    out += "|mp:" + MP_DIFFERS[data]
                rows.append([h, out, "seed"])
        for c in found:
            if c[0] not in seen:
                seen.add(c[0])
                rows.append([c[0], outcome(target, bytes.fromhex(c[0])), c[2]])
        with open(path, "w") as f:
            f.write('{"target": %s, "cases": [\n' % json.dumps(target))
            f.write(",\n".join(json.dumps(r) for r in rows))
            f.write("\n]}\n")
        total += len(rows)
        for r in rows:
            if r[1].startswith("bug"):
                print("BUG %s %s: %s" % (target, r[0][:60], r[1]))
        print("%-24s %4d cases" % (target, len(rows)))
    print("%d cases in %s" % (total, CORPUS))


if __name__ == "__main__":
    main()
