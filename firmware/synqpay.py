"""Synqpay device link: framed JSON-RPC 2.0 over TCP (9000) and TLS (9443).

One client at a time across both ports and the serial line
(synqpay_serial): a new connection evicts the old one.  serve() is the
transport: it reads link frames from any asyncio stream and hands each to
the adapter, class Synqpay (one per app: firmware.adapter), whose request()
answers KeepAlive with ACK, checks the API key, and runs JSON-RPC methods
on the terminal core.  The adapter holds the protocol's state: the paired
key, the connected client's link, a pairing's code.  A transaction runs in
its own task, so cancel and getStatus are answered on the same connection
meanwhile.  Its result goes to the client that holds the API key: now, or
when it next shows up (cached responses).  Pairing, lookups, settlement
and device info live in synqpay_admin, loaded on use; it is handed the
adapter.  Decisions: docs/SYNQPAY.md.
"""
import asyncio
import gc
import json
import time

from micropython import const

from firmware import ROOM_WAITS, adapter, clock, drained, log, spawn, when_room
from firmware.terminal import Busy
from wire import synqpay_link as L
from wire.lenient import coerce

# JSON-RPC error codes of the device link (docs/SYNQPAY.md says what each
# means here; private: the compiler puts the numbers in place, no name is
# kept).  synqpay_admin reads those it answers with too from the adapter
# class; the two only it answers with (-32601, 100) are its own.
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


async def serve(app, name, s, peer, hello=None):
    """One client's link over an asyncio stream (TCP, TLS; the serial line
    through synqpay_serial); returns when it ends.  Each frame read goes to
    the adapter's request().  hello (default: on the TLS port): the first
    frame must come within timeouts.request_ms (a stalled TLS handshake
    must not keep the TLS buffers); after it, no idle time-out unless
    synqpay.idle_s says so."""
    a = adapter(app, Synqpay)
    if hello is None:
        hello = name.endswith("-tls")
    me = a.connect(name, s, peer)
    sc = app.cfg["synqpay"]
    d = L.Decoder(sc["max_payload"], ("be", "either", "off").index(sc["crc"]))
    short = 0  # ms the reads, or taking what they read, have found no room, in a row
    data = None  # bytes read and not yet taken by the decoder
    wait = 0
    try:
        while True:
            try:
                if data:  # read: no room to take them must not lose them
                    d.feed(data)
                    data = None
                ev = d.next()
                if ev is None:
                    wait = app.cfg["timeouts"]["request_ms"] if hello or d.pending() else sc["idle_s"] * 1000
                    data = await (asyncio.wait_for_ms(s.read(256), wait) if wait else s.read(256))
                    if not data:
                        break
                short = 0
            except asyncio.TimeoutError:
                if d.pending():
                    log.event(name, "cut", peer, "frame unfinished after %d ms" % wait)
                    ev = d.expire()  # the cut frame's first byte; then the rest of it,
                    while ev is not None:  # or frames found in it, as bytes that came
                        await a.request(me, ev)
                        ev = d.next()
                    continue
                log.event(name, "silent" if hello else "idle", peer, "closed after %d ms" % wait)
                break
            except MemoryError:  # no room now: unread bytes wait in the socket, read ones in data
                gc.collect()  # (for as long as the link may be silent, then it ends)
                if short >= (wait or app.cfg["timeouts"]["request_ms"]):
                    log.event(name, "closed", peer, "no room to read for %d ms" % short)
                    break
                short += ROOM_WAITS[-1]
                await asyncio.sleep_ms(ROOM_WAITS[-1])
                continue
            if ev is not None:  # (its own MemoryError, once it changed something, ends the link)
                hello = False
                await a.request(me, ev)
    except asyncio.CancelledError:  # evicted, or disconnected on purpose
        pass
    finally:
        if a.link is me:
            a.link = None
    log.event(name, "gone", peer)


