"""`understudy trace`: captured bytes of any personality, decoded into named fields.

Input, from a file or stdin:
- raw bytes (a capture saved as is: Wireshark's "follow stream, save as raw");
- hex ("02 01 00 00 ...", "0201...", with or without spaces or colons), or --hex;
- text lines in the log notation (printable ASCII as is, other bytes <hh>):
  `ecr --trace` output (`> 0.002 CZ0040300...`), golden transcripts
  (`> ...`, `< ...`), and the firmware's own frame log
  (`concert-ip rx 127.0.0.1 CZ0040300...`); each line is one message, its
  direction kept, and a log line is decoded with the protocol of the
  listener it names (a terminal's log mixes them all).

The protocol is recognised from the first bytes, or named with --protocol.
Decoding uses the firmware's codecs (lib/wire/); secrets (P3 merchant secret,
Synqpay API keys) are not shown.
"""
import argparse
import base64
import json
import re
import sys

from understudy import names
from understudy.codecs import concert_link as link
from understudy.codecs import concert_tlv as tlv
from understudy.codecs import p3 as p3w
from understudy.codecs import synqpay_link as L
from understudy.codecs import ws
from understudy.wiretext import from_text, to_text

PROTOCOLS = ("auto", "concert", "concert-serial", "p3", "p3-ws", "synqpay")
_HEXCHARS = re.compile(rb"^[0-9a-fA-F\s:,]+$")
_TRACE_LINE = re.compile(r"^([<>])(?: +\d+\.\d+)? (.*)$")
_LOG_LINE = re.compile(r"^(\S+) (rx|tx) (\S+) (.*)$")


class Out:
    """Headings, and fields aligned per message."""

    def __init__(self, stream):
        self.stream = stream
        self.rows = []  # (indent, name, value, meaning) or (indent, text)

    def head(self, mark, text):
        self.flush()
        self.stream.write(("%s %s" % (mark, text) if mark else text) + "\n")

    def field(self, name, value, meaning="", indent=""):
        self.rows.append((indent, str(name), str(value), meaning))

    def line(self, text, indent=""):
        self.rows.append((indent, text))

    def flush(self):
        rows, self.rows = self.rows, []
        fields = [r for r in rows if len(r) == 4]
        wn = max([len(r[0] + r[1]) for r in fields] + [0])
        wv = min(max([len(r[2]) for r in fields] + [0]), 36)
        for r in rows:
            if len(r) == 2:
                self.stream.write("    %s%s\n" % r)
            else:
                self.stream.write(("    %-*s  %-*s  %s" % (wn, r[0] + r[1], wv, r[2], r[3])).rstrip() + "\n")


# the firmware's log names the listener on each line: its protocol, and what
# the log keeps of a message (P3 and Synqpay: the JSON, without its framing)
LISTENERS = {"concert-ip": "concert", "concert-serial": "concert-serial", "p3-tcp": "p3-logged",
             "p3-ws": "p3-logged", "synqpay": "synqpay-logged", "synqpay-tls": "synqpay-logged",
             "synqpay-serial": "synqpay-logged"}


def messages(data):
    """[(direction ">" "<" or "", bytes, protocol or None)] from what was read;
    the protocol is known for a line of the firmware's log (its listener)."""
    text = None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        pass
    if text is not None:
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        out = []
        for ln in lines:
            m = _TRACE_LINE.match(ln)
            if m:
                out.append((m.group(1), from_text(m.group(2)), None))
                continue
            m = _LOG_LINE.match(ln)
            if m and m.group(2) in ("rx", "tx"):
                out.append((">" if m.group(2) == "rx" else "<", from_text(m.group(4)),
                            LISTENERS.get(m.group(1))))
        if out:  # other lines (ecr's progress, notes, comments) are not bytes
            return out
        if _HEXCHARS.match(data) and len(re.sub(rb"[\s:,]", b"", data)) % 2 == 0:
            return [("", bytes.fromhex(re.sub(r"[\s:,]", "", text)), None)]
        if "<" in text and re.search(r"<[0-9a-fA-F]{2}>", text):
            return [("", from_text(text.strip()), None)]
    return [("", data, None)]


