"""The P3 adapter: P3 PayProtocol (Payworks PayServer) messages <-> terminal
operations.

p3_tcp (length-prefixed TCP) and p3_ws (WebSocket) read whole messages and
hand each to P3.received(conn, data), which logs and decodes it and passes
the decoded message to P3.request, the transport-free entry point (the
in-process tests, host_tests/mp/test_p3_adapter.py, call it directly);
Conn.send() writes an answer.  The messages themselves (JSON, framing,
fields, error types) are wire.p3's, imported here as p3_codec.

Login and the running transaction belong to the server, not to a
connection: a POS may log in on one socket, pay on another and abort or
sign from a third, so the login is the adapter's (one per app).  A
transaction runs in its own task, so the connection that started it can
still abort it or submit a signature.  Only charges are handled here; every
other request (login, abort, signature, refunds, reversals, amend, lookups)
is served by p3_other_requests, imported for that request and dropped after
it; it gets this adapter and never imports this module.  Every decision
where the sources are silent is in docs/P3.md.
"""
import asyncio
import gc

from micropython import const

from firmware import ROOM_WAITS, clock, drained, drop, loaded, log, spawn, tcp, when_room
from firmware.terminal import Busy
from wire import currency
from wire import p3 as p3_codec

_LOG = const(512)  # the frame log shows this much of a long received message
_HEAD = const(96)  # what is kept of a message with no room: its tag, even after a type
# the buffer every message is written out through, a piece at a time (Conn.write:
# made whole between two awaits, so one serves every connection); made once, as a
# short heap may have no 128-byte hole when an answer is due
_OUT = bytearray(128)

# requests that name a device (resource required); the others may name it
_DEVICE_OPS = ("EXECUTE_TRANSACTION", "ABORT_TRANSACTION", "ABORT_OPERATION", "SUBMIT_SIGNATURE")
_OTHER_OPS = ("GET_TRANSACTION", "REFUND_TRANSACTION", "AMEND_TRANSACTION")
# core state -> (transactionProcessDetails.state, first information line, abortable)
_STEPS = {
    "wait_card": ("WAITING_FOR_CARD_PRESENTATION", "Present card", True),
    "pin": ("WAITING_FOR_PIN", "Enter PIN", True),
    "auth": ("PROCESSING", "Processing", False),
}
_STATUS = {"approved": "APPROVED", "declined": "DECLINED", "cancelled": "ABORTED",
           "timeout": "ABORTED", "error": "ERROR"}
_SOURCE = {"chip": "ICC", "contactless": "NFC", "magstripe": "MAGNETIC_STRIPE"}
_TYPE = {"pay": "CHARGE", "preauth": "CHARGE", "capture": "CHARGE", "refund": "REFUND",
         "void": "REVERSAL"}


class Conn:
    """One POS connection; head(n) is its transport's header for n bytes."""

    def __init__(self, app, name, peer, s, head):
        self.app = app
        self.name = name
        self.peer = peer
        self.s = s
        self.head = head
        self.writing = False  # one writer at a time: updates and answers come from two tasks
        self.open = True

    async def write(self, head, data=None):
        """Write head, then data (bytes, or a message: a tuple, written in
        pieces as they are made); what was written (the start of a message),
        or None when the connection failed and was closed.  asyncio's stream
        sends what the socket takes at once, so only a wait for a slow
        reader has a time-out (timeouts.request_ms): no task left writing
        the rest of a message after a MemoryError."""
        ms = self.app.cfg["timeouts"]["request_ms"]
        # (waited for in this frame: asyncio.Lock's enter and exit are
        # coroutines, blocks a short heap may lack, and it had none at the
        # end of an approved payment: the connection closed unanswered)
        while self.writing:
            await asyncio.sleep_ms(5)
        self.writing = True
        try:
            if not self.open:  # closed by the writer before us (it failed)
                return None
            self.s.write(head)
            if isinstance(data, tuple):
                done = [0, 0, b""]  # type: list  # written, made by this pass, the first piece

                def put(b):  # (b is pieces()' buffer, filled again after: copied for the log,
                    if not done[0] and (log.frames or log.observers):  # if there is room)
                        try:
                            done[2] = bytes(b)
                        except MemoryError:
                            pass
                    at = done[1]
                    done[1] += len(b)
                    if done[1] > done[0]:  # (a pass after a MemoryError skips what went out)
                        self.s.write(b if at >= done[0] else memoryview(b)[done[0] - at:])
                        done[0] = done[1]

                def make():
                    done[1] = 0
                    p3_codec.pieces(data, put, 128, _OUT)  # a 256-byte hole is not always there

                # a piece with no room half way: the same message is made again
                # (the same bytes) after a pause and goes on where it stopped;
                # its start is out, so it is worth request_ms (in this frame:
                # when_room's coroutine would need a block too)
                w = ms
                while True:
                    try:
                        make()
                        break
                    except MemoryError:
                        w -= 100
                        if w < 0:
                            raise
                        gc.collect()
                        await asyncio.sleep_ms(100)
                data = done[2]
            elif data:
                self.s.write(data)
            await drained(self.s, ms)
            return head if data is None else data
        except (OSError, asyncio.TimeoutError, MemoryError) as e:
            self.close()  # first: a line with no room raises, and the head may be out
            log.event(self.name, "gone", self.peer, "write failed: %r" % e)
            return None
        finally:
            self.writing = False

    async def send(self, m):
        """Send one message; False if the connection is gone."""
        n = await when_room(p3_codec.size, m)
        first = await self.write(self.head(n), m)
        if first is None:
            return False
        # receipts make answers long: the log gets their start (and the live
        # trace alone, with frames off, its first 200 characters: no copy)
        log.frame(self.name, "tx", self.peer, first, n)
        return True

    def close(self):
        """Drop the connection now (asyncio's Stream.close() does nothing)."""
        if self.open:
            self.open = False
            try:
                self.s.s.close()
            except OSError:
                pass


