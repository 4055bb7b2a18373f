"""`understudy ecr synqpay`: a Synqpay register over the device link (TCP or TLS).

Every request is a JSON-RPC call in a link frame carrying the 4-byte API key
(docs/SYNQPAY.md); frames are built and read by the firmware's own codec
(lib/wire/synqpay_link.py).  Events are shown as progress on stderr.  The
terminal may first send a result the register missed earlier (its cached
responses): it is shown and the wait goes on for the answer to this call.
"""
import json
import os
import socket
import ssl
import sys
import time

from understudy import names, paths
from understudy.codecs import synqpay_link as L
from understudy.ecr import NoAnswer, Result, Usage, Waiting, major, minor, progress
from understudy.wiretext import to_text

CLIENT_TYPES = (L.RESPONSE, L.EVENT, L.ACK, L.ERROR, L.KEEPALIVE)
MAX_PAYLOAD = 1 << 20


def add_parser(sub):
    p = sub.add_parser(
        "synqpay", help="Synqpay device link (framed JSON-RPC) over TCP or TLS",
        description="Act as a Synqpay register: one JSON-RPC call, print the result.",
        epilog="Actions: pay AMOUNT; refund AMOUNT; void REFERENCE (the sale's referenceId); "
        "status [REFERENCE] (getTransaction by referenceId, else the last transaction); settle; "
        "pair: the terminal then shows a code for 30 s (Understudy: on its web page, GET "
        "/api/state `screen`, and its log); give it typed when asked, or run `pair --otp CODE` "
        "(prints the API key to give as --key).")
    p.add_argument("action", choices=("pay", "refund", "void", "status", "settle", "pair"))
    p.add_argument("value", nargs="?", help="amount in major units (pay, refund) or a referenceId "
                   "(void, status)")
    p.add_argument("--host", default="127.0.0.1", help="terminal address (default %(default)s)")
    p.add_argument("--port", type=int, help="port (default 9000; with --tls 9443)")
    p.add_argument("--tls", action="store_true", help="connect with TLS")
    p.add_argument("--cafile", help="TLS: trust this root (DER or PEM); default: the identity "
                   "`make tls` made (build/tls/ca.der), if there is one")
    p.add_argument("--insecure", action="store_true", help="TLS: do not verify the terminal")
    p.add_argument("--key", default=os.environ.get("UNDERSTUDY_SYNQPAY_KEY", ""),
                   help="API key, 8 hex digits (default $UNDERSTUDY_SYNQPAY_KEY)")
    p.add_argument("--ref", help="referenceId of a new transaction (default: ecr-<time>)")
    p.add_argument("--currency", help="ISO code, alphabetic or numeric (default: the terminal's)")
    p.add_argument("--otp", help="pair: the 6-digit code the terminal shows")
    p.add_argument("--serial-number", default="UST00001", help="pair: the device's serial number "
                   "(default %(default)s)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the answer (default %(default)s)")


class Link:
    def __init__(self, a, trace):
        self.trace = trace
        port = a.port or (9443 if a.tls else 9000)
        try:
            s = socket.create_connection((a.host, port), timeout=min(a.timeout, 10))
        except OSError as e:
            raise NoAnswer("cannot connect to %s:%d (%s): is the terminal running, and is this its "
                           "Synqpay%s port?" % (a.host, port, e.strerror or e, " TLS" if a.tls else ""))
        if a.tls:
            try:
                s = _context(a).wrap_socket(s, server_hostname=a.host)
            except (ssl.SSLError, OSError) as e:
                s.close()
                raise NoAnswer("TLS with %s:%d failed: %s (--cafile ROOT to trust its root, or "
                               "--insecure)" % (a.host, port, e))
        self.s = s
        self.wait = Waiting.of(a)
        self.d = L.Decoder(limit=MAX_PAYLOAD, accept=CLIENT_TYPES)

    def send(self, data):
        self.s.sendall(data)
        if data[1:2] == bytes((L.REQUEST,)):  # the API key is not shown
            self.trace.sent(data, to_text(data[:2]) + "****" + to_text(data[6:]))
        else:
            self.trace.sent(data)

    def frame(self, timeout):
        """The next frame (type, a, payload), or None when the terminal closed."""
        w = self.wait
        w.begin(timeout)
        end = time.monotonic() + timeout
        while True:
            start = self.d.i
            ev = self.d.next()
            if ev is not None:
                self.trace.received(bytes(self.d.buf[start:self.d.i]))
                return ev
            try:
                self.s.settimeout(w.slice(end - time.monotonic()))
                data = self.s.recv(4096)
            except socket.timeout:
                if time.monotonic() < end:
                    w.tick()  # silence: say how long, and what the terminal shows
                    continue
                raise NoAnswer("no answer within %g s: the outcome is unknown (ask `synqpay status`)"
                               % timeout)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            if not data:
                return None
            self.d.feed(data)

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def _context(a):
    if a.insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ca = a.cafile or os.path.join(paths.TLS, "ca.der")
    if not os.path.exists(ca):
        return ssl.create_default_context()
    with open(ca, "rb") as f:
        blob = f.read()
    if blob.startswith(b"-----"):
        return ssl.create_default_context(cadata=blob.decode())
    return ssl.create_default_context(cadata=blob)


