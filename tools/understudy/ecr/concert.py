"""`understudy ecr concert`: Concert V3 over TCP, V3 or V2 (E/E+) over a serial line
or over Bluetooth Low Energy (a Nordic UART Service, --ble: ecr/ble.py).

Over TCP the register connects, sends one request, reads the answer and
closes.  Concert marks no end of message: the answer is complete when the
bytes end on a whole element, carry AE, and the terminal then stays silent
for --gap seconds (it may write an answer in pieces).

Over a serial line the register opens a session (ENQ, ACK, STX request ETX
LRC, ACK, EOT) and waits for the terminal's answer session (ENQ, ACK,
frames ending ETB or ETX, each ACKed, EOT).  The frames and LRC come from
the firmware's own link codec.
"""
import base64
import socket
import time

from understudy import names
from understudy.codecs import concert_link as link
from understudy.codecs import concert_tlv as tlv
from understudy.ecr import NoAnswer, Result, Usage, Waiting, major, minor, progress

ACTIONS = {"pay": "0", "refund": "1", "void": "2", "status": "T", "settle": "B", "ping": "I"}
V2_TYPES = {"pay": "0", "refund": "1", "void": "2"}
GAP_S = 0.3
RETRIES = 3  # NAKs (or silences) before giving up, as the terminal's own default
TICKETS = {"customer": "100", "merchant": "110", "both": "120"}


def add_parser(sub):
    p = sub.add_parser(
        "concert", help="Concert V3 (Caisse-AP) over TCP; V3 or V2 (E/E+) over a serial line",
        description="Act as a Concert cash register: one request, print the decoded answer.",
        epilog="Actions: pay, refund, void (cancel the newest approved transaction of that "
        "amount), status (the last transaction, CD=T), settle (close the batch, CD=B), ping "
        "(identify the terminal, CD=I).  V2 knows pay, refund and void only.")
    p.add_argument("action", choices=sorted(ACTIONS))
    p.add_argument("amount", nargs="?", help="major units, e.g. 12.50 (pay, refund, void)")
    p.add_argument("--host", default="127.0.0.1", help="terminal address (default %(default)s)")
    p.add_argument("--port", type=int, default=8888, help="TCP port (default %(default)s)")
    p.add_argument("--serial", metavar="DEVICE",
                   help="use this serial line instead of TCP (e.g. /dev/ttyUSB0, or the pty "
                   "`understudy run` prints)")
    p.add_argument("--baud", type=int, default=9600, help="serial speed (default %(default)s)")
    p.add_argument("--line", default="7E1", choices=("7E1", "8N1", "7O1", "8E1"),
                   help="serial data bits, parity, stop bits (default %(default)s, Concert's)")
    p.add_argument("--ble", metavar="NAME",
                   help="use Bluetooth Low Energy instead: the terminal advertising NAME (a Nordic "
                   "UART Service, e.g. Understudy-UST00001); needs bleak (pip install "
                   "'understudy[ble]') and a BLE adapter.  A Bluetooth module's SPP port is a "
                   "serial line: --serial /dev/rfcomm0")
    p.add_argument("--v2", action="store_true", help="serial or BLE: Concert V2 (E+) instead of V3")
    p.add_argument("--currency", default="EUR", help="EUR, 978, USD... (default %(default)s)")
    p.add_argument("--register", default="01", help="register number, CA (default %(default)s)")
    p.add_argument("--pos-id", default="012345678901",
                   help="register software's protocol id, CJ (default %(default)s)")
    p.add_argument("--ref", help="transaction reference (V3: CH; V2: private data, 10 characters)")
    p.add_argument("--tickets", choices=sorted(TICKETS), help="ask for tickets (V3: CK) and print them")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the answer (default %(default)s: a cardholder is slow)")
    p.add_argument("--gap", type=float, default=GAP_S,
                   help="TCP: silence that ends a complete answer (default %(default)s s)")


def run(a, trace):
    _alpha, num, places = _currency(a.currency)
    needs_amount = a.action in ("pay", "refund", "void")
    if needs_amount and a.amount is None:
        raise Usage("concert %s needs an amount, e.g. `concert %s 12.50`" % (a.action, a.action))
    if not needs_amount and a.amount is not None:
        raise Usage("concert %s takes no amount" % a.action)
    cents = minor(a.amount, places) if needs_amount else None
    if a.v2:
        if not (a.serial or a.ble or getattr(a, "link", None)):
            raise Usage("--v2 is a serial protocol: give --serial DEVICE or --ble NAME")
        if a.action not in V2_TYPES:
            raise Usage("Concert V2 has no %s request (only pay, refund, void)" % a.action)
        return _v2(a, trace, cents, num, places)
    pairs = [("CZ", "0300"), ("CJ", a.pos_id), ("CA", a.register)]
    if needs_amount:
        pairs += [("CE", "%03d" % num), ("CD", ACTIONS[a.action]), ("CB", str(cents))]
    else:
        pairs += [("CD", ACTIONS[a.action])]
    if a.ref:
        pairs.append(("CH", a.ref))
    if a.tickets:
        pairs.append(("CK", TICKETS[a.tickets]))
    try:
        request = tlv.encode(pairs)
    except tlv.TLVError as e:
        raise Usage(str(e))
    if a.serial and a.ble:
        raise Usage("give --serial or --ble, not both")
    line = a.serial or a.ble or getattr(a, "link", None)
    raw = _serial(a, trace, request) if line else _tcp(a, trace, request)
    try:
        answer = tlv.decode(raw)
    except tlv.TLVError as e:
        raise NoAnswer("unreadable answer (%s): %r" % (e, raw[:200]))
    return _v3_result(a.action, answer)