def _into(buf, k, n):
    """Where a read of an n-byte message's bytes from k on goes: into buf,
    past its end into tcp's sink (dropped)."""
    return memoryview(buf)[k:] if k < len(buf) else memoryview(tcp.SINK)[:n - k]


async def _fill(s, buf, k, n):
    """Read bytes k.. of an n-byte message (_into).  A MemoryError here (no
    room for the view or the read's wait) comes before the read takes any
    byte from the socket: it is tried again after a collection and a pause,
    the bytes already read kept (the caller's time-out bounds it)."""
    while k < n:
        try:
            got = await s.readinto(_into(buf, k, n))
        except MemoryError:
            gc.collect()
            await asyncio.sleep_ms(ROOM_WAITS[-1])
            continue
        if not got:
            raise EOFError
        k += got


async def take(s, n, ms, early=b""):
    """n bytes from stream s within ms, in one bytearray allocated once (a
    long message is not copied piece by piece while it arrives); bytes
    already read (early) come first.  EOFError if the peer closes first.
    No room for the bytearray: asked again after a pause (when_room), then
    the message is read away and only its first _HEAD bytes are returned
    (where its tag is: received() answers it busy)."""
    try:
        buf = bytearray(n)
    except MemoryError:
        try:
            buf = await when_room(bytearray, n)
        except MemoryError:
            buf = bytearray(min(n, _HEAD))
    k = min(n, len(early))
    buf[:k] = early[:len(buf)]
    try:  # what has come is read at once: no time-out armed (its two tasks and
        while k < n:  # coroutines are heap a short heap may not have)
            got = s.s.readinto(_into(buf, k, n))
            if not got:
                break
            k += got
    except MemoryError:
        pass
    if k < n:
        await asyncio.wait_for_ms(_fill(s, buf, k, n), ms)
    return buf


def cut(name, peer, e, ms):
    """Log a frame cut short (the connection then closes): the peer closed
    (EOFError) or the rest did not come within ms."""
    if isinstance(e, EOFError):
        log.event(name, "gone", peer, "closed mid-frame")
    else:
        log.event(name, "truncated", peer, "frame incomplete after %d ms; closed" % ms)


async def discard(s, limit=4096):
    """Read and drop what the peer already sent (at most `limit` bytes, for
    at most 100 ms of silence): a socket closed with unread bytes sends a
    reset, which can make the peer lose the answer written just before."""
    try:
        while limit > 0:
            chunk = await asyncio.wait_for_ms(s.read(256), 100)
            if not chunk:
                return
            limit -= len(chunk)
    except (asyncio.TimeoutError, OSError, MemoryError):
        pass


def ident(cfg, no):
    """A transaction's identifier: the terminal id and its journal number."""
    return "%s-%06d" % (cfg["terminal_id"], no)