def _key(a, pairing):
    if pairing:
        return L.ZERO_KEY
    k = a.key.strip()
    try:
        key = bytes.fromhex(k)
    except ValueError:
        key = b""
    if len(key) != 4:
        raise Usage("give the API key as --key 8-hex-digits (or $UNDERSTUDY_SYNQPAY_KEY); "
                    "`synqpay pair` gets one")
    return key


class Caller:
    def __init__(self, a, trace, key):
        self.a = a
        self.key = key
        self.link = Link(a, trace)
        self.n = 0

    def call(self, method, params=None):
        """The JSON answer to one call (events shown on the way)."""
        self.n += 1
        rid = "ecr%d-%d" % (os.getpid(), self.n)
        body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params},
                          separators=(",", ":")).encode()
        self.link.send(L.frame(L.REQUEST, body, self.key))
        while True:
            ev = self.link.frame(self.a.timeout)
            if ev is None:
                raise NoAnswer("the terminal closed the link before answering %s: the outcome is "
                               "unknown, ask with `synqpay status`" % method)
            typ, code, payload = ev
            if typ == L.ERROR or typ == L.BAD:
                why = names.SYNQPAY_ERRORS.get(code, "code %s" % code)
                if code == L.E_AUTH:
                    why += ": pair first (`understudy ecr synqpay pair`), then give --key"
                return {"linkError": code, "why": why}
            if typ == L.KEEPALIVE:
                self.link.send(L.control(L.ACK))
                continue
            if typ == L.ACK:
                continue
            try:
                msg = json.loads(payload)
            except ValueError:
                raise NoAnswer("unreadable answer: %r" % payload[:200])
            if typ == L.EVENT:
                p = msg.get("params") or {}
                progress("%s %s" % (msg.get("method", "event"), p.get("type", json.dumps(p))))
                continue
            if msg.get("id") != rid:
                progress("a result the register missed earlier arrived: %s" % _summary_of(msg))
                continue
            return msg

    def close(self):
        self.link.close()


def _summary_of(msg):
    r = msg.get("result")
    t = (r or {}).get("transaction") if isinstance(r, dict) else None
    if t:
        return "%s %s %s" % (t.get("referenceId"), t.get("transactionType"), t.get("transactionStatus"))
    return json.dumps(msg)[:200]