def _currency(code):
    try:
        return names.currency(code)
    except ValueError as e:
        raise Usage(str(e))


def _complete(buf):
    try:
        if not buf or tlv.scan(buf) != len(buf):
            return False
        return "AE" in tlv.decode(buf)
    except tlv.TLVError:
        return False


def _tcp(a, trace, request):
    try:
        s = socket.create_connection((a.host, a.port), timeout=min(a.timeout, 10))
    except OSError as e:
        raise NoAnswer("cannot connect to %s:%d (%s): is the terminal running, and is this "
                       "its Concert port?" % (a.host, a.port, e.strerror or e))
    with s:
        s.sendall(request)
        trace.sent(request)
        buf = b""
        deadline = time.monotonic() + a.timeout
        wait = Waiting.of(a)
        wait.begin(a.timeout)
        while True:
            done = _complete(buf)
            left = deadline - time.monotonic()
            if left <= 0:
                if done:
                    break
                raise NoAnswer("no answer within %g s" % a.timeout + (" (got %r)" % buf if buf else ""))
            s.settimeout(min(left, a.gap) if done else wait.slice(left))
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                if done:
                    break
                wait.tick()
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            trace.received(chunk)
            buf += chunk
    if not buf:
        raise NoAnswer("the terminal closed the connection without an answer: the outcome is "
                       "unknown, ask with `concert status`")
    return buf


