"""Concert V3 (Caisse-AP) messages <-> terminal operations: the adapter.

`Concert` is the personality's adapter, one per app (firmware.adapter(app,
Concert)).  Its transport-free entry point `await request(msg, src)` takes
one whole request (bytes) and returns (answer bytes or None, Txn or None);
TCP (concert_ip) and the serial line (concert_serial, V3 frames) both call
it.  None means: send nothing (the "lost" outcome drops the answer on
purpose).  Payments, refunds, voids and pre-authorisations live here; the
rarer actions (identification, status, duplicate, settlement, print), the
tickets (ZT) and the answers to the rarer outcomes in concert_tickets, loaded
on use, which is handed the adapter.  V2 requests (serial only) are
concert_v2_requests'.  Decisions where the sources disagree are listed in
docs/CONCERT.md.
"""

import asyncio
import gc

from micropython import const

from firmware import log, spawn
from firmware.terminal import Busy
from wire import concert_tlv as tlv

# The answer codes, named once, here: const() strings with a leading
# underscore are folded into the code by the compiler and cost no RAM,
# where a public name (here or in lib/wire) would be a global and an
# interned name in every terminal that loads Concert.  Other modules get
# them through the adapter's methods (head, fail, busy); the one AF code
# only concert_tickets sends (12, unknown action) is named there.
# AE: the answer's status
_AE_DONE = const("10")  # operation performed
_AE_NOT_DONE = const("01")
_AE_TAKEN = const("11")  # immediate mode: taken into account, the result via CD=T
# AF: its complement
_AF_UNKNOWN = const("00")  # also the busy answer: no source gives a better one
_AF_AUTHORISED = const("01")
_AF_REFUSED = const("04")
_AF_FORBIDDEN = const("05")
_AF_ABANDONED = const("06")  # by the cardholder
_AF_NOT_COMPLETED = const("07")
_AF_TIMED_OUT = const("08")  # input time-out
_AF_FORMAT = const("09")  # bad message format
_AF_OPERATOR = const("11")  # operator abandon
_AF_CURRENCY = const("13")  # currency not supported

# the action's code (V3 CD, V2 TYPE: the same four) -> the core's operation
OPS = {"0": "pay", "1": "refund", "2": "void", "4": "preauth"}
_MANDATORY = const(("CZ", "CJ", "CA", "CB", "CD", "CE"))
_SHORT = const(("CZ", "CD"))  # identification, status, duplicate, settlement, print

# AF of an answer with AE=01, by the core's reason (the rarer reasons:
# concert_tickets.odd)
_AF = {
    "decline": _AF_REFUSED,
    "pin": _AF_REFUSED,
    "not_found": _AF_REFUSED,
    "forbidden": _AF_FORBIDDEN,
    "cancel": _AF_ABANDONED,
    "no_card": _AF_TIMED_OUT,
    "no_pin": _AF_TIMED_OUT,
    "host": _AF_NOT_COMPLETED,
    "journal": _AF_NOT_COMPLETED,
    "interrupted": _AF_NOT_COMPLETED,
    "abort": _AF_OPERATOR,
    "currency": _AF_CURRENCY,
}
_ECHO = const(("CJ", "CA", "CB", "CD", "CE", "CH"))
_CARD_MODE = {"chip": "1", "contactless": "2", "magstripe": "3"}
_CHEQUE = const("00C")


def complete(req):
    """True once a decoded request carries every tag its action needs."""
    a = req.get("CD")
    for k in (_MANDATORY if a in OPS else _SHORT):
        if k not in req:
            return False
    return True


def _bad_field(req):
    """Name of the first malformed field, or None."""
    for k, lo, hi in (("CB", 1, 12), ("CE", 3, 3), ("CA", 1, 2)):
        v = req.get(k)
        if v is not None and not (lo <= len(v) <= hi and v.isdigit()):
            return k
    if len(req["CD"]) != 1:
        return "CD"
    if len(req["CZ"]) != 4:
        return "CZ"
    return None


