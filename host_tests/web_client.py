"""A small HTTP client for the terminal's control API (host_tests/test_web*.py):
raw sockets, so a test sees exactly what the terminal sends."""
import json
import socket

TOKEN = "test-token-1"


def addr(fw):
    return fw.address("web")


def raw(fw, data, timeout=10.0):
    """Send bytes, read until the terminal closes; the whole answer."""
    s = socket.create_connection(addr(fw), timeout=timeout)
    try:
        s.sendall(data)
        buf = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return buf
            if not chunk:
                return buf
            buf += chunk
    finally:
        s.close()


def split(answer):
    """(status, headers dict, body bytes) of a whole answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def request(fw, method, path, body=None, token=TOKEN, headers=()):
    """(status, JSON or text) of one call."""
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    head = ["%s %s HTTP/1.1" % (method, path), "Host: t"]
    if token:
        head.append("Authorization: Bearer " + token)
    if method != "GET":
        head.append("Content-Type: application/json")
        head.append("Content-Length: %d" % len(data))
    head += list(headers)
    status, hdrs, out = split(raw(fw, ("\r\n".join(head) + "\r\n\r\n").encode() + data))
    if hdrs.get("content-type", "").startswith("application/json"):
        return status, json.loads(out)
    return status, out.decode("utf-8", "replace")


def get(fw, path, **kw):
    return request(fw, "GET", path, **kw)


def post(fw, path, body=None, **kw):
    return request(fw, "POST", path, {} if body is None else body, **kw)


def ok(fw, method, path, body=None):
    status, out = request(fw, method, path, body)
    assert status == 200, (method, path, status, out)
    return out