class Session:
    """One client's link: where the answers to it are written."""

    def __init__(self, app, name, s, peer):
        self.app = app
        self.name = name
        self.s = s
        self.peer = peer
        self.auth = False  # has sent a frame with the paired key
        self.began = False  # the request being handled has changed something
        self.tickets = self.turn = 0  # one writer at a time, in the order they came
        self.task = asyncio.current_task()

    async def send(self, data, shown):
        me = self.tickets
        self.tickets = me + 1
        ms = w = self.app.cfg["timeouts"]["request_ms"]
        try:
            # one writer at a time, in the order they came (the events first),
            # waited for in this frame: asyncio.Lock's coroutines are blocks a
            # short heap may lack (a busy answer found none at 56K frozen).  A
            # turn never taken (a writer cancelled: its link is ending) makes
            # the later ones give up after request_ms, which ends the link.
            while self.turn != me:
                w -= 5
                if w < 0:
                    raise asyncio.TimeoutError
                await asyncio.sleep_ms(5)
            if isinstance(data, tuple):  # a frame's parts (L.parts): no copy of a long answer
                for part in data:
                    self.s.write(part)
            else:
                self.s.write(data)
            await drained(self.s, ms)
        except Exception as e:  # OSError, TimeoutError: the client is gone or stuck
            task = self.task  # (first: a line with no room raises, a frame half out)
            if task is not None and task is not asyncio.current_task():
                task.cancel()  # the reader ends the link; else its next read does
            log.event(self.name, "send-failed", self.peer, repr(e))
            return False
        finally:
            if self.turn == me:
                self.turn = me + 1
        log.frame(self.name, "tx", self.peer, shown)
        return True

    def disconnect(self, why):
        """End the link.  From another task, its reader is cancelled; from the
        reader itself (an answer resent on reconnect), CancelledError
        unwinds to serve(), which ends the link as for an eviction."""
        log.event(self.name, "drop", self.peer, why)
        task = self.task
        if task is asyncio.current_task():
            raise asyncio.CancelledError
        if task is not None:
            task.cancel()


