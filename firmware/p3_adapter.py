"""P3 PayProtocol (Payworks PayServer) messages <-> terminal operations.

Transport-free: p3_tcp (length-prefixed TCP) and p3_ws (WebSocket) read
whole messages and call `await handle(conn, data)`; Conn.send() writes one.
Login and the running transaction belong to the server, not to a
connection: a POS may log in on one socket, pay on another and abort or
sign from a third.  A transaction runs in its own task, so the connection
that started it can still abort it or submit a signature.  Only charges are
handled here; every other request is served by p3_other_requests, imported for that
request (imported, then dropped).  Every decision where the sources are silent is in
docs/P3.md.
"""
import asyncio
import gc

from firmware import clock, drop, loaded, log, when_room
from firmware.terminal import Busy
from wire import currency as currency_table
from wire import p3 as w

SRC = "p3"  # the journal's personality for both transports
BUSY = "ACCESSORY_BUSY"  # another transaction runs, or the heap is short: try again
_LOG = 512  # the frame log shows this much of a long received message
login = None  # merchant identifier of the last accepted login (per server)

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
        self.lock = asyncio.Lock()  # updates and answers come from two tasks
        self.open = True

    async def _put(self, head, data):
        async with self.lock:
            if not self.open:  # closed by the writer before us (it failed)
                return None
            self.s.write(head)
            if isinstance(data, tuple):  # a message: written in pieces
                first = []  # type: list
                done = [0, 0]  # bytes written, bytes made by this pass

                def put(b):
                    if not first:
                        first.append(b)
                    n = len(b)
                    at = done[1]
                    done[1] += n
                    if done[1] > done[0]:  # (a pass after a MemoryError skips what went out)
                        self.s.write(b if at >= done[0] else memoryview(b)[done[0] - at:])
                        done[0] = done[1]

                def make():
                    done[1] = 0
                    w.pieces(data, put, 256)  # a 512-byte hole is not always there

                # a piece with no room half way: the same message is made again
                # (the same bytes) after a pause and goes on where it stopped
                await when_room(make)
                data = first[0] if first else b""
            elif data:
                self.s.write(data)
            await self.s.drain()
        return head if data is None else data

    async def write(self, head, data=None):
        """Write within timeouts.request_ms; what was written (the start of a
        message), or None when the connection failed and was closed."""
        if not self.open:
            return None
        try:
            ms = self.app.cfg["timeouts"]["request_ms"]
            return await asyncio.wait_for_ms(self._put(head, data), ms)
        except (OSError, asyncio.TimeoutError, MemoryError) as e:
            log.event(self.name, "gone", self.peer, "write failed: %r" % e)
            self.close()
            return None

    async def send(self, m):
        """Send one message; False if the connection is gone."""
        n = await when_room(w.size, m)
        first = await self.write(self.head(n), m)
        if first is None:
            return False
        # receipts make answers long: the log gets their start (and the live
        # trace alone, with frames off, its first 200 characters: no copy)
        if n > len(first) and log.frames:
            first = bytes(first) + b"...(%d bytes)" % n
        log.frame(self.name, "tx", self.peer, first)
        return True

    def close(self):
        """Drop the connection now (asyncio's Stream.close() does nothing)."""
        if self.open:
            self.open = False
            try:
                self.s.s.close()
            except OSError:
                pass


async def _fill(s, mv):
    while len(mv):
        k = await s.readinto(mv)
        if not k:
            raise EOFError
        mv = mv[k:]


async def take(s, n, ms, early=b""):
    """n bytes from stream s within ms, in one bytearray allocated once (a
    long message is not copied piece by piece while it arrives); bytes
    already read (early) come first.  EOFError if the peer closes first."""
    buf = bytearray(n)
    k = min(n, len(early))
    buf[:k] = early[:k]
    if k < n:
        await asyncio.wait_for_ms(_fill(s, memoryview(buf)[k:]), ms)
    return buf


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
    except (asyncio.TimeoutError, OSError):
        pass


def ident(cfg, no):
    """A transaction's identifier: the terminal id and its journal number."""
    return "%s-%06d" % (cfg["terminal_id"], no)


def currency(alpha, path):
    """(ISO numeric, decimals) of an alphabetic currency code."""
    row = currency_table.by_alpha(alpha)
    if row is None:
        raise w.P3Error(w.INVALID, "currency %s is not known" % alpha, path + "currency")
    return row[1], row[2]