class Concert:
    """Concert's adapter.  It keeps no state of its own between requests
    (each request carries what its answer needs, the transactions are the
    terminal's), only the app it answers for."""

    def __init__(self, app):
        self.app = app
        # busy echoing no field, made now: saying it later needs no heap (a
        # register refused for want of it, or whose busy answer found none)
        self.refusal = self.busy({})

    def head(self, req, ae=_AE_DONE, cb=None):
        """The pairs every answer starts with: CZ (echoed unless
        concert.version fixes it), the echoed C* tags (CB replaced by cb if
        given), and AE (by default 10, operation performed)."""
        v = self.app.cfg["concert"]["version"]
        pairs = [("CZ", req.get("CZ", "0320") if v == "echo" else v)]
        for k in _ECHO:
            pairs.append((k, cb if k == "CB" and cb is not None else req.get(k)))
        pairs.append(("AE", ae))
        return pairs

    def fail(self, req, af):
        """The refusal of req: AE=01, complement af."""
        return tlv.encode(self.head(req, _AE_NOT_DONE) + [("AF", af), ("CF", req.get("CF"))])

    def busy(self, req):
        """The answer when the terminal cannot take req (busy, no room, or
        nothing the register can be told): AE=01 AF=00, req's fields echoed
        if there is room for that, else none (the refusal)."""
        try:
            return self.fail(req, _AF_UNKNOWN)
        except MemoryError:
            return self.refusal

    def answer(self, req, t):
        """The answer to a finished transaction (status replies reuse it)."""
        if t.reason and t.reason not in _AF:  # partial, paper out, card removed...
            from firmware import concert_tickets

            return concert_tickets.odd(self, req, t)
        if t.result == "approved":
            pairs = self.head(req) + [("AF", _AF_AUTHORISED)]
            if req.get("CC") == _CHEQUE:
                pairs.append(("CC", _CHEQUE))
            elif t.pan:
                app_codes = ("002", "00D") if t.brand == "AMEX" else ("001", "00B")
                pairs += [
                    ("CC", app_codes[t.mode == "contactless"]),
                    ("CI", _CARD_MODE.get(t.mode, "0")),
                ]
            pairs += [("AC", t.auth)]
            if t.pan and req.get("CC") != _CHEQUE:
                pairs += [("AA", t.pan), ("AL", "1"), ("AB", t.exp), ("AI", t.aid)]
            pairs += [("CF", req.get("CF")), ("CG", self.app.cfg["merchant_id"])]
        else:
            cb = None
            if t.result == "cancelled" and self.app.cfg["concert"]["zero_amount_on_cancel"]:
                cb = "0" * len(req.get("CB", "00"))
            af = _AF_REFUSED if req.get("CC") == _CHEQUE else _AF.get(t.reason, _AF_UNKNOWN)
            pairs = self.head(req, _AE_NOT_DONE, cb) + [("AF", af), ("CF", req.get("CF"))]
        if req.get("CK", "")[:1] == "1":
            from firmware import concert_tickets

            pairs += concert_tickets.tickets(self, req, t)
        return tlv.encode(pairs)

    async def request(self, msg, src):
        """(answer, Txn or None) for one request (bytes), from src (the
        listener's name).  Out of heap before anything began, the register
        hears busy (AE=01 AF=00) rather than a closed connection; once a
        transaction began, or to repeat a stored result, the answer waits for
        room (up to timeouts.request_ms), and if none comes a
        MemoryError goes up: the connection closes unanswered and the
        register learns the outcome with CD=T, never a busy that would hide
        a charge.  (What comes
        before the transaction is _begin(): a plain function's frame is on
        the stack, a coroutine's in the heap for as long as it waits.)"""
        ans, req, t = self._begin(msg, src)
        if ans is None:
            if req.get("BA") == "1":  # immediate mode: "taken into account", result via CD=T
                spawn(self.app.term.run(t))
                return tlv.encode(self.head(req, _AE_TAKEN)), None
            await self.app.term.run(t)
            if t.withhold:
                return None, t
        elif ans is not True:
            return ans, t
        # t ran, or a repeat (the journal's result, answered again): no room
        # for its answer, tried again every 100 ms in this frame (when_room's
        # coroutine would need a block too)
        ms = self.app.cfg["timeouts"]["request_ms"]
        while True:
            try:
                return self.answer(req, t), t
            except MemoryError:
                ms -= 100
                if ms < 0:
                    raise
                gc.collect()
            await asyncio.sleep_ms(100)

    def _begin(self, msg, src):
        """(answer, req, t): answered at once (malformed, busy, another
        action; t: the transaction a status answer tells); (None, req, t): t
        started; (True, req, t): the request repeats t, approved."""
        app = self.app
        if len(msg) > app.cfg["concert"]["max_request"]:  # whatever it is, it is malformed
            return self.fail({}, _AF_FORMAT), None, None
        req = {}
        try:
            try:
                req = tlv.decode(msg)
                why = None if complete(req) else "missing mandatory tags"
                why = why or _bad_field(req)
            except tlv.TLVError as e:
                req, why = {}, str(e)
            if why:
                log.event(src, "malformed", why)
                return self.fail(req, _AF_FORMAT), req, None
            op = OPS.get(req["CD"])
            if op is None:
                from firmware import concert_tickets

                ans, t = concert_tickets.action(self, req, src)
                return ans, req, t
            term = app.term
            amount = int(req["CB"])
            cur = int(req["CE"])
            ref = req.get("CF") or req.get("CH")
            t = _retried(term, req, op, amount, cur, ref, src)
            if t is not None:
                log.event(src, "retry", "#%d: same request, answered from the journal" % t.no)
                return True, req, t
            orig = None
            if op == "void":
                target = term.find_void_target(amount, cur, ref and (lambda t: t.ref == ref))
                if target is None:
                    log.event(src, "void", "no matching transaction")
                    return self.fail(req, _AF["not_found"]), req, None
                orig = target.no
            data = {"CJ": req["CJ"], "CA": req["CA"], "CF": req.get("CF")}
            return None, req, term.start(op, amount, cur, src, ref=ref, orig=orig, data=data)
        except Busy:
            return self.busy(req), req, None
        except MemoryError as e:  # nothing began: say busy (if even that has no room, it goes up)
            gc.collect()
            log.event(src, "busy", "no room for the request:", e)
            return self.busy(req), req, None


def _retried(term, req, op, amount, cur, ref, src):
    """The approved transaction this request repeats, if the journal has it
    (the open batch and the settled ones it keeps): same reference (CF, else
    CH), action, amount, currency and register number.  A register retrying
    after a lost answer gets the stored result instead of a second charge,
    after a settlement too (the journal's index finds it in the file when it
    has left RAM)."""
    if not ref:
        return None
    ca = req["CA"]
    return term.journal.lookup(ref, src, lambda t: (
        t.op == op and t.amount == amount and t.cur == cur and (t.data or {}).get("CA") == ca
        and t.result == "approved" and not t.voided))