class Synqpay:
    """The Synqpay device of an app: the link's state, and request(), the
    one entry point of every transport."""

    SRC = "synqpay"  # the core's name for us, whichever port the client used
    KEY_FILE = "/synqpay.key"  # under the board's STATE_DIR: 8 hex digits
    # what synqpay_admin answers errors with too (it never imports this module)
    Err = Err
    INVALID_PARAM = _INVALID_PARAM
    ILLEGAL_STATE = _ILLEGAL_STATE
    TRANSACTION_NOT_FOUND = _TRANSACTION_NOT_FOUND

    def __init__(self, app):
        self.app = app
        self.api_key = None  # type: bytes | None  # the paired API key (4 bytes), None while unpaired
        self.link = None  # type: Session | None  # the connected client's link
        self.pairing_code = None  # type: list | None  # [code, deadline ticks] during a pairing
        self.delivering = 0  # number of the transaction whose answer _run is delivering

    def connect(self, name, s, peer):
        """The link of a client that just came (stream s): it evicts the one
        before.  The key is read from flash while none is known."""
        if self.api_key is None:
            try:
                with open(self.app.board.STATE_DIR + self.KEY_FILE) as f:
                    self.api_key = bytes.fromhex(f.read().strip())
            except (OSError, ValueError):
                pass
        me = Session(self.app, name, s, peer)
        old = self.link
        self.link = me
        if old is not None:
            log.event(name, "evicted", old.peer, "new client", peer)
            if old.task is not None:
                old.task.cancel()
        return me

    def pairing(self):
        """True while a pairing code is on the (imaginary) screen."""
        o = self.pairing_code
        if o is not None and time.ticks_diff(o[1], time.ticks_ms()) <= 0:
            o = self.pairing_code = None
        return o is not None

    def refuse_if_busy(self):
        """Err 201 while a transaction runs (any personality's) or a pairing
        code is shown; its message says for how long the code stays."""
        o = self.pairing_code if self.pairing() else None
        if o is not None:
            raise Err(_ILLEGAL_STATE, "device is busy: pairing, its code is on the screen %d s more" % (
                (time.ticks_diff(o[1], time.ticks_ms()) + 999) // 1000))
        if self.app.term.current:
            raise Err(_ILLEGAL_STATE, "device is busy")

    def client(self):
        """The client results go to: the connected one, once it showed the key."""
        c = self.link
        return c if c is not None and c.auth else None

    async def request(self, me, frame):
        """One link frame, as wire.synqpay_link.Decoder hands it out, from
        link `me` (a Session); the answers are written to it (me.send), a
        transaction's result later to the client that holds the key.  (Not
        returned: a Synqpay answer outlives its request, cached answers go
        out before it, and a test reads them from its stream.)  If
        the heap had no room for it before it changed anything, it is
        handled again after a pause (ROOM_WAITS): a POS hears its answer
        late rather than never, and after the last wait a JSON-RPC request
        hears busy (201).  Once it changed something, the MemoryError ends
        the link (an answer owed is resent on reconnect)."""
        for wait in ROOM_WAITS:
            me.began = False
            try:
                return await self._frame(me, frame)
            except MemoryError:
                if me.began:
                    raise
                gc.collect()
                await asyncio.sleep_ms(wait)
        await self._frame(me, frame, True)

    async def _frame(self, me, frame, last=False):
        t, a, payload = frame
        if t == L.REQUEST:
            await self._jsonrpc(me, a, payload, last)
        elif t == L.KEEPALIVE:
            log.frame(me.name, "rx", me.peer, "KEEPALIVE")
            await me.send(L.control(L.ACK), "ACK")
        elif t == L.BAD:
            log.event(me.name, "link-error", me.peer, a)
            await me.send(L.control(L.ERROR, a), "ERROR %02d" % a)
        # an ACK needs nothing

    async def _jsonrpc(self, me, key, payload, last):
        zero = key == L.ZERO_KEY
        # a refusal is an event, not a frame: logged whatever log.frames
        if not zero and key != self.api_key:
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
            log.event(me.name, "refused", me.peer,
                      "zero API key for %s" % (m[:32] if type(m) is str else "?"))
            await me.send(L.control(L.ERROR, L.E_AUTH), "ERROR 05")
            return
        if not zero and not me.auth:
            me.auth = True
            await self._flush(me)
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
                self._start(me, rid, p)
                return  # answered when the transaction ends
            if m == "continueTransaction":
                self._continue(me, rid, p)
                return
            if m == "getStatus":
                result = self.status()
            elif m == "cancel":
                me.began = True
                result = self._cancel(p)
            else:
                from firmware import synqpay_admin

                me.began = True  # pairing, a refund by reference...: not done twice
                result = synqpay_admin.call(self, m, p)
            body = await when_room(_reply, rid, result)
            shown = _reply(rid, '{"apiKey":"********"}') if m == "authenticate" else body
        except (Err, MemoryError) as e:
            if not isinstance(e, Err):  # no room, nothing began, the last try: busy
                if me.began or not last:
                    raise
                gc.collect()
                e = Err(_ILLEGAL_STATE, "device is short of memory")
            a = e.args
            body = shown = '{"jsonrpc":"2.0","id":%s,"error":{"code":%d,"message":%s%s}}' % (
                json.dumps(rid), a[0], json.dumps(a[1]),
                ',"data":%s' % json.dumps(a[2]) if len(a) > 2 else "")
        await me.send(L.parts(L.RESPONSE, memoryview(body)), shown)

    def status(self):
        """getStatus's result."""
        t = self.app.term.current
        if self.pairing():
            st = "PAIRING"
        elif t is None:
            st = "IDLE"
        elif t.state == "wait_continue":
            st = "WAITING_FOR_CONTINUE"
        else:
            st = "TRANSACTION"
        can = t is not None and t.src == self.SRC and t.state in ("wait_card", "pin", "wait_continue")
        return '{"deviceStatus":"%s","cancelable":%s}' % (st, "true" if can else "false")

    def param(self, p, k, kind, what):
        """Param k of p, of type kind (an int: positive); else Err 102 or 103."""
        v = p.get(k)
        if v is None:
            raise Err(_MISSING_PARAM, what + " is missing")
        if type(v) is not kind or (kind is int and v <= 0):
            raise Err(_INVALID_PARAM, what + " is invalid")
        return v

    def _start(self, me, rid, p):
        app = self.app
        term = app.term
        src = self.SRC
        if self.param(p, "paymentMethod", str, "payment method") != "CREDIT_CARD":
            raise Err(_INVALID_PARAM, "payment method is invalid")
        op = _OPS.get(self.param(p, "transactionType", str, "transaction type"))
        if op is None:
            raise Err(_INVALID_PARAM, "transaction type is not supported")
        ref = self.param(p, "referenceId", str, "reference id")
        if not 0 < len(ref) <= 64 or ref.strip(_REF_CHARS):
            raise Err(_INVALID_PARAM, "reference id is invalid")
        self.refuse_if_busy()
        orig = None
        if op == "void":
            o = term.find_void_target(pred=lambda t: t.ref == ref and t.src == src)
            if o is None:
                if term.journal.lookup(ref, src) is None:
                    raise Err(_TRANSACTION_NOT_FOUND, "transaction not found")
                raise Err(_ILLEGAL_TRANSACTION_STATUS, "illegal transaction status")
            amount, cur, orig, ref = o.amount, o.cur, o.no, None
        else:
            amount = self.param(p, "amount", int, "amount")
            if amount >= 10 ** 12:  # 12 digits, as P3 and the journal take
                raise Err(_INVALID_PARAM, "amount is invalid")
            cur = p.get("currency", app.cfg["synqpay"]["currency"])
            if type(cur) is not int or not 0 < cur < 1000:
                raise Err(_INVALID_PARAM, "currency is invalid")
            if term.journal.lookup(ref, src) is not None:
                raise Err(_TRANSACTION_ALREADY_EXIST, "transaction already exists")
        try:
            t = term.start(op, amount, cur, src, ref=ref, orig=orig, data={"id": rid})
        except Busy:
            raise Err(_ILLEGAL_STATE, "device is busy")
        # no approved amount of its own in a TxResult: no partial approval (unhappy.py)
        t.hold = ("card", "whole") if p.get("notifyUpdate") is True and op != "void" else ("whole",)
        ev = p.get("notifyEvents") is True
        try:
            t.progress = lambda t: self._progress(t, ev)
            spawn(self._run(t))
        except MemoryError:  # no room to run it: nothing began, the request is handled again
            term.release(t)
            raise
        me.began = True

    def _continue(self, me, rid, p):
        term = self.app.term
        t = term.current
        if t is None or t.src != self.SRC or t.state != "wait_continue":
            raise Err(_ILLEGAL_STATE, "no transaction waits to continue")
        if p.get("referenceId") not in (None, t.ref):
            raise Err(_TRANSACTION_NOT_FOUND, "transaction not found")
        n = p.get("newAmount")
        if n is not None and (type(n) is not int or n <= 0):
            raise Err(_ILLEGAL_REQUEST, "illegal new amount", "ILLEGAL_NEW_AMOUNT")
        me.began = True
        t.data["id"] = rid  # the final result answers this request
        term.act("continue", {"amount": n})

    def _cancel(self, p):
        term = self.app.term
        t = term.current
        if t is None or t.src != self.SRC:
            raise Err(_ILLEGAL_STATE, "nothing to cancel")
        if p.get("referenceId") not in (None, t.ref):
            raise Err(_TRANSACTION_NOT_FOUND, "transaction not found")
        if not term.act("abort"):
            raise Err(_ILLEGAL_STATE, "not cancelable now")
        return "null"

    def _post(self, frame, shown):
        c = self.client()
        if c is not None:
            spawn(c.send(frame, shown))

    def _progress(self, t, ev):
        if t.state == "wait_continue":
            self._post(*_framed(L.RESPONSE, self._answer(t, "UPDATE")))
        elif ev and t.state in _EVENTS:
            body = '{"jsonrpc":"2.0","method":"transactionEvent","params":{"type":"%s"}}' % _EVENTS[t.state]
            self._post(L.parts(L.EVENT, memoryview(body)), body)  # type: ignore[arg-type]

    async def _run(self, t):
        term = self.app.term
        await term.run(t)
        ok = False
        if t.withhold:  # the "lost" outcome: the connection drops before the answer
            if self.link is not None:
                self.link.disconnect("connection closed before the answer (lost outcome)")
        else:
            self.delivering = t.no
            await asyncio.sleep_ms(0)  # events posted last go out first
            # if that client went away meanwhile, a newer one may hold the key
            ok = await self._deliver(t)
            if ok is False:
                ok = await self._deliver(t)
            self.delivering = 0
        term.delivered(t, bool(ok))

    async def _deliver(self, t):
        """True: the answer went out; False: no client or it failed; None: no
        room to build it now (the link is ended: it is resent on reconnect)."""
        c = self.client()
        if c is None:
            return False
        try:
            parts, shown = await when_room(self._built, t, ms=self.app.cfg["timeouts"]["request_ms"])
        except MemoryError:
            gc.collect()
            c.disconnect("no memory for the answer; resent on reconnect")  # (no allocation)
            return None
        return await c.send(parts, shown)

    def _built(self, t):
        return _framed(L.RESPONSE, self._answer(t))

    async def _flush(self, me):
        """Cached responses: answers that never arrived go to the client now."""
        term = self.app.term
        if not self.app.cfg["synqpay"]["cached_responses"]:
            return
        for t in term.journal.undelivered(self.SRC):
            if t.no != self.delivering and t.data and "id" in t.data:
                log.event(me.name, "resend", me.peer, "#%d" % t.no)
                ok = await self._deliver(t)
                term.delivered(t, bool(ok))
                if not ok:
                    return

    def _answer(self, t, status="COMPLETED"):
        """A transaction's answer (the JSON-RPC response) as short strings: never
        one block its size (about 600 bytes), which a busy small heap may lack."""
        out = ['{"jsonrpc":"2.0","id":%s,"result":' % json.dumps(t.data["id"])]
        _obj((("result", self.result_of(t) if t.result else "OK"), ("commandStatus", status),
              ("transaction", self._tx(t))), out)
        out.append("}")
        return out

    def obj(self, pairs):
        """A JSON object with its keys in this order; None values left out.
        A 1-tuple value is JSON already; a list is an object's pairs."""
        return "".join(_obj(pairs, []))

    def stamp(self, secs):
        return clock.stamp(secs)[:-1] + "+00:00"

    def txid(self, t):
        """A 23-digit transactionId: YYMMDDhhmmss and the journal number."""
        y, mo, d, h, mi, s = clock.parts(t.ts)
        return "%02d%02d%02d%02d%02d%02d%011d" % (y % 100, mo, d, h, mi, s, t.no)

    def result_of(self, t):
        return "OK" if t.result == "approved" else _RESULT.get(t.reason, "GENERAL_ERROR")

    def transaction(self, t):
        """The Transaction object of a record (a void shows the voided one)."""
        return self.obj(self._tx(t))

    def _tx(self, t):
        app = self.app
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
            ("transactionTime", self.stamp(t.ts)),
            ("referenceId", t.ref),
            ("terminalId", app.cfg["terminal_id"]),
            ("transactionType", _TYPES.get(t.op)),
            ("amount", t.amount),
            ("totalAmount", t.amount),
            ("tipAmount", 0),
            ("currency", t.cur),
            ("transactionId", self.txid(t)),
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


def _reply(rid, result):
    return '{"jsonrpc":"2.0","id":%s,"result":%s}' % (json.dumps(rid), result)


def _obj(pairs, out):
    """A JSON object (Synqpay.obj) as short strings appended to out, one a
    key and value."""
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


def _framed(ftype, out):
    """The frame of an answer made by Synqpay._answer(), and what the log
    shows of it (all of it when frames are logged; else the start, for the
    trace)."""
    shown = "".join(out) if log.frames else "".join(out[:6])
    # a memoryview of a str reads its UTF-8 in place: encode() would need a
    # second block of the answer's size (about 1.5 KB with receipts)
    return L.pieces(ftype, [memoryview(x) for x in out]), shown