def detect(b):
    if b[:2] == b"CZ":
        return "concert"
    if len(b) >= 3 and b[0] == L.STX and 1 <= b[1] <= 6:
        return "synqpay"
    if b[:1] and (b[0] in (link.ENQ, link.ACK, link.NAK, link.EOT) or (b[0] == link.STX and len(b) > 1)):
        return "concert-serial"
    if b[:4] in (b"GET ", b"HTTP"):
        return "p3-ws"
    if len(b) >= 5 and b[0] == 0 and b[4:5] == b"{":
        return "p3"
    if len(b) >= 2 and not b[0] & 0x70 and (b[0] & 15) in names.WS_OPCODES:
        return "p3-ws"
    if len(b) in (25, 26, 34, 80) and b[:2].isdigit():
        return "concert-v2"
    return None


# -- Concert -----------------------------------------------------------------

def _concert_pieces(b):
    """Split concatenated V3 messages at each CZ that starts an element."""
    starts, i = [0], 0
    while i + 5 <= len(b):
        if b[i:i + 2] == b"CZ" and i:
            starts.append(i)
        n = b[i + 2:i + 5]
        if not n.isdigit():
            break
        i += 5 + int(n)
    starts.append(len(b))
    return [b[starts[k]:starts[k + 1]] for k in range(len(starts) - 1)]


def concert(mark, b, out):
    for piece in _concert_pieces(b):
        try:
            msg = tlv.decode(piece)
        except tlv.TLVError as e:
            out.head(mark, "concert V3, %d bytes: malformed (%s)" % (len(piece), e))
            out.line(to_text(piece))
            continue
        kind = "answer" if "AE" in msg else "request"
        out.head(mark, "concert V3 %s, %d bytes" % (kind, len(piece)))
        _tlv_fields(msg, out)


def _tlv_fields(msg, out):
    for tag, value in msg.items():
        if tag == "ZT":
            for zt in value:
                out.field("ZT", "", "ticket")
                ck, ak = zt.get("CK", ""), zt.get("AK", "")
                out.field("CK", ck, "whose/format", "  ")
                try:
                    text = base64.b64decode(ak).decode("latin-1")
                except ValueError:
                    text = ak
                for ln in text.splitlines():
                    out.line("  | " + ln)
            continue
        out.field(tag, names.concert_value(tag, value), names.CONCERT_TAGS.get(tag, "?"))


def concert_v2(mark, b, out):
    text = b.decode("latin-1")
    table = names.V2_REQUEST if len(b) in (26, 34) else names.V2_ANSWER
    kind = "request" if len(b) in (26, 34) else "answer"
    out.head(mark, "concert V2 %s, %d characters" % (kind, len(b)))
    i = 0
    for name, size, meaning in table:
        if i >= len(text) or (name == "rep" and len(text) == 25):
            continue
        v = text[i:i + size]
        i += size
        code = names.V2_CODES.get(name, {}).get(v)
        out.field(name.upper(), "%s  (%s)" % (v, code) if code else v.rstrip() or "(blank)", meaning)


def concert_serial(mark, b, out):
    i = 0
    while i < len(b):
        c = b[i]
        if c == link.STX:
            end = i + 1
            while end < len(b) and b[end] not in (link.ETX, link.ETB):
                end += 1
            if end >= len(b):
                out.head(mark, "frame cut short: STX %s" % to_text(b[i + 1:]))
                return
            data = b[i + 1:end]
            good = end + 1 < len(b) and b[end + 1] == link.lrc(b, i + 1, end + 1)
            last = "ETX" if b[end] == link.ETX else "ETB (more frames follow)"
            out.head(mark, "frame: STX, %d characters, %s, LRC %s" % (
                len(data), last, "good" if good else "BAD" if end + 1 < len(b) else "missing"))
            if data[:2] == b"CZ":
                concert("", data, _Indent(out))
            elif detect(data) == "concert-v2":
                concert_v2("", data, _Indent(out))
            else:
                out.line(to_text(data))
            i = end + 2
        else:
            out.head(mark, names.LINK.get(c, "byte <%02x> (noise)" % c))
            i += 1