def alpha(cur):
    """(alphabetic code, decimals) of an ISO numeric currency."""
    return currency_table.name(cur)


def amount(d, path, places, need=True):
    v = w.field(d, "amount", path, (int, str), need)
    if v is None:
        return None
    a = w.minor(v, places)
    if not a:
        raise w.P3Error(w.INVALID, "amount %s is not a positive amount with at most %d decimals"
                        % (v, places), path + "amount")
    return a


def view(app, t, final=True):
    """The transaction object: slim in updates, whole in responses and lookups."""
    cfg = app.cfg
    code, places = alpha(t.cur)
    v = [("identifier", ident(cfg, t.no)), ("customIdentifier", t.ref), ("type", _TYPE[t.op]),
         ("status", _STATUS.get(t.result, "PENDING") if final else "PENDING"),
         ("amount", w.decimal(t.amount, places)), ("currency", code)]
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
            lines = receipt.transaction(t, cfg, merchant).split("\n")[:-1]
            if merchant and paper:
                lines += ["", "CARDHOLDER SIGNATURE", "", "", "_" * cfg["receipt"]["width"]]
            v.append((key, (("receiptType", "MERCHANT" if merchant else "CUSTOMER"),
                            ("signatureLineRequired", merchant and paper), ("lines", lines))))
        drop("firmware.receipt", had)
    return tuple(v)


def _update(app, t, st, tag, res):
    """The UPDATE (or ACTION) for a state the transaction entered, or None;
    st: (that state, the terminal's note and the amount at that moment:
    the updates of a flow that never waited are sent after it ended)."""
    st, note, amount = st
    if st == "signature":
        return w.message("EXECUTE_TRANSACTION_ACTION", tag, res, None, None,
                         (("type", "SIGNATURE"), ("transaction", view(app, t, False))))
    step = _STEPS.get(st)
    if step is None:
        return None
    now, t.amount = t.amount, amount
    v = view(app, t, False)
    t.amount = now
    # the terminal's passing message first: wrong PIN, insert card, swipe card
    info = [note or step[1], "%s %s" % (v[4][1].decode(), v[5][1])]
    return w.message("EXECUTE_TRANSACTION_UPDATE", tag, res, None, None, (
        ("transaction", v),
        ("transactionProcessDetails", (("state", step[0]), ("information", info))),
        ("abortable", step[2])))


def result(app, t, rtype, tag, res):
    """The one final response of a transaction."""
    err = None
    if t.result == "error":
        code = t.reason.upper()
        err = (("type", "TRANSACTION_ERROR"), ("message", "transaction not completed: " + code),
               ("developerMessage", code))
    body = (("transaction", view(app, t)),)
    return w.message(rtype, tag, res, "ERROR" if err else "OK", err, body)


async def drive(conn, t, rtype, tag, res, updates=True):
    """Run t, streaming its UPDATEs and ACTIONs to conn, then its one final
    response; record whether it arrived."""
    app = conn.app
    term = app.term
    pend = []
    ev = asyncio.Event()

    def progress(t):
        pend.append((t.state, term.note, t.amount))  # as they are at that moment
        ev.set()

    if updates:
        t.progress = progress
    task = asyncio.create_task(term.run(t))
    while pend or not task.done():
        if pend:
            try:
                m = _update(app, t, pend.pop(0), tag, res)
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
    t.progress = None
    if t.drop:
        log.event(conn.name, "drop", conn.peer, "answer withheld (lost outcome)")
        conn.close()
        term.delivered(t, False)
        return
    try:
        m = await when_room(result, app, t, rtype, tag, res)
        ok = await conn.send(m)
    except MemoryError:  # no room for it at all: the POS sees the connection close
        gc.collect()     # (and looks the transaction up), never a silence
        log.event(conn.name, "gone", conn.peer, "no memory for the answer")
        conn.close()
        ok = False
    term.delivered(t, ok)


