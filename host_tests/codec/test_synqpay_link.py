"""Synqpay link-layer codec; runs under pytest (CPython) and mp_runner (MicroPython)."""
from binascii import unhexlify

from wire import synqpay_link as L

# The docs' worked request: getDeviceInfo with key 12 34 AB CD.  Its payload is
# 68 bytes; the docs print CRC 40 A2, which no CRC-16 variant gives for these
# bytes; the documented algorithm (CRC-16/MODBUS over length + payload) gives
# 33 3B.  docs/SYNQPAY.md explains the choice.
DOCS_PAYLOAD = b'{"jsonrpc":"2.0","method":"getDeviceInfo","id":"1234","params":null}'
DOCS_FRAME = unhexlify(
    "02011234abcd00000044"
    "7b226a736f6e727063223a22322e30222c226d6574686f64223a22676574446576696365496e666f222c"
    "226964223a2231323334222c22706172616d73223a6e756c6c7d"
    "333b03"
)
KEY = unhexlify("1234abcd")


def bitwise_crc(data):
    """CRC-16/MODBUS the slow way, as the docs' pseudocode reads: a cross-check."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def drain(d):
    out = []
    while True:
        ev = d.next()
        if ev is None:
            return out
        out.append(ev)


def decode(data, **kw):
    d = L.Decoder(**kw)
    d.feed(data)
    return drain(d)


def test_crc_check_value_and_cross_check():
    assert L.crc16(b"123456789") == 0x4B37
    for data in (b"", b"\x00", b"\xff" * 7, DOCS_PAYLOAD, bytes(range(256))):
        assert L.crc16(data) == bitwise_crc(data)


def test_docs_worked_request_frame():
    assert len(DOCS_PAYLOAD) == 68 and len(DOCS_FRAME) == 81
    assert L.frame(L.REQUEST, DOCS_PAYLOAD, KEY) == DOCS_FRAME
    assert L.crc16(DOCS_FRAME, 6, 78) == 0x333B  # over length + payload, not the key
    assert decode(DOCS_FRAME) == [(L.REQUEST, KEY, DOCS_PAYLOAD)]


def test_control_frames():
    assert L.control(L.KEEPALIVE) == b"\x02\x04\x03"
    assert L.control(L.ACK) == b"\x02\x05\x03"
    assert L.control(L.ERROR, L.E_AUTH) == b"\x02\x06\x05\x03"
    assert decode(b"\x02\x04\x03\x02\x05\x03") == [(L.KEEPALIVE, None, None), (L.ACK, None, None)]


def test_response_and_event_frames_as_a_client_reads_them():
    rsp = L.frame(L.RESPONSE, b'{"id":"1"}')
    assert rsp[:6] == b"\x02\x02\x00\x00\x00\x0a" and rsp[-1] == 3
    client = (L.RESPONSE, L.EVENT, L.ACK, L.ERROR)
    got = decode(L.frame(L.EVENT, b"{}") + rsp + L.control(L.ERROR, 3), accept=client)
    assert got == [(L.EVENT, None, b"{}"), (L.RESPONSE, None, b'{"id":"1"}'), (L.ERROR, 3, None)]


def test_split_at_every_byte_and_joined():
    stream = DOCS_FRAME + L.control(L.KEEPALIVE) + DOCS_FRAME
    for cut in range(1, len(stream)):
        d = L.Decoder()
        d.feed(stream[:cut])
        got = drain(d)
        d.feed(stream[cut:])
        got += drain(d)
        assert got == [(L.REQUEST, KEY, DOCS_PAYLOAD), (L.KEEPALIVE, None, None),
                       (L.REQUEST, KEY, DOCS_PAYLOAD)], cut
        assert not d.pending()


def test_one_byte_at_a_time():
    d = L.Decoder()
    got = []
    for i in range(len(DOCS_FRAME)):
        assert got == []
        d.feed(DOCS_FRAME[i:i + 1])
        got = drain(d)
        if i < len(DOCS_FRAME) - 1:
            assert d.pending()
    assert got == [(L.REQUEST, KEY, DOCS_PAYLOAD)]


def test_garbage_gives_one_error_then_resyncs():
    got = decode(b"GET / HTTP/1.1\r\n\r\n" + DOCS_FRAME)
    assert got == [(L.BAD, L.E_MESSAGE, None), (L.REQUEST, KEY, DOCS_PAYLOAD)]
    # a run split across reads is still one run
    d = L.Decoder()
    d.feed(b"hello")
    assert drain(d) == [(L.BAD, L.E_MESSAGE, None)]
    d.feed(b" world")
    assert drain(d) == []
    d.feed(DOCS_FRAME + b"xx")
    assert drain(d) == [(L.REQUEST, KEY, DOCS_PAYLOAD), (L.BAD, L.E_MESSAGE, None)]


def test_bad_crc_is_consumed_whole():
    bad = bytearray(DOCS_FRAME)
    bad[-2] ^= 0xFF
    assert decode(bytes(bad) + DOCS_FRAME) == [(L.BAD, L.E_CRC, None), (L.REQUEST, KEY, DOCS_PAYLOAD)]


def test_crc_byte_order_settings():
    le = bytearray(DOCS_FRAME)
    le[-3], le[-2] = le[-2], le[-3]
    le = bytes(le)
    assert decode(le) == [(L.BAD, L.E_CRC, None)]
    assert decode(le, crc=L.CRC_EITHER) == [(L.REQUEST, KEY, DOCS_PAYLOAD)]
    junk = DOCS_FRAME[:-3] + b"\x00\x00\x03"
    assert decode(junk, crc=L.CRC_EITHER) == [(L.BAD, L.E_CRC, None)]
    assert decode(junk, crc=L.CRC_OFF) == [(L.REQUEST, KEY, DOCS_PAYLOAD)]


def test_unknown_and_refused_types():
    assert decode(b"\x02\x07\x03" + DOCS_FRAME) == [(L.BAD, L.E_TYPE, None), (L.REQUEST, KEY, DOCS_PAYLOAD)]
    # a device does not take a Response from its client
    rsp = L.frame(L.RESPONSE, b"{}")
    assert decode(rsp + DOCS_FRAME) == [(L.BAD, L.E_TYPE, None), (L.REQUEST, KEY, DOCS_PAYLOAD)]


def test_control_frame_without_etx():
    assert decode(b"\x02\x04\x04" + DOCS_FRAME) == [(L.BAD, L.E_MESSAGE, None),
                                                  (L.REQUEST, KEY, DOCS_PAYLOAD)]


def test_lengths():
    # zero
    assert decode(b"\x02\x01" + KEY + b"\x00\x00\x00\x00\xff\xff\x03")[0] == (L.BAD, L.E_LEN, None)
    # above the limit: refused as soon as the length field is in, no payload awaited
    d = L.Decoder(limit=64)
    d.feed(DOCS_FRAME[:10])
    assert drain(d) == [(L.BAD, L.E_LEN, None)]
    # 4 GB: nothing is allocated for it, and the next frame is served
    d = L.Decoder()
    d.feed(b"\x02\x01" + KEY + b"\xff\xff\xff\xff" + b'{"a":1}' * 100 + DOCS_FRAME)
    assert drain(d) == [(L.BAD, L.E_LEN, None), (L.REQUEST, KEY, DOCS_PAYLOAD)]
    assert len(d.buf) < 1000


def test_length_that_does_not_match_the_frame():
    short = bytearray(DOCS_FRAME)
    short[9] = 0x40  # says 64 bytes; the ETX is 4 further on
    got = decode(bytes(short) + DOCS_FRAME)
    assert got[0] == (L.BAD, L.E_LEN, None) and got[-1] == (L.REQUEST, KEY, DOCS_PAYLOAD)


def test_truncated_frame_expires_and_the_next_one_is_read():
    d = L.Decoder()
    d.feed(DOCS_FRAME[:40])
    assert drain(d) == [] and d.pending()
    assert d.expire() == (L.BAD, L.E_MESSAGE, None)
    assert drain(d) == []  # the rest of the cut frame: skipped quietly
    assert not d.pending() and d.expire() is None
    d.feed(DOCS_FRAME)
    assert drain(d) == [(L.REQUEST, KEY, DOCS_PAYLOAD)]


def test_truncated_frame_swallowing_the_next_is_recovered():
    """A cut frame followed at once by a good one: the good one is found again."""
    d = L.Decoder()
    d.feed(DOCS_FRAME[:30] + DOCS_FRAME + DOCS_FRAME)
    got = drain(d)
    assert got[0] == (L.BAD, L.E_LEN, None)
    assert got.count((L.REQUEST, KEY, DOCS_PAYLOAD)) >= 1


def test_buffer_stays_bounded():
    d = L.Decoder(limit=256)
    for _ in range(200):
        d.feed(b"\x02\x01" + KEY + b"\x00\x00\x01\x00" + b"x" * 200)
        drain(d)
        assert len(d.buf) <= 256 + 13 + 210


def test_a_frame_from_pieces_is_the_frame_of_their_join():
    body = [b'{"jsonrpc":"2.0",', b"", b'"id":1,"result":"\xc3\xa9"}']
    for key in (None, b"\x12\x34\xab\xcd"):
        got = L.pieces(L.RESPONSE, body, key)
        assert got[1:-1] == tuple(body)  # the pieces themselves, not copies
        assert b"".join(got) == L.frame(L.RESPONSE, b"".join(body), key)


def test_a_frame_taken_out_with_no_room_comes_out_whole_next_time():
    """next() changes nothing until the frame is taken out: a MemoryError
    there (its payload's copy) leaves the same frame for the next call."""
    d = L.Decoder(4096)
    d.feed(DOCS_FRAME)

    def no_room(*args):
        raise MemoryError("memory allocation failed, allocating 68 bytes")

    L.bytes = no_room  # the module's copies of the frame find no room
    try:
        try:
            d.next()
        except MemoryError:
            pass
        else:
            raise AssertionError("next() found room")
    finally:
        del L.bytes
    assert d.next() == (L.REQUEST, KEY, DOCS_PAYLOAD) and d.next() is None