class _Indent:
    """An Out that writes one level deeper (a message inside a frame)."""

    def __init__(self, out):
        self.out = out

    def head(self, mark, text):
        self.out.line(text)

    def field(self, name, value, meaning="", indent=""):
        self.out.field(name, value, meaning, "  " + indent)

    def line(self, text, indent=""):
        self.out.line(text, "  " + indent)


# -- P3 ------------------------------------------------------------------------

def _json_fields(payload, out):
    try:
        obj = p3w.loads(bytes(p3w.redact(bytes(payload))))
    except p3w.P3Error as e:
        out.line("not JSON (%s): %s" % (e, to_text(payload[:300])))
        return
    for path, v in _flat("", obj):
        out.field(path, v)


def _flat(prefix, obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flat(prefix + "." + k if prefix else k, v)
    elif isinstance(obj, list) and obj and all(isinstance(x, (dict, list)) for x in obj):
        for n, v in enumerate(obj):
            yield from _flat("%s[%d]" % (prefix, n), v)
    else:
        yield prefix, json.dumps(obj) if not isinstance(obj, str) else obj


def p3(mark, b, out):
    i = 0
    while i < len(b):
        if len(b) - i < 4:
            out.head(mark, "P3: %d stray bytes %s" % (len(b) - i, to_text(b[i:])))
            return
        n = int.from_bytes(b[i:i + 4], "big")
        payload = b[i + 4:i + 4 + n]
        cut = " (cut short: %d of them here)" % len(payload) if len(payload) < n else ""
        typ = _p3_type(payload)
        out.head(mark, "P3 message, length %d%s%s" % (n, cut, ": " + typ if typ else ""))
        _json_fields(payload, out)
        i += 4 + n


def _p3_type(payload):
    m = re.search(rb'"type"\s*:\s*"([A-Z_]+)"', payload)
    return m.group(1).decode() if m else ""


def p3_logged(mark, b, out):
    """A P3 message as the firmware logs it: the JSON alone, a long one cut
    to its start and `...(N bytes)`."""
    m = re.search(rb"\.\.\.\((\d+) bytes\)$", b)
    body = b[:m.start()] if m else b
    typ = _p3_type(body)
    size = "%s bytes, the log keeps the start" % m.group(1).decode() if m else "%d bytes" % len(b)
    out.head(mark, "P3 message, %s%s" % (size, ": " + typ if typ else ""))
    if m:
        out.line(to_text(bytes(p3w.redact(bytes(body)))[:300]))
    else:
        _json_fields(body, out)


def p3_ws(mark, b, out):
    i = 0
    if b[:4] in (b"GET ", b"HTTP"):
        end = b.find(b"\r\n\r\n")
        end = len(b) if end < 0 else end + 4
        head = b[:end].decode("latin-1").split("\r\n")
        out.head(mark, "HTTP %s" % ("handshake answer" if b[:4] == b"HTTP" else "opening handshake"))
        for ln in head:
            if ln:
                out.line(ln)
        i = end
    while i < len(b):
        h = b[i:i + 2]
        if len(h) < 2:
            out.head(mark, "WebSocket: 1 stray byte")
            return
        extra = ws.more_head(h)
        hdr = b[i:i + 2 + extra]
        n = h[1] & 127
        if n == 126:
            n = int.from_bytes(hdr[2:4], "big")
        elif n == 127:
            n = int.from_bytes(hdr[2:10], "big")
        masked = bool(h[1] & 128)
        start = i + 2 + extra
        payload = bytearray(b[start:start + n])
        if masked:
            ws.unmask(payload, hdr[-4:])
        op = h[0] & 15
        out.head(mark, "WebSocket %s frame%s, %d bytes%s%s" % (
            names.WS_OPCODES.get(op, "opcode %d" % op), "" if h[0] & 128 else " (not final)", n,
            ", masked (client)" if masked else "", ", cut short" if len(payload) < n else ""))
        if op in (ws.TEXT, ws.CONT):
            _json_fields(payload, out)
        elif op == ws.CLOSE and len(payload) >= 2:
            reason = bytes(payload[2:]).decode("utf-8", "replace")
            out.field("code", int.from_bytes(payload[:2], "big"), reason)
        elif payload:
            out.line(to_text(payload))
        i = start + n


# -- Synqpay ------------------------------------------------------------------

def synqpay(mark, b, out):
    d = L.Decoder(limit=1 << 20, accept=(L.REQUEST, L.RESPONSE, L.EVENT, L.KEEPALIVE, L.ACK, L.ERROR))
    d.feed(b)
    while True:
        start = d.i
        ev = d.next()
        if ev is None:
            if d.pending():
                out.head(mark, "Synqpay: %d bytes of a frame cut short: %s" % (
                    len(d.buf) - d.i, to_text(d.buf[d.i:d.i + 40])))
            return
        typ, a, payload = ev
        size = d.i - start
        if typ == L.BAD:
            out.head(mark, "Synqpay: bad bytes (%s)" % names.SYNQPAY_ERRORS.get(a, a))
            continue
        out.head(mark, "Synqpay %s frame, %d bytes" % (names.SYNQPAY_TYPES[typ], size))
        if typ == L.REQUEST:
            out.field("key", "00000000" if a == L.ZERO_KEY else "(not shown)",
                      "the zero key: pairing" if a == L.ZERO_KEY else "API key")
        if typ == L.ERROR:
            out.field("code", "%02d" % a, names.SYNQPAY_ERRORS.get(a, ""))
        if payload:
            out.field("length", len(payload))
            _json_fields(re.sub(rb'("apiKey"\s*:\s*")[^"]*', rb"\1********", payload), out)


def synqpay_logged(mark, b, out):
    """A Synqpay message as the firmware logs it: a frame's JSON alone, or
    the name of a control frame (KEEPALIVE, ACK, ERROR 03)."""
    if b[:1] == b"{":
        out.head(mark, "Synqpay JSON-RPC, %d bytes" % len(b))
        _json_fields(re.sub(rb'("apiKey"\s*:\s*")[^"]*', rb"\1********", b), out)
    elif b[:1] == bytes((L.STX,)):
        synqpay(mark, b, out)
    else:
        out.head(mark, "Synqpay %s frame" % to_text(b))


DECODERS = {"concert": concert, "concert-v2": concert_v2, "concert-serial": concert_serial, "p3": p3,
            "p3-ws": p3_ws, "synqpay": synqpay, "p3-logged": p3_logged, "synqpay-logged": synqpay_logged}


def decode(msgs, protocol, out):
    """Decode each (direction, bytes, listener's protocol); True if every one
    was recognised.  A log line is decoded with its own listener's protocol."""
    known = True
    for mark, b, own in msgs:
        proto = protocol if protocol != "auto" else own or detect(b)
        if proto is None:
            known = False
            out.head(mark, "%d bytes of no known protocol (say which with --protocol):" % len(b))
            for k in range(0, len(b), 16):
                out.line("%04x  %-47s  %s" % (k, b[k:k + 16].hex(" "), to_text(b[k:k + 16])))
            continue
        DECODERS[proto](mark, b, out)
    out.flush()
    return known


def main(argv=None, prog="understudy trace"):
    p = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Decode captured bytes of any personality into named fields.",
        epilog="Input: raw bytes, hex, or lines in the log notation (`ecr --trace` output, golden "
        "transcripts, the firmware's frame log).\nExit status: 0 decoded, 1 not recognised, "
        "2 usage.")
    p.add_argument("file", nargs="?", help="capture file, - for stdin")
    p.add_argument("--hex", metavar="HEX", help="the bytes as hex on the command line instead")
    p.add_argument("--protocol", choices=PROTOCOLS, default="auto",
                   help="what the bytes are (default: recognised from the first bytes)")
    a = p.parse_args(argv)
    if a.hex is not None:
        try:
            data = bytes.fromhex(re.sub(r"[\s:,]", "", a.hex))
        except ValueError:
            p.error("--hex: %r is not hex" % a.hex[:40])
    elif a.file and a.file != "-":
        try:
            with open(a.file, "rb") as f:
                data = f.read()
        except OSError as e:
            p.error("cannot read %s: %s" % (a.file, e.strerror))
    elif a.file == "-" or not sys.stdin.isatty():
        data = sys.stdin.buffer.read()
    else:
        p.error("give a capture file, - for stdin, or --hex")
    if not data:
        p.error("nothing to decode")
    return 0 if decode(messages(data), a.protocol, Out(sys.stdout)) else 1