def _tag(data):
    """The tag of a message there was no room to decode, read off its bytes
    (a POS matches its answers by tag: an ERROR without one answers
    nothing, and the POS waits); None if it has none to find."""
    i = data.find(b'"tag"')
    if i >= 0:
        i = data.find(b'"', data.find(b":", i)) + 1
        j = data.find(b'"', i)
        if 0 < i <= j:
            return bytes(data[i:j]).decode()
    return None


def _refusal(conn, rtype, tag, res, e):
    """The ERROR response for a P3Error, or for a MemoryError ACCESSORY_BUSY
    (the heap is short now: not the POS's fault; try again)."""
    if isinstance(e, MemoryError):
        log.event(conn.name, "out-of-memory", conn.peer, "message not handled")
        gc.collect()
        e = p3_codec.P3Error(p3_codec.ACCESSORY_BUSY, "the terminal is short of memory now",
                             "try again in a moment")
    else:
        log.event(conn.name, "error", conn.peer, e.kind, str(e))
    return p3_codec.error(rtype, tag, res, e)


class P3:
    """The P3 personality of one app (firmware.adapter(app, P3)): the
    login and the entry point request()."""

    SRC = "p3"  # the journal's personality for both transports

    def __init__(self, app):
        self.app = app
        self.login = None  # merchant identifier of the last accepted login (per server)

    async def received(self, conn, data, whole=0):
        """Answer one whole message as a transport read it (bytes): logged,
        decoded (one that is not a JSON object gets its ERROR response),
        then request()'s answer written to conn.  whole: the message's
        length when take() could keep only its start (data)."""
        n = len(data)  # the log gets the start of a long message, secrets starred:
        if log.frames or log.observers:  # copies, made only when someone reads them,
            try:  # and never at the message's expense
                log.frame(conn.name, "rx", conn.peer, p3_codec.redact(bytes(memoryview(data)[:_LOG])), n)
            except MemoryError:  # (the line is missing, the message is answered)
                pass
        try:  # no room to decode it: again after a pause (when_room), the bytes
            if n < whole:  # in hand (or its start: take()); an answer without
                raise MemoryError  # its tag would reach no request
            try:
                m = p3_codec.loads(data)
            except MemoryError:
                m = await when_room(p3_codec.loads, data)
        except (p3_codec.P3Error, MemoryError) as e:
            answer = _refusal(conn, "ERROR_RESPONSE", _tag(data) if type(e) is MemoryError else None,
                              None, e)
        else:
            answer = await self.request(conn, m)
        if answer is not None:
            try:
                await conn.send(answer)
            except MemoryError as e:  # no room to write it out: busy, under its type and tag
                await conn.send(_refusal(conn, answer[0][1], answer[1][1], answer[2][1], e))

    async def request(self, conn, m):
        """The answer to one decoded message m (a dict): its RESPONSE, or an
        ERROR response naming the fault; None when the answers are written
        to conn by someone else (a transaction's task writes its UPDATEs
        and its final response; a retry answered from the journal is
        written at once, its delivery recorded).  Sockets play no part:
        conn is where those later answers go (send, open, close, and name
        and peer for the log)."""
        rtype = "ERROR_RESPONSE"
        tag = res = None
        try:
            typ = m.get("type")
            tag = m.get("tag")
            res = m.get("resource")
            if not isinstance(typ, str):
                raise p3_codec.P3Error(p3_codec.MESSAGE_INVALID, "the message has no type", "type")
            if typ.endswith("_REQUEST"):
                rtype = typ[:-8] + "_RESPONSE"
            if not isinstance(tag, str):
                tag = None
                raise p3_codec.P3Error(p3_codec.MISSING, "tag is missing", "tag")
            if not isinstance(res, (str, type(None))):
                res = None
                raise p3_codec.P3Error(p3_codec.INVALID, "resource has the wrong type", "resource")
            return await self._dispatch(conn, m, typ, tag, rtype, res)
        except (p3_codec.P3Error, MemoryError) as e:
            return _refusal(conn, rtype, tag, res, e)

    async def _dispatch(self, conn, m, typ, tag, rtype, res):
        pc = self.app.cfg["p3"]
        op = typ[:-8]
        key = p3_codec.camel(typ)
        if op != "LOGIN_MERCHANT":
            if rtype == "ERROR_RESPONSE" or (op not in _DEVICE_OPS and op not in _OTHER_OPS):
                raise p3_codec.P3Error(p3_codec.TYPE_UNKNOWN, "unknown message type %s" % typ, "type")
            if pc["require_login"] and self.login is None:
                raise p3_codec.P3Error(p3_codec.SERVER_AUTHENTICATION_FAILED, "no merchant is logged in",
                                       "send LOGIN_MERCHANT_REQUEST first")
            if res is None and op in _DEVICE_OPS:
                raise p3_codec.P3Error(p3_codec.MISSING, "resource is missing", "resource")
            if res is not None and res != "devices/" + pc["device"]:
                raise p3_codec.P3Error(p3_codec.RESOURCE_UNKNOWN, "unknown resource %s" % res,
                                       "resource")
        body = p3_codec.field(m, key, "", dict, op[:5] != "ABORT") or {}
        for note in p3_codec.relax(body):
            log.event(conn.name, "note", conn.peer, note)
        tp = body.get("transactionParameters")
        if op == "EXECUTE_TRANSACTION" and isinstance(tp, dict) and tp.get("type") == "CHARGE":
            return await self._charge(conn, body, key + ".", tag, rtype, res)
        had = loaded("firmware.p3_other_requests")
        from firmware import p3_other_requests

        try:
            return await p3_other_requests.request(self, conn, op, body, key + ".", tag, rtype, res)
        finally:
            drop("firmware.p3_other_requests", had)

    async def _charge(self, conn, body, path, tag, rtype, res):
        """EXECUTE_TRANSACTION of type CHARGE (the other types are in p3_other_requests)."""
        path += "transactionParameters."
        tp = body["transactionParameters"]
        op = "pay" if p3_codec.field(tp, "autoCapture", path, bool) else "preauth"
        cur, places = p3_codec.currency_field(tp, path)
        a = p3_codec.amount_field(tp, path, places)
        return await self.start(conn, op, a, cur, tp, path, None, tag, rtype, res, True)

    async def start(self, conn, op, a, cur, tp, path, orig, tag, rtype, res, updates):
        """Claim the terminal (ACCESSORY_BUSY if taken) and run in a new task;
        None: the task writes the answers."""
        ref = p3_codec.field(tp, "customIdentifier", path, str, False)
        subject = p3_codec.field(tp, "subject", path, str, False)
        term = self.app.term
        if ref:  # a retry (its answer was lost) is answered from the journal, not charged again
            t = term.journal.lookup(ref, self.SRC, lambda t: (
                t.op == op and t.amount == a and t.cur == cur and t.orig == orig
                and t.result == "approved" and not t.voided))
            if t is not None:
                log.event(conn.name, "retry", "#%d: same customIdentifier, answered from the journal"
                          % t.no)
                term.delivered(t, await conn.send(self.result(t, rtype, tag, res)))
                return None
        try:
            t = term.start(op, a, cur, self.SRC, ref=ref, orig=orig,
                           data={"subject": subject[:64]} if subject else None)
        except Busy:
            raise p3_codec.P3Error(p3_codec.ACCESSORY_BUSY, "the terminal is busy with another transaction")
        t.hold = ("signature",)
        try:
            spawn(self.drive(conn, t, rtype, tag, res, updates))
        except MemoryError:  # no room for its task: the terminal is not left claimed
            self.app.term.release(t)
            raise
        return None

    def view(self, t, final=True):
        """The transaction object: slim in updates, whole in responses and lookups."""
        cfg = self.app.cfg
        code, places = currency.name(t.cur)
        v = [("identifier", ident(cfg, t.no)), ("customIdentifier", t.ref), ("type", _TYPE[t.op]),
             ("status", _STATUS.get(t.result, "PENDING") if final else "PENDING"),
             ("amount", p3_codec.decimal(t.amount, places)), ("currency", code)]
        if not final:
            return tuple(v)
        data = t.data or {}
        v += [("subject", data.get("subject")), ("created", clock.stamp(t.ts))]
        if t.op in ("pay", "preauth", "capture"):
            v.append(("captured", t.op != "preauth" and t.result == "approved"))
        if t.orig:
            v.append(("referencedTransactionIdentifier", ident(cfg, t.orig)))
        if t.reason:
            v.append(("statusDetails", (("code", t.reason.upper()),)))
        if t.pan:
            v.append(("cardDetails", (("maskedCardNumber", t.pan), ("scheme", t.brand),
                                      ("expiryMonth", int(t.exp[2:])),
                                      ("expiryYear", 2000 + int(t.exp[:2])))))
            v.append(("paymentDetails", (("source", _SOURCE.get(t.mode, "UNKNOWN")),)))
        if t.auth:
            v.append(("clearingDetails", (("authorizationCode", t.auth),
                                          ("terminalId", cfg["terminal_id"]),
                                          ("merchantId", cfg["merchant_id"]))))
        if t.result in ("approved", "declined") and t.reason != "paper_out":  # out of paper: none
            paper = data.get("sig") == "receipt"
            had = loaded("firmware.receipt")
            from firmware import receipt

            for key, merchant in (("merchantReceipt", True), ("customerReceipt", False)):
                lines = receipt.lines(t, cfg, merchant)
                if merchant and paper:
                    lines += ["", "CARDHOLDER SIGNATURE", "", "", "_" * cfg["receipt"]["width"]]
                v.append((key, (("receiptType", "MERCHANT" if merchant else "CUSTOMER"),
                                ("signatureLineRequired", merchant and paper), ("lines", lines))))
            drop("firmware.receipt", had)
        return tuple(v)

    def _update(self, t, st, tag, res):
        """The UPDATE (or ACTION) for a state the transaction entered, or None;
        st: (that state, the terminal's note and the amount at that moment:
        the updates of a flow that never waited are sent after it ended)."""
        st, note, amount = st
        if st == "signature":
            return p3_codec.message("EXECUTE_TRANSACTION_ACTION", tag, res, None, None,
                                    (("type", "SIGNATURE"), ("transaction", self.view(t, False))))
        step = _STEPS.get(st)
        if step is None:
            return None
        now, t.amount = t.amount, amount
        v = self.view(t, False)
        t.amount = now
        # the terminal's passing message first: wrong PIN, insert card, swipe card
        info = [note or step[1], "%s %s" % (v[4][1].decode(), v[5][1])]
        return p3_codec.message("EXECUTE_TRANSACTION_UPDATE", tag, res, None, None, (
            ("transaction", v),
            ("transactionProcessDetails", (("state", step[0]), ("information", info))),
            ("abortable", step[2])))

    def result(self, t, rtype, tag, res):
        """The one final response of a transaction."""
        err = None
        if t.result == "error":
            code = t.reason.upper()
            err = (("type", p3_codec.TRANSACTION_ERROR), ("message", "transaction not completed: " + code),
                   ("developerMessage", code))
        body = (("transaction", self.view(t)),)
        return p3_codec.message(rtype, tag, res, "ERROR" if err else "OK", err, body)

    async def drive(self, conn, t, rtype, tag, res, updates=True):
        """Run t, streaming its UPDATEs and ACTIONs to conn, then its one final
        response; record whether it arrived."""
        term = self.app.term
        pend = []
        ev = asyncio.Event()

        def progress(t):
            pend.append((t.state, term.note, t.amount))  # as they are at that moment
            ev.set()

        if updates:
            t.progress = progress
        try:
            task = spawn(term.run(t))
        except MemoryError as e:  # no room for its task: nothing began, the POS hears busy
            term.release(t)
            await conn.send(_refusal(conn, rtype, tag, res, e))
            return
        while pend or not task.done():
            if pend:
                try:
                    m = self._update(t, pend.pop(0), tag, res)
                    if m is not None and conn.open:
                        await conn.send(m)
                except MemoryError:  # a progress message with no room: the final answer matters
                    gc.collect()
                continue
            ev.clear()
            try:  # the core's own waits all end; this only re-checks the task
                await asyncio.wait_for_ms(ev.wait(), 1000)
            except asyncio.TimeoutError:
                pass
            except MemoryError:  # no room for the wait's time-out: look again a moment later
                await asyncio.sleep_ms(100)
        t.progress = None
        if t.withhold:
            conn.close()
            term.withheld(t, conn.name, conn.peer)
            return
        wait = self.app.cfg["timeouts"]["request_ms"]
        while True:  # (this frame's loop: a coroutine made for the wait may find no block)
            try:
                ok = await conn.send(await when_room(self.result, t, rtype, tag, res))
                break
            except MemoryError:  # the transaction is over: its answer is worth a wait,
                gc.collect()  # up to request_ms; then the POS sees the connection close
                wait -= 200  # (and looks the transaction up), never a silence
                if wait < 0:
                    conn.close()
                    log.event(conn.name, "gone", conn.peer, "no memory for the answer")
                    ok = False
                    break
                await asyncio.sleep_ms(100)
        term.delivered(t, ok)
