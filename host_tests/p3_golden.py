"""Golden transcripts for P3: whole conversations, one or more connections.

Message transcripts (host_tests/golden/p3/) hold the JSON of each message and
run over both transports, framed TCP and WebSocket:

    # what the flow is                    (comments)
    @config {"delays": {...}}             (optional: config overrides, JSON)
    > {"type":"LOGIN_MERCHANT_REQUEST"...}    the POS sends this on connection 1
    < {"type":"LOGIN_MERCHANT_RESPONSE"...}   the next message on connection 1, exactly
    2> {...}  2< {...}                    the same on connection 2 (opened on first use)
    <                                     connection 1 is closed by the terminal
    @close 2                              the POS closes connection 2

Raw transcripts (golden/p3_tcp/, golden/p3_ws/) hold bytes, written as in
golden.py (<hh> for bytes outside printable ASCII), on one connection:

    > bytes      sent         + bytes    sent 50 ms after the previous ones
    < bytes      received     <          the terminal closes the connection
    =            close this connection and open a new one

`pytest --update-goldens` rewrites the "<" lines from what the firmware sends.
"""
import json
import re
import socket
import time

from golden import to_bytes, to_text

_LINE = re.compile(r"^(\d*)([<>])( (.*))?$")


class Script:
    def __init__(self, path):
        self.path = path
        self.lines = open(path).read().splitlines()
        self.config = {}
        for line in self.lines:
            if line.startswith("@config "):
                self.config = json.loads(line[8:])

    def save(self, got):
        """got: {line index: text of the "<" line}."""
        for i, text in got.items():
            self.lines[i] = text
        with open(self.path, "w") as f:
            f.write("\n".join(self.lines) + "\n")


def run_messages(script, open_conn, update):
    """Play a message transcript; returns (mismatches, rewritten lines)."""
    conns = {}
    bad = []
    got = {}

    def conn(n):
        if n not in conns:
            conns[n] = open_conn()
        return conns[n]

    try:
        for i, line in enumerate(script.lines):
            if line.startswith("@close "):
                conns.pop(int(line[7:])).close()
                continue
            m = _LINE.match(line)
            if not m:
                continue
            n = int(m.group(1) or 1)
            want = m.group(4)
            if m.group(2) == ">":
                conn(n).send(to_bytes(want))
                continue
            raw = conn(n).recv_raw()
            text = (m.group(1) + "< " + to_text(raw)) if raw is not None else m.group(1) + "<"
            got[i] = text
            if text != line and not update:
                bad.append("line %d\n  want %s\n  got  %s" % (i + 1, line, text))
                break
    finally:
        for c in conns.values():
            c.close()
    return bad, got


def _read(s, n, update):
    """n bytes (or, updating, whatever comes before 0.5 s of silence);
    None when the connection closes first with nothing read."""
    buf = b""
    s.settimeout(0.5 if update else 10)
    while update or len(buf) < n:
        try:
            chunk = s.recv(65536 if update else n - len(buf))
        except socket.timeout:
            break
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return buf or None
        buf += chunk
    return buf


def run_raw(script, addr, update):
    """Play a raw transcript against addr."""
    bad = []
    got = {}
    s = socket.create_connection(addr, timeout=10)
    try:
        for i, line in enumerate(script.lines):
            if line == "=":
                s.close()
                s = socket.create_connection(addr, timeout=10)
            elif line.startswith("> "):
                s.sendall(to_bytes(line[2:]))
            elif line.startswith("+ "):
                time.sleep(0.05)
                s.sendall(to_bytes(line[2:]))
            elif line.startswith("<"):
                want = to_bytes(line[2:]) if line != "<" else None
                if want is None:
                    data = _read(s, 1, update)  # the close: nothing more must come
                else:
                    data = _read(s, len(want), update)
                text = "<" if data is None else "< " + to_text(data)
                got[i] = text
                if text != line and not update:
                    bad.append("line %d\n  want %s\n  got  %s" % (i + 1, line, text))
                    break
    finally:
        s.close()
    return bad, got
