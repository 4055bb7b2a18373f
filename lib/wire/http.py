"""The head of an HTTP/1.1 request, and the head of a response: sans-I/O.

Enough HTTP for a WebSocket handshake and a small control page: the request
line and the header fields, no bodies, no chunking.  The caller bounds how
many bytes it reads before head_end() finds the blank line.
"""


class HTTPError(Exception):
    """Answer with this status; `headers` are extra (name, value) pairs."""

    def __init__(self, status, reason, headers=()):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers


def head_end(buf):
    """Index just past the blank line that ends the head, or -1."""
    i = buf.find(b"\r\n\r\n")
    return -1 if i < 0 else i + 4


def _token(s):
    if not s:
        return False
    for c in s:
        if c in ' \t"(),/:;<=>?@[\\]{}' or ord(c) < 33 or ord(c) > 126:
            return False
    return True


def parse_head(data):
    """(method, target, version, headers) of a request head; header names in
    lower case, repeated fields joined with ", ".  Raises HTTPError(400)."""
    try:
        text = bytes(data).decode()
    except UnicodeError:
        raise HTTPError(400, "Bad Request")
    lines = text.split("\r\n")
    while lines and not lines[-1]:
        lines.pop()
    parts = lines[0].split(" ") if lines else ()
    if len(parts) != 3 or not _token(parts[0]) or not parts[2].startswith("HTTP/1."):
        raise HTTPError(400, "Bad Request")
    headers = {}  # type: dict
    for line in lines[1:]:
        i = line.find(":")
        name = line[:i].lower()
        if i < 1 or not _token(name):  # also refuses obsolete line folding
            raise HTTPError(400, "Bad Request")
        value = line[i + 1:].strip()
        old = headers.get(name)
        headers[name] = value if old is None else old + ", " + value
    return parts[0], parts[1], parts[2], headers


def has_token(value, token):
    """True if a comma-separated header value lists token (any case)."""
    for v in (value or "").split(","):
        if v.strip().lower() == token:
            return True
    return False


def response(status, reason, headers=(), body=b""):
    out = ["HTTP/1.1 %d %s\r\n" % (status, reason)]
    for k, v in headers:
        out.append("%s: %s\r\n" % (k, v))
    if status >= 400:
        out.append("Content-Type: text/plain\r\nContent-Length: %d\r\n" % len(body))
        out.append("Connection: close\r\n")
    out.append("\r\n")
    return "".join(out).encode() + body
