"""WebSocket (RFC 6455) codec; runs under pytest (CPython) and mp_runner (MicroPython)."""
from check import raises
from wire import http, ws

REQ = (b"GET /p3 HTTP/1.1\r\nHost: t:8080\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
       b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


def _open(req=REQ, path="/p3"):
    return ws.handshake(*(http.parse_head(req[:http.head_end(req)]) + (path,)))


def test_accept_key_of_rfc_6455():
    assert ws.accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_answer():
    assert _open() == (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
    assert _open(REQ.replace(b"/p3 ", b"/p3?x=1 ")).startswith(b"HTTP/1.1 101")


def test_handshake_refusals():
    cases = ((REQ, "/", 404), (REQ.replace(b"GET", b"POST"), "/p3", 405),
             (REQ.replace(b"Upgrade: websocket\r\n", b""), "/p3", 426),
             (REQ.replace(b"Version: 13", b"Version: 8"), "/p3", 426),
             (REQ.replace(b"dGhlIHNhbXBsZSBub25jZQ==", b"short"), "/p3", 400),
             (REQ.replace(b"keep-alive, Upgrade", b"close"), "/p3", 400),
             (REQ.replace(b"Host: t:8080\r\n", b""), "/p3", 400))
    for req, path, status in cases:
        e = raises(http.HTTPError, _open, req, path)
        assert e.status == status, (req, e.status)
    e = raises(http.HTTPError, _open, REQ.replace(b"Version: 13", b"Version: 8"), "/p3")
    assert ("Sec-WebSocket-Version", "13") in e.headers


def test_frame_header_parsing():
    h = bytes((0x81, 0x85)) + b"\x01\x02\x03\x04"
    assert ws.more_head(h[:2]) == 4
    assert ws.parse_head(h, 100) == (True, ws.TEXT, 5, b"\x01\x02\x03\x04")
    h = bytes((0x01, 0xFE, 0x01, 0x00)) + b"abcd"
    assert ws.more_head(h[:2]) == 6 and ws.parse_head(h, 1000) == (False, ws.TEXT, 256, b"abcd")
    h = bytes((0x82, 0xFF)) + (70000).to_bytes(8, "big") + b"abcd"
    assert ws.more_head(h[:2]) == 12 and ws.parse_head(h, 100000)[2] == 70000


def test_frame_header_violations():
    bad = ((bytes((0x81, 0x05)), ws.PROTOCOL),  # not masked
           (bytes((0xC1, 0x85)) + b"mask", ws.PROTOCOL),  # RSV1
           (bytes((0x83, 0x85)) + b"mask", ws.PROTOCOL),  # opcode 3
           (bytes((0x09, 0x80)) + b"mask", ws.PROTOCOL),  # fragmented ping
           (bytes((0x89, 0xFE, 0, 126)) + b"mask", ws.PROTOCOL),  # ping of 126
           (bytes((0x81, 0xFF)) + b"\xff" * 8 + b"mask", ws.PROTOCOL),  # 64-bit top bit
           (bytes((0x81, 0xFF)) + b"\x00\x00\x00\x00\xff\xff\xff\xff" + b"mask", ws.TOO_BIG),
           (bytes((0x81, 0xFE, 0x40, 0x01)) + b"mask", ws.TOO_BIG))
    for h, code in bad:
        e = raises(ws.WSError, ws.parse_head, h, 16384)
        assert e.code == code, (h, e.code)


def test_unmask_round_trip_and_rfc_example():
    # RFC 6455 5.7: masked "Hello"
    buf = bytearray(b"\x7f\x9f\x4d\x51\x58")
    assert bytes(ws.unmask(buf, b"\x37\xfa\x21\x3d")) == b"Hello"
    data = bytes(range(256)) * 3 + b"tail"
    buf = ws.unmask(bytearray(data), b"\xa1\xb2\xc3\xd4")
    assert bytes(buf) != data and bytes(ws.unmask(buf, b"\xa1\xb2\xc3\xd4")) == data
    assert bytes(ws.unmask(bytearray(), b"abcd")) == b""
    # in pieces of any multiple of 4, the same; a piece alone touches only itself
    masked = bytes(ws.unmask(bytearray(data), b"\xa1\xb2\xc3\xd4"))
    for piece in (4, 64, 100):
        part = bytearray(data)
        for i in range(0, len(part), piece):
            ws.unmask_piece(part, b"\xa1\xb2\xc3\xd4", i, piece)
        assert part == masked, piece
    part = bytearray(data)
    ws.unmask_piece(part, b"\xa1\xb2\xc3\xd4", 64)
    assert part[64:128] == masked[64:128] and part[:64] == data[:64] and part[128:] == data[128:]


def test_server_frames():
    assert ws.frame(ws.TEXT, b"Hello") == b"\x81\x05Hello"
    assert ws.frame(ws.TEXT, b"x" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert ws.frame(ws.BINARY, b"x" * 65536)[:10] == b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"
    assert ws.frame(ws.PONG, b"hi") == b"\x8a\x02hi"
    assert ws.close_frame(1002, "bad") == b"\x88\x05\x03\xeabad"


def test_close_payloads():
    assert ws.parse_close(b"") == (None, "")
    assert ws.parse_close(b"\x03\xe8bye") == (1000, "bye")
    for bad in (b"\x03", b"\x03\xed", b"\x00\x10", b"\x03\xe8\xff"):
        raises(ws.WSError, ws.parse_close, bad)


def test_fragmented_message_is_joined():
    m = ws.Message(10)
    assert m.feed(False, ws.TEXT, b"ab") is None
    assert m.feed(False, ws.CONT, b"cd") is None
    assert m.feed(True, ws.CONT, b"e") == (ws.TEXT, bytearray(b"abcde"))
    assert m.feed(True, ws.TEXT, b"x") == (ws.TEXT, b"x")


def test_fragment_violations():
    raises(ws.WSError, ws.Message(10).feed, True, ws.CONT, b"a")
    m = ws.Message(10)
    m.feed(False, ws.TEXT, b"a")
    assert raises(ws.WSError, m.feed, True, ws.TEXT, b"b").code == ws.PROTOCOL
    m = ws.Message(4)
    m.feed(False, ws.TEXT, b"abc")
    assert raises(ws.WSError, m.feed, True, ws.CONT, b"de").code == ws.TOO_BIG
