"""Synqpay device link: framed JSON-RPC 2.0 over TCP (9000) and TLS (9443).

One client at a time across both ports: a new connection evicts the old
one.  serve() reads link frames from any asyncio stream (the UART can use it
as is), answers KeepAlive with ACK, checks the API key, and runs JSON-RPC
methods on the terminal core.  A transaction runs in its own task, so
cancel and getStatus are answered on the same connection meanwhile.  Its
result goes to the client that holds the API key: now, or when it next
shows up (cached responses).  Pairing, lookups, settlement and device info
live in synqpay_extra, loaded on use.  Decisions: docs/SYNQPAY.md.
"""
import asyncio
import gc
import json
import time

from micropython import const

from firmware import ROOM_WAITS, clock, log, when_room
from firmware.terminal import Busy
from wire import synqpay_link as L
from wire.lenient import coerce

SRC = "synqpay"  # the core's name for us, whichever port the client used
KEY_FILE = "/synqpay.key"  # under the board's STATE_DIR: 8 hex digits
_key = None  # the paired API key (4 bytes), None while unpaired
_cur = None  # the connected client's Session
_otp = None  # type: list | None  # [code, deadline ticks] during a pairing
# JSON-RPC error codes of the device link (docs/SYNQPAY.md says what each means
# here; private: the compiler puts the numbers in place, no name is kept)
_PARSE_ERROR = const(-32700)
_INVALID_REQUEST = const(-32600)
_ILLEGAL_REQUEST = const(101)
_MISSING_PARAM = const(102)
_INVALID_PARAM = const(103)
_ILLEGAL_STATE = const(201)  # busy, or not the moment for it
_TRANSACTION_NOT_FOUND = const(302)
_TRANSACTION_ALREADY_EXIST = const(303)
_ILLEGAL_TRANSACTION_STATUS = const(304)
_REF_CHARS = "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_sending = 0  # number of the transaction whose answer _run is delivering
_OPS = {"SALE": "pay", "REFUND": "refund", "VOID": "void"}
_TYPES = {"pay": "SALE", "refund": "REFUND", "preauth": "AUTH_ONLY", "capture": "CAPTURE"}
_EVENTS = {"wait_card": "WAITING_FOR_CARD", "card_read": "CARD_DETECTED",
           "pin": "PIN_STARTED", "auth": "AUTHORIZATION_STARTED"}
# TxResult `result` by the core's reason (approved is OK)
_RESULT = {"decline": "HOST_ERROR", "signature": "HOST_ERROR", "pin": "SMART_CARD_ERROR",
           "removed": "SMART_CARD_ERROR", "forbidden": "CARD_NOT_ALLOWED", "cancel": "CANCELED",
           "abort": "CANCELED", "duplicate": "CANCELED", "no_card": "TIMEOUT", "no_pin": "TIMEOUT",
           "no_continue": "TIMEOUT", "no_confirm": "TIMEOUT", "host": "NETWORK_ERROR"}
# params a Kotlin JSON reader would coerce from text (wire.lenient, docs/SYNQPAY.md)
_BOOLS = ("notifyUpdate", "notifyEvents")
_INTS = ("amount", "currency", "newAmount")
_MODES = {"chip": "EMV", "contactless": "CONTACTLESS", "magstripe": "MAGNETIC"}


class Err(Exception):
    """A JSON-RPC error answer: Err(code, message[, data])."""


class Session:
    def __init__(self, app, name, s, peer):
        self.app = app
        self.name = name
        self.s = s
        self.peer = peer
        self.auth = False  # has sent a frame with the paired key
        self.began = False  # the request being handled has changed something
        self.lock = asyncio.Lock()  # one writer at a time
        self.task = asyncio.current_task()

    async def send(self, data, shown):
        try:
            async with self.lock:
                if isinstance(data, tuple):  # a frame's parts (L.parts): no copy of a long answer
                    for part in data:
                        self.s.write(part)
                else:
                    self.s.write(data)
                await asyncio.wait_for_ms(self.s.drain(), self.app.cfg["timeouts"]["request_ms"])
        except Exception as e:  # OSError, TimeoutError: the client is gone or stuck
            log.event(self.name, "send-failed", self.peer, repr(e))
            task = self.task
            if task is not None and task is not asyncio.current_task():
                task.cancel()  # the reader ends the link; else its next read does
            return False
        log.frame(self.name, "tx", self.peer, shown)
        return True

    def drop(self, why):
        """End the link.  From another task, its reader is cancelled; from the
        reader itself (an answer resent on reconnect), CancelledError
        unwinds to serve(), which ends the link as for an eviction."""
        log.event(self.name, "drop", self.peer, why)
        task = self.task
        if task is asyncio.current_task():
            raise asyncio.CancelledError
        if task is not None:
            task.cancel()


