"""`understudy ecr p3`: a P3 PayProtocol POS (Payworks PayServer's protocol),
over length-prefixed TCP or a WebSocket.

It logs in, sends one request and follows the transaction: UPDATEs are shown
as progress on stderr, a SIGNATURE action is answered (--signature), Ctrl-C
sends an abort and waits for the final response.  Framing, JSON reading
(decimals kept exact) and the WebSocket accept key come from the firmware's
codecs (lib/wire/p3.py, ws.py); the WebSocket client itself is the few lines
a client needs (masked frames, pings answered), so --trace shows every byte.
"""
import base64
import json
import os
import select
import socket
import time
import uuid
from urllib.parse import urlsplit

from understudy import names
from understudy.codecs import p3 as wire
from understudy.codecs import ws
from understudy.ecr import Busy, NoAnswer, Result, Usage, Waiting, minor, progress
from understudy.wiretext import to_text

MAX_MESSAGE = 1 << 20  # a terminal's answer above this is refused, never allocated


def add_parser(sub):
    p = sub.add_parser(
        "p3", help="P3 PayProtocol (Payworks PayServer) over TCP or WebSocket",
        description="Act as a P3 POS: log in, send one request, follow the transaction, print "
        "the final response.",
        epilog="Actions: pay AMOUNT; refund AMOUNT (a card refund) or refund [AMOUNT] --of "
        "IDENTIFIER (refund of a payment); void IDENTIFIER (REVERSAL); status IDENTIFIER, "
        "status --custom REF, or status alone: the last transaction this command saw on that "
        "terminal (GET_TRANSACTION).  P3 has no settlement request.  Ctrl-C while "
        "the terminal waits for the card or PIN aborts the transaction.")
    p.add_argument("action", choices=("pay", "refund", "void", "status", "settle"))
    p.add_argument("value", nargs="?", help="amount in major units (pay, refund) or a transaction "
                   "identifier (void, status)")
    p.add_argument("--host", default="127.0.0.1", help="terminal address (default %(default)s)")
    p.add_argument("--port", type=int, help="TCP port (default 4245; with --ws 8080)")
    p.add_argument("--ws", nargs="?", const="", metavar="URL",
                   help="use the WebSocket transport (URL default ws://HOST:8080/)")
    p.add_argument("--currency", default="EUR", help="alphabetic code (default %(default)s)")
    p.add_argument("--custom", metavar="REF", help="customIdentifier (pay, refund; status by it)")
    p.add_argument("--of", metavar="IDENTIFIER", help="refund: the payment being refunded")
    p.add_argument("--merchant", default="understudy", help="merchantIdentifier (default %(default)s)")
    p.add_argument("--secret", default=os.environ.get("UNDERSTUDY_P3_SECRET", "understudy"),
                   help="merchantSecret (default $UNDERSTUDY_P3_SECRET, else understudy)")
    p.add_argument("--mode", default="TEST", help="providerMode (default %(default)s)")
    p.add_argument("--device", default="devices/understudy", help="resource (default %(default)s)")
    p.add_argument("--no-login", action="store_true", help="skip LOGIN_MERCHANT")
    p.add_argument("--preauth", action="store_true", help="pay: autoCapture false (pre-authorisation)")
    p.add_argument("--signature", choices=("paper", "refuse"), default="paper",
                   help="answer to a signature request: signed on the receipt (default), or "
                   "refused by the merchant")
    p.add_argument("--receipts", action="store_true", help="print the receipts")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for each message (default %(default)s)")


class TCP:
    """Each message: a 4-byte big-endian byte count, then the JSON."""

    def __init__(self, host, port, timeout, trace):
        self.trace = trace
        self.s = _connect(host, port, timeout, "P3 TCP")

    def send(self, payload):
        data = wire.frame(payload)
        self.s.sendall(data)
        self.trace.sent(data, to_text(wire.frame(wire.redact(payload))))  # the secret hidden

    def recv(self, timeout):
        self.s.settimeout(timeout)
        head = _exact(self.s, 4)
        if head is None:
            return None
        try:
            n = wire.count(head, MAX_MESSAGE)
        except wire.P3Error as e:
            raise NoAnswer(str(e))
        payload = _exact(self.s, n)
        if payload is None:
            raise NoAnswer("the terminal closed in the middle of a message")
        self.trace.received(head + payload)
        return payload

    def ready(self, seconds):
        """Bytes to read within seconds (or the end of the connection)?"""
        return bool(select.select([self.s], [], [], seconds)[0])

    def close(self):
        self.s.close()


