"""HTTP request heads (the WebSocket handshake, the control page); CPython and MicroPython."""
from check import raises
from wire import http


def test_head_end():
    assert http.head_end(b"GET / HTTP/1.1\r\nA: b\r\n\r\nrest") == 24
    assert http.head_end(b"GET / HTTP/1.1\r\nA: b\r\n") == -1


def test_parse_head():
    m, t, v, h = http.parse_head(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A:  1 \r\nx-a: 2\r\n\r\n")
    assert (m, t, v) == ("GET", "/a?b=1", "HTTP/1.1")
    assert h == {"host": "x", "x-a": "1, 2"}


def test_bad_heads():
    for bad in (b"", b"GET /\r\n\r\n", b"GET / HTTP/2\r\n\r\n", b"GET  / HTTP/1.1\r\n\r\n",
                b"GET / HTTP/1.1\r\n folded\r\n\r\n", b"GET / HTTP/1.1\r\nNo colon\r\n\r\n",
                b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", b"G\xc3\x28 / HTTP/1.1\r\n\r\n"):
        assert raises(http.HTTPError, http.parse_head, bad).status == 400, bad


def test_has_token():
    assert http.has_token("keep-alive, Upgrade", "upgrade")
    assert not http.has_token("upgraded", "upgrade") and not http.has_token(None, "x")


def test_response():
    assert http.response(101, "Switching Protocols", (("Upgrade", "websocket"),)) == \
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    r = http.response(404, "Not Found", (), b"no\n")
    assert r == (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
                 b"Connection: close\r\n\r\nno\n")