class Line:
    """The register's end of a Concert serial line: pyserial, or anything with
    its read(1) (timeout 0.05 s), write, flush and close (`port`: a BLE link)."""

    def __init__(self, a, trace, port=None):
        self.trace = trace
        self.a = a
        self.reply_s = 3.0
        self.rx = bytearray()  # received, not traced yet: traced as one line per turn
        if port is not None:
            self.s = port
            return
        if getattr(a, "ble", None):
            from understudy.ecr import ble

            self.s = ble.connect(a.ble, min(a.timeout, 20))
            return
        import termios

        import serial

        bits, parity, stop = int(a.line[0]), a.line[1], int(a.line[2])
        try:
            try:
                self.s = serial.Serial(a.serial, a.baud, bytesize=bits, parity=parity, stopbits=stop,
                                       timeout=0.05)
            except termios.error:
                # a pty (`understudy run`'s null modem) takes no 7-bit setting; every
                # Concert byte is 7-bit, so 8N1 carries the same bytes
                progress("note: %s does not take %s (a pty?): using 8N1" % (a.serial, a.line))
                self.s = serial.Serial(a.serial, a.baud, timeout=0.05)
        except (serial.SerialException, ValueError, termios.error) as e:
            raise NoAnswer("cannot open %s: %s" % (a.serial, e))

    def close(self):
        self._flush()
        self.s.close()

    def _flush(self):
        if self.rx:
            self.trace.received(bytes(self.rx))
            self.rx = bytearray()

    def write(self, data):
        self._flush()
        self.s.write(data)
        self.s.flush()
        self.trace.sent(data)

    def read(self, timeout):
        """One byte, or None after `timeout` seconds of silence."""
        deadline = time.monotonic() + timeout
        while True:
            b = self.s.read(1)
            if b:
                self.rx += b
                return b[0]
            if time.monotonic() >= deadline:
                return None

    def send(self, msg):
        """One message in one session, as many frames as it takes."""
        for _ in range(1 + RETRIES):
            self.write(bytes((link.ENQ,)))
            b = self.read(self.reply_s)
            if b == link.ACK:
                break
        else:
            self.write(bytes((link.EOT,)))
            raise NoAnswer("the terminal does not take the line (no ACK to ENQ): is it "
                           "listening on this device, at this speed?")
        n = link.MAX_FRAME
        pieces = [msg[i:i + n] for i in range(0, len(msg), n)] or [b""]
        for k, piece in enumerate(pieces):
            fr = link.frame(piece, k == len(pieces) - 1)
            for _ in range(1 + RETRIES):
                self.write(fr)
                b = self.read(self.reply_s)
                if b == link.ACK:
                    break
            else:
                self.write(bytes((link.EOT,)))
                raise NoAnswer("the terminal refused the request frame %d times" % (1 + RETRIES))
        self.write(bytes((link.EOT,)))

    def receive(self, timeout):
        """The terminal's answer session: its message, or NoAnswer."""
        deadline = time.monotonic() + timeout
        wait = Waiting.of(self.a)
        wait.begin(timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoAnswer("no answer session within %g s: the outcome is unknown" % timeout)
            if self.read(wait.slice(left)) == link.ENQ:
                break
            wait.tick()
        self.write(bytes((link.ACK,)))
        msg = b""
        bad = 0
        while True:
            data, last, ok = self._frame()
            if data is None:
                raise NoAnswer("the terminal stopped in the middle of its answer")
            if not ok:
                bad += 1
                if bad > RETRIES:
                    raise NoAnswer("the answer frame failed its LRC %d times" % bad)
                self.write(bytes((link.NAK,)))
                continue
            self.write(bytes((link.ACK,)))
            msg += data
            if last:
                break
        self.read(self.reply_s)  # the terminal's EOT ends its session
        return msg

    def _frame(self):
        """(data, last, LRC good) of the next frame; (None, ...) on silence."""
        while True:
            b = self.read(self.reply_s)
            if b is None or b == link.EOT:
                return None, True, False
            if b == link.STX:
                break
        body = bytearray()
        while True:
            b = self.read(self.reply_s)
            if b is None:
                return None, True, False
            body.append(b)
            if b in (link.ETX, link.ETB):
                break
        check = self.read(self.reply_s)
        return bytes(body[:-1]), body[-1] == link.ETX, check == link.lrc(body)


def _serial(a, trace, request):
    line = Line(a, trace, getattr(a, "link", None))  # a test gives an open link
    try:
        line.send(request)
        return line.receive(a.timeout)
    finally:
        line.close()


def _tickets(answer):
    notes = []
    for zt in answer.get("ZT", []):
        ck, ak = zt.get("CK", "???"), zt.get("AK", "")
        whose = {"0": "customer", "1": "merchant"}.get(ck[1:2], "?")
        try:
            text = base64.b64decode(ak).decode("latin-1")
        except ValueError:
            text = "(ticket not base64: %r)" % ak[:60]
        fmt = "HTML" if ck[2:3] == "1" else "text"
        notes.append("--- %s ticket (%s) ---" % (whose, fmt))
        notes += text.replace("\r\n", "\n").rstrip("\n").split("\n")
    return notes


def _v3_result(action, answer):
    fields = []
    for tag, value in answer.items():
        if tag == "ZT":
            fields.append((tag, "%d ticket(s)" % len(value), "below"))
            continue
        fields.append((tag, names.concert_value(tag, value), names.CONCERT_TAGS.get(tag, "")))
    ae, af = answer.get("AE"), answer.get("AF", "")
    approved = ae == "10"
    money = ""
    if "CB" in answer and answer["CB"].isdigit():
        try:
            alpha, _, places = names.currency(answer.get("CE", "978"))
        except ValueError:
            alpha, places = answer.get("CE", "?"), 2
        money = "%s %s" % (major(int(answer["CB"]), places), alpha)
    if approved:
        head = {"status": "approved (last transaction)", "settle": "settled", "ping": "terminal here"}
        words = [head.get(action, "approved"), money]
        if answer.get("AC"):
            words.append("auth " + answer["AC"])
        if answer.get("AA"):
            words.append("card " + answer["AA"])
        if answer.get("AQ"):
            words.append("terminal " + answer["AQ"])
    else:
        why = names.CONCERT_CODES["AF"].get(af[:2], "AE %s AF %s" % (ae, af))
        if action == "status" and af[:2] == "00":
            why = "no last transaction, or one is running"
        verb = "not approved" if action in ("status", "settle", "ping") else "declined"
        words = [verb, money, "(AF %s: %s)" % (af[:2] or "-", why)]
    return Result(approved, "  ".join(w for w in words if w), fields, _tickets(answer))


def _v2(a, trace, cents, num, places):
    private = (a.ref or "").ljust(10)[:10]
    req = "%s%08d1%s%s%03d%sA010B010" % (a.register[-2:].rjust(2, "0"), cents, "1",
                                         V2_TYPES[a.action], num, private)
    raw = _serial(a, trace, req.encode())
    text = raw.decode("latin-1")
    if len(text) not in (25, 80):
        raise NoAnswer("unreadable V2 answer of %d characters: %r" % (len(text), text))
    fields, i = [], 0
    got = {}
    for name, size, meaning in names.V2_ANSWER:
        if name == "rep" and len(text) == 25:
            continue
        v = text[i:i + size]
        i += size
        got[name] = v
        code = names.V2_CODES.get(name, {}).get(v)
        fields.append((name.upper(), "%s  (%s)" % (v, code) if code else v.rstrip(), meaning))
    approved = got["stat"] == "0"
    alpha = names.CONCERT_CODES["CE"].get(got["currency"], got["currency"])
    money = "%s %s" % (major(int(got["amount"]), places), alpha) if got["amount"].isdigit() else ""
    words = ["approved" if approved else "declined", money]
    if got.get("rep", "").strip():
        words.append("card " + got["rep"].strip())
    if not approved:
        words.append("(STAT %s: %s)" % (got["stat"], names.V2_CODES["stat"].get(got["stat"], "?")))
    return Result(approved, "  ".join(w for w in words if w), fields)