class WS:
    """A WebSocket client: the opening handshake, masked text frames out,
    server frames in (pings answered, fragments joined, close echoed)."""

    def __init__(self, url, timeout, trace):
        u = urlsplit(url)
        if u.scheme != "ws" or not u.hostname:
            raise Usage("%r is not a ws:// URL (wss is not served: PayServer is a local service)" % url)
        self.trace = trace
        self.s = _connect(u.hostname, u.port or 80, timeout, "P3 WebSocket")
        key = base64.b64encode(os.urandom(16)).decode()
        head = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                % (u.path or "/", u.hostname, u.port or 80, key)).encode()
        self.s.sendall(head)
        trace.sent(head)
        self.s.settimeout(timeout)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self._recv(4096)
            if not chunk or len(buf) > 8192:
                raise NoAnswer("no WebSocket handshake answer from %s" % url)
            buf += chunk
        answer, _, self.rest = buf.partition(b"\r\n\r\n")
        trace.received(answer + b"\r\n\r\n")
        lines = answer.decode("latin-1").split("\r\n")
        retry = [ln.split(":", 1)[1].strip() for ln in lines[1:] if ln.lower().startswith("retry-after:")]
        if lines[0].startswith("HTTP/1.1 503") and retry:
            raise Busy("the terminal is busy (%s, Retry-After: %s s): nothing started, try again"
                       % (lines[0][9:], retry[0]))
        if not lines[0].startswith("HTTP/1.1 101"):
            raise NoAnswer("the terminal refused the WebSocket: %s (is %s the P3 path?)" % (lines[0], url))
        accept = [ln.split(":", 1)[1].strip() for ln in lines[1:]
                  if ln.lower().startswith("sec-websocket-accept:")]
        if accept != [ws.accept(key)]:
            raise NoAnswer("wrong Sec-WebSocket-Accept in the handshake answer")
        self.parts = []

    def ready(self, seconds):
        return bool(self.rest) or bool(select.select([self.s], [], [], seconds)[0])

    def _recv(self, n):
        try:
            return self.s.recv(n)
        except ConnectionResetError:
            return b""

    def _exact(self, n):
        while len(self.rest) < n:
            chunk = self._recv(65536)
            if not chunk:
                return None
            self.rest += chunk
        out, self.rest = self.rest[:n], self.rest[n:]
        return out

    def _frame(self, op, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = bytes((0x80 | op, 0x80 | n))
        elif n < 65536:
            head = bytes((0x80 | op, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            head = bytes((0x80 | op, 0x80 | 127)) + n.to_bytes(8, "big")
        data = head + mask + bytes(ws.unmask(bytearray(payload), mask))
        self.s.sendall(data)
        # shown unmasked (masked bytes read as noise), secrets hidden: `trace` decodes it
        shown = wire.redact(bytes(payload))
        self.trace.sent(data, to_text(ws.head(op, len(shown)) + shown))

    def send(self, payload):
        self._frame(ws.TEXT, payload)

    def recv(self, timeout):
        self.s.settimeout(timeout)
        while True:
            h = self._exact(2)
            if h is None:
                return None
            more = self._exact(ws.more_head(h)) if ws.more_head(h) else b""
            if more is None:
                return None
            n = h[1] & 127
            if n == 126:
                n = int.from_bytes(more[:2], "big")
            elif n == 127:
                n = int.from_bytes(more[:8], "big")
            if h[1] & 128 or n > MAX_MESSAGE:
                raise NoAnswer("bad frame from the terminal (masked, or %d bytes)" % n)
            payload = self._exact(n)
            if payload is None:
                return None
            self.trace.received(h + more + payload)
            op = h[0] & 15
            if op == ws.PING:
                self._frame(ws.PONG, payload)
            elif op == ws.CLOSE:
                self._frame(ws.CLOSE, payload[:2])
                return None
            elif op in (ws.TEXT, ws.BINARY, ws.CONT):
                self.parts.append(payload)
                if h[0] & 128:
                    msg, self.parts = b"".join(self.parts), []
                    return msg

    def close(self):
        try:
            self._frame(ws.CLOSE, (1000).to_bytes(2, "big"))
        except OSError:
            pass
        self.s.close()


def _connect(host, port, timeout, what):
    try:
        return socket.create_connection((host, port), timeout=min(timeout, 10))
    except OSError as e:
        raise NoAnswer("cannot connect to %s:%d (%s): is the terminal running, and is this its "
                       "%s port?" % (host, port, e.strerror or e, what))


def _exact(s, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None
        buf += chunk
    return buf


class POS:
    def __init__(self, a, trace):
        self.a = a
        self.ident = None  # the transaction's identifier, once a message names it
        self.wait = Waiting.of(a)
        if a.ws is not None:
            url = a.ws or "ws://%s:%d/" % (a.host, a.port or 8080)
            self.t = WS(url, a.timeout, trace)
        else:
            self.t = TCP(a.host, a.port or 4245, a.timeout, trace)

    def request(self, typ, body=None, resource=None):
        tag = uuid.uuid4().hex[:12]
        msg = {"type": typ + "_REQUEST", "tag": tag}
        if resource:
            msg["resource"] = resource
        if body is not None:
            msg[wire.camel(typ + "_REQUEST")] = body
        self.t.send(bytes(wire.dumps(msg)))  # amounts as bytes: exact JSON numbers (12.50)
        return tag

    def recv(self):
        w = self.wait
        w.begin(self.a.timeout)
        end = time.monotonic() + self.a.timeout
        try:
            while not self.t.ready(w.slice(end - time.monotonic())):  # silence: say so
                if time.monotonic() >= end:
                    raise socket.timeout()
                w.tick()
            raw = self.t.recv(self.a.timeout)
        except socket.timeout:
            raise NoAnswer("no message within %g s: the outcome is unknown (ask `p3 status`)"
                           % self.a.timeout)
        if raw is None:
            return None
        try:
            return wire.loads(bytes(raw))
        except wire.P3Error as e:
            raise NoAnswer("unreadable message (%s): %r" % (e, bytes(raw[:200])))

    def final(self, tag, what):
        """Messages up to the response tagged `tag`: progress shown, a
        signature answered, Ctrl-C turned into an abort."""
        aborted = False
        while True:
            try:
                m = self.recv()
            except KeyboardInterrupt:
                if aborted:
                    raise
                progress("aborting (Ctrl-C again to leave without the answer)")
                self.request("ABORT_TRANSACTION", None, self.a.device)
                aborted = True
                continue
            if m is None:
                raise NoAnswer("the terminal closed the connection before the %s: the outcome is "
                               "unknown, ask with `p3 status`" % what)
            typ = m.get("type", "")
            body = m.get(wire.camel(typ)) or {}
            if m.get("tag") == tag and typ.endswith("_RESPONSE"):
                t = body.get("transaction")
                if isinstance(t, dict) and t.get("identifier"):
                    self.ident = t["identifier"]  # shown with the result
                return m
            self.known(body.get("transaction"))
            if typ.endswith("_UPDATE"):
                d = body.get("transactionProcessDetails") or {}
                progress("%s %s" % (d.get("state", "?"), " / ".join(d.get("information") or [])))
            elif typ.endswith("_ACTION") and body.get("type") == "SIGNATURE":
                if self.a.signature == "paper":
                    progress("signature asked: signed on the receipt")
                    sig = {"signatureOnReceipt": True}
                else:
                    progress("signature asked: refused by the merchant")
                    sig = {"signature": "", "verified": False}
                self.request("SUBMIT_SIGNATURE", sig, self.a.device)
            elif m.get("status") == "ERROR":
                err = m.get("error") or {}
                progress("%s: %s %s" % (typ, err.get("type"), err.get("message")))

    def known(self, t):
        """The first message that names the transaction: its identifiers on
        stderr at once (a lost answer is then asked for by them)."""
        if not isinstance(t, dict) or not t.get("identifier") or t["identifier"] == self.ident:
            return
        self.ident = t["identifier"]
        custom = t.get("customIdentifier")
        progress("transaction %s%s" % (self.ident, " (customIdentifier %s)" % custom if custom else ""))

    def close(self):
        self.t.close()


def _last_file():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "understudy", "p3-last.json")


def remember(a, ident):
    """The newest identifier seen per terminal (host:port), for `status`."""
    path = _last_file()
    try:
        with open(path) as f:
            seen = json.load(f)
    except (OSError, ValueError):
        seen = {}
    seen[_where(a)] = ident
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            json.dump(seen, f)
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # nowhere to keep it: status then needs the identifier


def last(a):
    try:
        with open(_last_file()) as f:
            return json.load(f).get(_where(a))
    except (OSError, ValueError, AttributeError):
        return None


def _where(a):
    return a.ws or "%s:%d" % (a.host, a.port or (8080 if a.ws is not None else 4245))


def run(a, trace):
    if a.action == "settle":
        raise Usage("P3 has no settlement request (PayServer settles on its backend)")
    alpha = a.currency.upper()
    try:
        alpha, _, places = names.currency(alpha)
    except ValueError as e:
        raise Usage(str(e))
    if a.action in ("pay", "refund") and a.value is None and not (a.action == "refund" and a.of):
        raise Usage("p3 %s needs an amount, e.g. `p3 %s 12.50`" % (a.action, a.action))
    if a.action == "void" and not a.value:
        raise Usage("p3 void needs the identifier of the transaction (e.g. UST00001-000001)")
    if a.action == "status" and not (a.value or a.custom):
        a.value = last(a)  # P3 has no `last transaction`: the last one this command saw
        if not a.value:
            raise Usage("p3 status needs an identifier, or --custom REF (no transaction with this "
                        "terminal seen yet)")
        progress("status of %s, the last transaction seen" % a.value)
    amount = None
    if a.action in ("pay", "refund") and a.value is not None:
        amount = wire.decimal(minor(a.value, places), places)  # b"12.50"
    pos = POS(a, trace)
    try:
        if not a.no_login:
            tag = pos.request("LOGIN_MERCHANT", {"providerMode": a.mode, "merchantIdentifier": a.merchant,
                                                 "merchantSecret": a.secret})
            m = pos.final(tag, "login answer")
            if m.get("status") != "OK":
                return _error(m, "login refused")
        if a.action in ("pay", "refund") and not a.of:
            tp = {"amount": amount, "currency": alpha,
                  "type": "CHARGE" if a.action == "pay" else "REFUND"}
            if a.action == "pay":
                tp["autoCapture"] = not a.preauth
            if a.custom:
                tp["customIdentifier"] = a.custom
            tag = pos.request("EXECUTE_TRANSACTION", {"transactionParameters": tp}, a.device)
        elif a.action == "refund":
            body = {"transactionIdentifier": a.of}
            if amount is not None:
                body.update(amount=amount, currency=alpha)
            if a.custom:
                body["customIdentifier"] = a.custom
            tag = pos.request("REFUND_TRANSACTION", body)
        elif a.action == "void":
            tp = {"type": "REVERSAL", "referencedTransactionIdentifier": a.value}
            tag = pos.request("EXECUTE_TRANSACTION", {"transactionParameters": tp}, a.device)
        else:
            body = {"transactionIdentifier": a.value} if a.value else {"customIdentifier": a.custom}
            tag = pos.request("GET_TRANSACTION", body)
        return _result(a, pos.final(tag, "final response"))
    finally:
        if pos.ident:  # kept for `p3 status` without arguments, answered or not
            remember(a, pos.ident)
        pos.close()


def _error(m, what):
    err = m.get("error") or {}
    fields = [("type", m.get("type"), ""), ("status", m.get("status"), ""),
              ("error.type", err.get("type"), ""), ("error.message", err.get("message"), ""),
              ("error.developerMessage", err.get("developerMessage"), "")]
    return Result(False, "%s  (%s: %s)" % (what, err.get("type"), err.get("message")),
                  [f for f in fields if f[1]])


def _flat(prefix, obj, out):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("merchantReceipt", "customerReceipt"):
                continue
            _flat(prefix + k + ".", v, out) if isinstance(v, dict) else _flat(prefix + k, v, out)
    else:
        out.append((prefix.rstrip("."), obj if not isinstance(obj, list) else ", ".join(map(str, obj)), ""))
    return out


def _result(a, m):
    body = m.get(wire.camel(m.get("type", ""))) or {}
    t = body.get("transaction")
    if t is None:
        return _error(m, "error")
    status = t.get("status")
    approved = status == "APPROVED" and m.get("status") == "OK"
    fields = [("type", m.get("type"), ""), ("status", m.get("status"), "")]
    err = m.get("error")
    if err:
        fields.append(("error.type", err.get("type"), err.get("message")))
    fields += _flat("transaction.", t, [])
    words = [status.lower() if status else "?", "%s %s" % (t.get("amount"), t.get("currency")),
             t.get("identifier")]
    code = (t.get("statusDetails") or {}).get("code")
    if code and not approved:
        words.append("(%s)" % code)
    auth = (t.get("clearingDetails") or {}).get("authorizationCode")
    if auth:
        words.append("auth " + auth)
    card = (t.get("cardDetails") or {}).get("maskedCardNumber")
    if card:
        words.append("card " + card)
    notes = []
    if a.receipts:
        for k in ("merchantReceipt", "customerReceipt"):
            r = t.get(k)
            if r:
                notes.append("--- %s receipt ---" % k[:-7])
                notes += r.get("lines") or []
    return Result(approved, "  ".join(w for w in words if w), fields, notes)