def pairing():
    """True while a pairing code is on the (imaginary) screen."""
    global _otp
    if _otp is not None and time.ticks_diff(_otp[1], time.ticks_ms()) <= 0:
        _otp = None
    return _otp is not None


def busy():
    """201's message; while a pairing code is shown, how long it stays valid."""
    o = _otp if pairing() else None
    if o is not None:
        return "device is busy: pairing, its code is on the screen %d s more" % (
            (time.ticks_diff(o[1], time.ticks_ms()) + 999) // 1000)
    return "device is busy"


def client():
    """The client results go to: the connected one, once it showed the key."""
    return _cur if _cur is not None and _cur.auth else None


def _load_key(app):
    global _key
    try:
        with open(app.board.STATE_DIR + KEY_FILE) as f:
            _key = bytes.fromhex(f.read().strip())
    except (OSError, ValueError):
        pass


async def serve(app, name, s, peer, hello=None):
    """One client's link over an asyncio stream; returns when it ends.
    hello (default: on the TLS port): the first frame must come within
    timeouts.request_ms (a stalled TLS handshake must not keep the TLS
    buffers); after it, no idle time-out unless synqpay.idle_s says so."""
    global _cur
    if _key is None:
        _load_key(app)
    if hello is None:
        hello = name.endswith("-tls")
    me = Session(app, name, s, peer)
    old = _cur
    _cur = me
    if old is not None:
        log.event(name, "evicted", old.peer, "new client", peer)
        old.task.cancel()
    sc = app.cfg["synqpay"]
    d = L.Decoder(sc["max_payload"], ("be", "either", "off").index(sc["crc"]))
    try:
        while True:
            wait = app.cfg["timeouts"]["request_ms"] if hello or d.pending() else sc["idle_s"] * 1000
            try:
                data = await (asyncio.wait_for_ms(s.read(256), wait) if wait else s.read(256))
            except asyncio.TimeoutError:
                if d.pending():
                    log.event(name, "cut", peer, "frame unfinished after %d ms" % wait)
                    ev = d.expire()  # the cut frame's first byte; then the rest of it,
                    while ev is not None:  # or frames found in it, as bytes that came
                        await _handle(me, ev)
                        ev = d.next()
                    continue
                log.event(name, "silent" if hello else "idle", peer, "closed after %d ms" % wait)
                break
            if not data:
                break
            d.feed(data)
            ev = d.next()
            while ev is not None:
                hello = False
                await _handle(me, ev)
                ev = d.next()
    except asyncio.CancelledError:  # evicted, or dropped on purpose
        pass
    finally:
        if _cur is me:
            _cur = None
    log.event(name, "gone", peer)


async def _handle(me, ev):
    """_frame(me, ev), again after a pause (ROOM_WAITS) if the heap had no
    room for it before it changed anything: a POS hears its answer late
    rather than never.  Once it changed something, or after the last
    wait, the MemoryError ends the link (an answer owed is resent on
    reconnect)."""
    for wait in ROOM_WAITS:
        me.began = False
        try:
            return await _frame(me, ev)
        except MemoryError:
            if me.began:
                raise
            gc.collect()
            await asyncio.sleep_ms(wait)
    await _frame(me, ev)


async def _frame(me, ev):
    t, a, payload = ev
    if t == L.REQUEST:
        await _request(me, a, payload)
    elif t == L.KEEPALIVE:
        log.frame(me.name, "rx", me.peer, "KEEPALIVE")
        await me.send(L.control(L.ACK), "ACK")
    elif t == L.BAD:
        log.event(me.name, "link-error", me.peer, a)
        await me.send(L.control(L.ERROR, a), "ERROR %02d" % a)
    # an ACK needs nothing


def _utf8(text):
    """The bytes of text without a copy: a MicroPython str holds UTF-8, and
    a memoryview reads it in place (encode() would need a second block of
    the answer's size, about 1.5 KB with receipts)."""
    return memoryview(text)  # type: ignore[arg-type]


def _reply(rid, result):
    return '{"jsonrpc":"2.0","id":%s,"result":%s}' % (json.dumps(rid), result)


async def _request(me, key, payload):
    app = me.app
    zero = key == L.ZERO_KEY
    if not zero and key != _key:  # an event, not a frame: refusals are logged whatever log.frames
        log.event(me.name, "refused", me.peer, "wrong API key")
        await me.send(L.control(L.ERROR, L.E_AUTH), "ERROR 05")
        return
    log.frame(me.name, "rx", me.peer, payload)
    try:
        msg = json.loads(payload)
    except Exception:  # ValueError; on CPython also UnicodeDecodeError
        msg = ValueError
    m = msg.get("method") if isinstance(msg, dict) else None
    if zero and m not in ("pair", "authenticate"):
        log.event(me.name, "refused", me.peer, "zero API key for %s" % (m[:32] if type(m) is str else "?"))
        await me.send(L.control(L.ERROR, L.E_AUTH), "ERROR 05")
        return
    if not zero and not me.auth:
        me.auth = True
        await _flush(me)
    rid = msg.get("id") if isinstance(msg, dict) else None
    p = msg.get("params") if isinstance(msg, dict) else None
    try:
        if msg is ValueError:
            raise Err(_PARSE_ERROR, "parse error")
        if (not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0" or type(m) is not str
                or type(rid) not in (str, int)):
            rid = rid if type(rid) in (str, int) else None
            raise Err(_INVALID_REQUEST, "invalid request")
        if p is None or p == []:  # no params; many JSON-RPC clients send [] for none
            p = {}
        elif not isinstance(p, dict):
            raise Err(_INVALID_PARAM, "params must be an object")
        for note in coerce(p, _BOOLS, _INTS):
            log.event(me.name, "note", me.peer, note)
        if m == "startTransaction":
            _start(me, rid, p)
            return  # answered when the transaction ends
        if m == "continueTransaction":
            _continue(me, rid, p)
            return
        if m == "getStatus":
            result = _status(app)
        elif m == "cancel":
            me.began = True
            result = _cancel(app, p)
        else:
            from firmware import synqpay_extra

            me.began = True  # pairing, a refund by reference...: not done twice
            result = synqpay_extra.call(app, m, p)
        body = await when_room(_reply, rid, result)
        shown = _reply(rid, '{"apiKey":"********"}') if m == "authenticate" else body
    except Err as e:
        a = e.args
        body = shown = '{"jsonrpc":"2.0","id":%s,"error":{"code":%d,"message":%s%s}}' % (
            json.dumps(rid), a[0], json.dumps(a[1]), ',"data":%s' % json.dumps(a[2]) if len(a) > 2 else "")
    await me.send(L.parts(L.RESPONSE, _utf8(body)), shown)


def _status(app):
    t = app.term.current
    if pairing():
        st = "PAIRING"
    elif t is None:
        st = "IDLE"
    elif t.state == "wait_continue":
        st = "WAITING_FOR_CONTINUE"
    else:
        st = "TRANSACTION"
    can = t is not None and t.src == SRC and t.state in ("wait_card", "pin", "wait_continue")
    return '{"deviceStatus":"%s","cancelable":%s}' % (st, "true" if can else "false")


def _need(p, k, kind, what):
    v = p.get(k)
    if v is None:
        raise Err(_MISSING_PARAM, what + " is missing")
    if type(v) is not kind or (kind is int and v <= 0):
        raise Err(_INVALID_PARAM, what + " is invalid")
    return v


def _start(me, rid, p):
    app = me.app
    term = app.term
    if _need(p, "paymentMethod", str, "payment method") != "CREDIT_CARD":
        raise Err(_INVALID_PARAM, "payment method is invalid")
    op = _OPS.get(_need(p, "transactionType", str, "transaction type"))
    if op is None:
        raise Err(_INVALID_PARAM, "transaction type is not supported")
    ref = _need(p, "referenceId", str, "reference id")
    if not 0 < len(ref) <= 64 or ref.strip(_REF_CHARS):
        raise Err(_INVALID_PARAM, "reference id is invalid")
    if term.current or pairing():
        raise Err(_ILLEGAL_STATE, busy())
    orig = None
    if op == "void":
        o = term.find_void_target(pred=lambda t: t.ref == ref and t.src == SRC)
        if o is None:
            if term.journal.lookup(ref, SRC) is None:
                raise Err(_TRANSACTION_NOT_FOUND, "transaction not found")
            raise Err(_ILLEGAL_TRANSACTION_STATUS, "illegal transaction status")
        amount, cur, orig, ref = o.amount, o.cur, o.no, None
    else:
        amount = _need(p, "amount", int, "amount")
        if amount >= 10 ** 12:  # 12 digits, as P3 and the journal take
            raise Err(_INVALID_PARAM, "amount is invalid")
        cur = p.get("currency", app.cfg["synqpay"]["currency"])
        if type(cur) is not int or not 0 < cur < 1000:
            raise Err(_INVALID_PARAM, "currency is invalid")
        if term.journal.lookup(ref, SRC) is not None:
            raise Err(_TRANSACTION_ALREADY_EXIST, "transaction already exists")
    try:
        t = term.start(op, amount, cur, SRC, ref=ref, orig=orig, data={"id": rid})
    except Busy:
        raise Err(_ILLEGAL_STATE, "device is busy")
    me.began = True
    # no approved amount of its own in a TxResult: no partial approval (unhappy.py)
    t.hold = ("card", "whole") if p.get("notifyUpdate") is True and op != "void" else ("whole",)
    ev = p.get("notifyEvents") is True
    t.progress = lambda t: _progress(app, t, ev)
    asyncio.create_task(_run(app, t))


def _continue(me, rid, p):
    term = me.app.term
    t = term.current
    if t is None or t.src != SRC or t.state != "wait_continue":
        raise Err(_ILLEGAL_STATE, "no transaction waits to continue")
    if p.get("referenceId") not in (None, t.ref):
        raise Err(_TRANSACTION_NOT_FOUND, "transaction not found")
    n = p.get("newAmount")
    if n is not None and (type(n) is not int or n <= 0):
        raise Err(_ILLEGAL_REQUEST, "illegal new amount", "ILLEGAL_NEW_AMOUNT")
    me.began = True
    t.data["id"] = rid  # the final result answers this request
    term.act("continue", {"amount": n})


def _cancel(app, p):
    t = app.term.current
    if t is None or t.src != SRC:
        raise Err(_ILLEGAL_STATE, "nothing to cancel")
    if p.get("referenceId") not in (None, t.ref):
        raise Err(_TRANSACTION_NOT_FOUND, "transaction not found")
    if not app.term.act("abort"):
        raise Err(_ILLEGAL_STATE, "not cancelable now")
    return "null"


def _post(frame, shown):
    c = client()
    if c is not None:
        asyncio.create_task(c.send(frame, shown))


def _progress(app, t, ev):
    if t.state == "wait_continue":
        _post(*_framed(L.RESPONSE, _answer(app, t, "UPDATE")))
    elif ev and t.state in _EVENTS:
        body = '{"jsonrpc":"2.0","method":"transactionEvent","params":{"type":"%s"}}' % _EVENTS[t.state]
        _post(L.parts(L.EVENT, _utf8(body)), body)


async def _run(app, t):
    global _sending
    await app.term.run(t)
    ok = False
    if t.drop:  # the "lost" outcome: the connection drops before the answer
        if _cur is not None:
            _cur.drop("connection closed before the answer (lost outcome)")
    else:
        _sending = t.no
        await asyncio.sleep_ms(0)  # events posted last go out first
        # if that client went away meanwhile, a newer one may hold the key
        ok = await _deliver(app, t)
        if ok is False:
            ok = await _deliver(app, t)
        _sending = 0
    app.term.delivered(t, bool(ok))


async def _deliver(app, t):
    """True: the answer went out; False: no client or it failed; None: no
    room to build it now (the link is dropped: it is resent on reconnect)."""
    c = client()
    if c is None:
        return False
    try:
        parts, shown = await when_room(_built, app, t)
    except MemoryError:
        gc.collect()
        c.drop("no memory for the answer #%d; resent on reconnect" % t.no)
        return None
    return await c.send(parts, shown)


def _built(app, t):
    return _framed(L.RESPONSE, _answer(app, t))


async def _flush(me):
    """Cached responses: answers that never arrived go to the client now."""
    app = me.app
    if not app.cfg["synqpay"]["cached_responses"]:
        return
    for t in app.term.journal.undelivered(SRC):
        if t.no != _sending and t.data and "id" in t.data:
            log.event(me.name, "resend", me.peer, "#%d" % t.no)
            ok = await _deliver(app, t)
            app.term.delivered(t, bool(ok))
            if not ok:
                return


def stamp(secs):
    return clock.stamp(secs)[:-1] + "+00:00"


def txid(t):
    """A 23-digit transactionId: YYMMDDhhmmss and the journal number."""
    y, mo, d, h, mi, s = clock.parts(t.ts)
    return "%02d%02d%02d%02d%02d%02d%011d" % (y % 100, mo, d, h, mi, s, t.no)


def result_of(t):
    return "OK" if t.result == "approved" else _RESULT.get(t.reason, "GENERAL_ERROR")


def obj(pairs):
    """A JSON object with its keys in this order; None values left out.
    A 1-tuple value is JSON already; a list is an object's pairs."""
    return "".join(_obj(pairs, []))


def _obj(pairs, out):
    """obj(pairs) as short strings appended to out, one a key and value."""
    sep = "{"
    for k, v in pairs:
        if v is None:
            continue
        if type(v) is list:
            out.append('%s"%s":' % (sep, k))
            _obj(v, out)
        else:
            out.append('%s"%s":%s' % (sep, k, v[0] if type(v) is tuple else json.dumps(v)))
        sep = ","
    out.append("}" if sep == "," else "{}")
    return out


def _answer(app, t, status="COMPLETED"):
    """A transaction's answer (the JSON-RPC response) as short strings: never
    one block its size (about 600 bytes), which a busy small heap may lack."""
    out = ['{"jsonrpc":"2.0","id":%s,"result":' % json.dumps(t.data["id"])]
    _obj((("result", result_of(t) if t.result else "OK"), ("commandStatus", status),
          ("transaction", _tx(app, t))), out)
    out.append("}")
    return out


def _framed(ftype, out):
    """The frame of an answer made by _answer(), and what the log shows of
    it (all of it when frames are logged; else the start, for the trace)."""
    shown = "".join(out) if log.frames else "".join(out[:6])
    return L.pieces(ftype, [_utf8(x) for x in out]), shown


def tx(app, t):
    """The Transaction object of a record (a void shows the voided one)."""
    return obj(_tx(app, t))


def _tx(app, t):
    if t.op == "void":
        t = app.term.journal.get(t.orig) or t
    st = None  # type: str | None
    if t.result == "approved":
        st = "VOIDED" if t.voided else "AUTHORIZED" if t.op == "preauth" else "CAPTURED"
    elif t.result:
        st = "DECLINED"
    upd = t.state == "wait_continue"
    return [
        ("transactionStatus", st),
        ("transactionTime", stamp(t.ts)),
        ("referenceId", t.ref),
        ("terminalId", app.cfg["terminal_id"]),
        ("transactionType", _TYPES.get(t.op)),
        ("amount", t.amount),
        ("totalAmount", t.amount),
        ("tipAmount", 0),
        ("currency", t.cur),
        ("transactionId", txid(t)),
        ("authorizationNumber", t.auth and "0" + t.auth),
        ("systemTraceNumber", "%08d" % t.no),
        ("cardName", t.brand),
        ("maskedPan", t.pan and t.pan.replace("*", "X")),
        ("panSuffix", t.pan and t.pan[-4:]),
        ("panEntryMode", _MODES.get(t.mode)),
        ("creditTerms", "REGULAR"),
        ("allowedCreditTerms", ('["REGULAR"]',) if upd else None),
        ("hostErrorCode", 0 if st == "CAPTURED" else 4 if t.reason == "decline" else None),
    ]