async def handle(conn, data):
    """Answer one message; a bad one gets an ERROR response naming the fault."""
    n = len(data)  # the log gets the start of a long message
    log.frame(conn.name, "rx", conn.peer, w.redact(bytes(data[:_LOG])) +
              (b"...(%d bytes)" % n if n > _LOG else b""))
    rtype = "ERROR_RESPONSE"
    tag = res = None
    try:
        m = w.loads(data)
        typ = m.get("type")
        tag = m.get("tag")
        res = m.get("resource")
        if not isinstance(typ, str):
            raise w.P3Error(w.MESSAGE_INVALID, "the message has no type", "type")
        if typ.endswith("_REQUEST"):
            rtype = typ[:-8] + "_RESPONSE"
        if not isinstance(tag, str):
            tag = None
            raise w.P3Error(w.MISSING, "tag is missing", "tag")
        if not isinstance(res, (str, type(None))):
            res = None
            raise w.P3Error(w.INVALID, "resource has the wrong type", "resource")
        await _dispatch(conn, m, typ, tag, rtype, res)
    except w.P3Error as e:
        log.event(conn.name, "error", conn.peer, e.kind, str(e))
        await conn.send(w.error(rtype, tag, res, e))
    except MemoryError:  # the heap is short now: not the POS's fault; busy, try again
        log.event(conn.name, "out-of-memory", conn.peer, "%d-byte message not handled" % n)
        gc.collect()
        err = w.P3Error(BUSY, "the terminal is short of memory now", "try again in a moment")
        await conn.send(w.error(rtype, tag, res, err))


async def _dispatch(conn, m, typ, tag, rtype, res):
    pc = conn.app.cfg["p3"]
    op = typ[:-8]
    key = w.camel(typ)
    if op != "LOGIN_MERCHANT":
        if rtype == "ERROR_RESPONSE" or (op not in _DEVICE_OPS and op not in _OTHER_OPS):
            raise w.P3Error(w.TYPE_UNKNOWN, "unknown message type %s" % typ, "type")
        if pc["require_login"] and login is None:
            raise w.P3Error("SERVER_AUTHENTICATION_FAILED", "no merchant is logged in",
                            "send LOGIN_MERCHANT_REQUEST first")
        if res is None and op in _DEVICE_OPS:
            raise w.P3Error(w.MISSING, "resource is missing", "resource")
        if res is not None and res != "devices/" + pc["device"]:
            raise w.P3Error("RESOURCE_UNKNOWN", "unknown resource %s" % res, "resource")
    body = w.field(m, key, "", dict, op[:5] != "ABORT") or {}
    for note in w.relax(body):
        log.event(conn.name, "note", conn.peer, note)
    tp = body.get("transactionParameters")
    if op == "EXECUTE_TRANSACTION" and isinstance(tp, dict) and tp.get("type") == "CHARGE":
        return await _charge(conn, body, key + ".", tag, rtype, res)
    had = loaded("firmware.p3_other_requests")
    from firmware import p3_other_requests

    try:
        await p3_other_requests.serve(conn, op, body, key + ".", tag, rtype, res)
    finally:
        drop("firmware.p3_other_requests", had)


async def _charge(conn, body, path, tag, rtype, res):
    """EXECUTE_TRANSACTION of type CHARGE (the other types are in p3_other_requests)."""
    path += "transactionParameters."
    tp = body["transactionParameters"]
    op = "pay" if w.field(tp, "autoCapture", path, bool) else "preauth"
    cur, places = currency(w.field(tp, "currency", path), path)
    await start(conn, op, amount(tp, path, places), cur, tp, path, None, tag, rtype, res, True)


async def start(conn, op, a, cur, tp, path, orig, tag, rtype, res, updates):
    """Claim the terminal (ACCESSORY_BUSY if taken) and run in a new task."""
    ref = w.field(tp, "customIdentifier", path, str, False)
    subject = w.field(tp, "subject", path, str, False)
    app = conn.app
    if ref:  # a retry (its answer was lost) is answered from the journal, not charged again
        t = app.term.journal.lookup(ref, SRC, lambda t: (
            t.op == op and t.amount == a and t.cur == cur and t.orig == orig
            and t.result == "approved" and not t.voided))
        if t is not None:
            log.event(conn.name, "retry", "#%d: same customIdentifier, answered from the journal" % t.no)
            app.term.delivered(t, await conn.send(result(app, t, rtype, tag, res)))
            return
    try:
        t = conn.app.term.start(op, a, cur, SRC, ref=ref, orig=orig,
                                data={"subject": subject[:64]} if subject else None)
    except Busy:
        raise w.P3Error(BUSY, "the terminal is busy with another transaction")
    t.hold = ("signature",)
    asyncio.create_task(drive(conn, t, rtype, tag, res, updates))
