"""Concert V3 (Caisse-AP) messages <-> terminal operations.

Transport-free: `await serve(app, msg, src)` takes one whole request (bytes)
and returns (answer bytes or None, Txn or None); TCP and serial both use it.
None means: send nothing (the "lost" outcome drops the answer on purpose).
Payments, refunds, voids and pre-authorisations live here; the rarer actions
(status, duplicate, settlement, tickets...) in concert_extra, loaded on use.
Decisions where the sources disagree are listed in docs/CONCERT.md.
"""
import asyncio

from firmware import log, when_room
from firmware.terminal import Busy
from wire import concert_tlv as tlv

# the action's code (V3 CD, V2 TYPE: the same four) -> the core's operation
OPS = {"0": "pay", "1": "refund", "2": "void", "4": "preauth"}
_MANDATORY = ("CZ", "CJ", "CA", "CB", "CD", "CE")
_SHORT = ("CZ", "CD")  # identification, status, duplicate, settlement, print

# AF: complement to AE=01, by the core's reason
_AF = {
    "decline": "04",
    "pin": "04",
    "not_found": "04",
    "forbidden": "05",
    "cancel": "06",
    "no_card": "08",
    "no_pin": "08",
    "host": "07",
    "journal": "07",
    "interrupted": "07",
    "abort": "11",
    "currency": "13",
}
AF_UNKNOWN = "00"  # also the busy answer: no source gives a better one
AF_FORMAT = "09"
_ECHO = ("CJ", "CA", "CB", "CD", "CE", "CH")
_CARD_MODE = {"chip": "1", "contactless": "2", "magstripe": "3"}
CHEQUE = "00C"


def complete(req):
    """True once a decoded request carries every tag its action needs."""
    a = req.get("CD")
    for k in (_MANDATORY if a in OPS else _SHORT):
        if k not in req:
            return False
    return True


def head(app, req, cb=None):
    """CZ (echoed unless concert.version fixes it) and the echoed C* tags."""
    v = app.cfg["concert"]["version"]
    pairs = [("CZ", req.get("CZ", "0320") if v == "echo" else v)]
    for k in _ECHO:
        pairs.append((k, cb if k == "CB" and cb is not None else req.get(k)))
    return pairs


def fail(app, req, af, cb=None):
    return tlv.encode(head(app, req, cb) + [("AE", "01"), ("AF", af), ("CF", req.get("CF"))])


def answer(app, req, t):
    """The answer to a finished transaction (status replies reuse it)."""
    if t.reason and t.reason not in _AF:  # partial, paper out, card removed...: concert_extra
        from firmware import concert_extra

        return concert_extra.odd(app, req, t)
    if t.result == "approved":
        pairs = head(app, req) + [("AE", "10"), ("AF", "01")]
        if req.get("CC") == CHEQUE:
            pairs.append(("CC", CHEQUE))
        elif t.pan:
            app_codes = ("002", "00D") if t.brand == "AMEX" else ("001", "00B")
            pairs += [
                ("CC", app_codes[t.mode == "contactless"]),
                ("CI", _CARD_MODE.get(t.mode, "0")),
            ]
        pairs += [("AC", t.auth)]
        if t.pan and req.get("CC") != CHEQUE:
            pairs += [("AA", t.pan), ("AL", "1"), ("AB", t.exp), ("AI", t.aid)]
        pairs += [("CF", req.get("CF")), ("CG", app.cfg["merchant_id"])]
    else:
        cb = None
        if t.result == "cancelled" and app.cfg["concert"]["zero_amount_on_cancel"]:
            cb = "0" * len(req.get("CB", "00"))
        af = "04" if req.get("CC") == CHEQUE else _AF.get(t.reason, AF_UNKNOWN)
        pairs = head(app, req, cb) + [("AE", "01"), ("AF", af), ("CF", req.get("CF"))]
    if req.get("CK", "")[:1] == "1":
        from firmware import concert_extra

        pairs += concert_extra.tickets(app, req, t)
    return tlv.encode(pairs)


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


async def serve(app, msg, src):
    """(answer, Txn or None) for one request.  Out of heap before anything
    began, the register hears busy (AE=01 AF=00) rather than a closed
    connection; once a transaction began, or to repeat a stored result, the
    answer waits for room (when_room), and if none comes a MemoryError goes
    up: the connection closes unanswered and the register learns the
    outcome with CD=T, never a busy that would hide a charge."""
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
            return fail(app, req, AF_FORMAT), None
        op = OPS.get(req["CD"])
        if op is None:
            from firmware import concert_extra

            return concert_extra.serve(app, req, src)
        term = app.term
        amount = int(req["CB"])
        cur = int(req["CE"])
        ref = req.get("CF") or req.get("CH")
        t = _retried(term, req, op, amount, cur, ref, src)
        if t is None:
            orig = None
            if op == "void":
                target = term.find_void_target(amount, cur, ref and (lambda t: t.ref == ref))
                if target is None:
                    log.event(src, "void", "no matching transaction")
                    return fail(app, req, _AF["not_found"]), None
                orig = target.no
            data = {"CJ": req["CJ"], "CA": req["CA"], "CF": req.get("CF")}
            t = term.start(op, amount, cur, src, ref=ref, orig=orig, data=data)
            retried = False
        else:
            retried = True
    except Busy:
        return fail(app, req, AF_UNKNOWN), None
    except MemoryError as e:  # nothing began: say busy (if even that has no room, it goes up)
        import gc

        gc.collect()
        log.event(src, "busy", "no room for the request: %s" % e)
        return fail(app, req, AF_UNKNOWN), None
    if retried:
        log.event(src, "retry", "#%d: same request, answered again from the journal" % t.no)
        return await when_room(answer, app, req, t), t
    if req.get("BA") == "1":  # immediate mode: "taken into account", result via CD=T
        asyncio.create_task(term.run(t))
        return tlv.encode(head(app, req) + [("AE", "11")]), None
    await term.run(t)
    if t.drop:
        return None, t
    return await when_room(answer, app, req, t), t


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