def run(a, trace):
    pairing = a.action == "pair"
    key = _key(a, pairing)
    places, cur = 2, None
    if a.currency:
        try:
            _alpha, cur, places = names.currency(a.currency)
        except ValueError as e:
            raise Usage(str(e))
    if a.action in ("pay", "refund") and a.value is None:
        raise Usage("synqpay %s needs an amount, e.g. `synqpay %s 12.50`" % (a.action, a.action))
    if a.action == "void" and not a.value:
        raise Usage("synqpay void needs the referenceId of the sale")
    otp = a.otp
    c = Caller(a, trace, key)
    try:
        if pairing:
            m = c.call("pair", {"serialNumber": a.serial_number})
            err = m.get("error") or {}
            # 201 with a code in hand: a pairing is open already (an earlier try), use it
            if "result" not in m and not (otp and err.get("code") == 201):
                return _error(m, "pairing refused")
            if otp is None:  # where to read it; then a second step, or typed here
                shown = Waiting.of(a).screen()
                said = ("pairing: the terminal shows the code%s; within 30 s run "
                        "`understudy ecr synqpay pair --otp CODE`" % (
                            " (%s)" % shown if shown else " on its screen"))
                if not sys.stdin.isatty():
                    return Result(True, said)
                print(said + ", or type it here")
                otp = input("code shown on the terminal: ").strip()
            m = c.call("authenticate", {"otp": otp})
            if "result" not in m:
                return _error(m, "pairing refused")
            k = (m["result"] or {}).get("apiKey", "?")
            return Result(True, "paired: API key %s (give it as --key %s)" % (k, k))
        if a.action in ("pay", "refund", "void"):
            ref = a.value if a.action == "void" else a.ref or "ecr-%d" % int(time.time() * 1000)
            params = {"paymentMethod": "CREDIT_CARD", "referenceId": ref,
                      "transactionType": {"pay": "SALE", "refund": "REFUND", "void": "VOID"}[a.action],
                      "notifyEvents": True}
            if a.action != "void":
                params["amount"] = minor(a.value, places)
                if cur:
                    params["currency"] = cur
            return _tx_result(a, c.call("startTransaction", params))
        if a.action == "status":
            params = ({"lookupMethod": "REF_ID", "lookupValue": a.value} if a.value
                      else {"lookupMethod": "LAST_TRANS"})
            return _tx_result(a, c.call("getTransaction", params))
        m = c.call("settlement", {"host": "SHVA"})
        if "result" not in m:
            return _error(m, "settlement refused")
        s = (m["result"] or {}).get("settlement") or {}
        fields = _flat("settlement.", s, [])
        notes = [ln for ln in str(s.get("report", "")).split("<!>") if ln]
        return Result(m["result"].get("result") == "OK", "settled  batch %s" % s.get("batchNo"),
                      fields, notes)
    finally:
        c.close()


def _error(m, what):
    if "linkError" in m:
        return Result(False, "%s  (link error %02d: %s)" % (what, m["linkError"], m["why"]))
    err = m.get("error") or {}
    return Result(False, "%s  (error %s: %s)" % (what, err.get("code"), err.get("message")),
                  [("error.code", err.get("code"), ""), ("error.message", err.get("message"), "")])


def _flat(prefix, obj, out):
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flat(prefix + k + ".", v, out) if isinstance(v, dict) else _flat(prefix + k, v, out)
    else:
        shown = ", ".join(map(str, obj)) if isinstance(obj, list) else obj
        out.append((prefix.rstrip("."), to_text(str(shown).encode()) if shown is not None else "-", ""))
    return out


def _tx_result(a, m):
    if "result" not in m:
        return _error(m, "error")
    r = m["result"] or {}
    t = r.get("transaction") or {}
    status = t.get("transactionStatus")
    outcome = r.get("result") or r.get("transactionResult")
    want = "VOIDED" if a.action == "void" else "CAPTURED"
    approved = status == want and outcome in ("OK", None)
    fields = _flat("", r, [])
    money = ""
    if isinstance(t.get("amount"), int):
        cur = t.get("currency")
        try:
            alpha, _, places = names.currency(cur)
        except ValueError:
            alpha, places = cur, 2
        money = "%s %s" % (major(t["amount"], places), alpha)
    first = (status or outcome or "?").lower()
    if approved:
        first = "voided" if a.action == "void" else "approved"
    words = [first, money, t.get("referenceId")]
    if not approved and outcome and outcome != "OK":
        words.append("(%s)" % outcome)
    if t.get("authorizationNumber"):
        words.append("auth " + t["authorizationNumber"])
    if t.get("maskedPan"):
        words.append("card " + t["maskedPan"])
    return Result(approved, "  ".join(w for w in words if w), fields)
