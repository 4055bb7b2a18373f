"""Concert V3 (Caisse-AP) messages <-> terminal operations.

Transport-free: `await serve(app, msg, src)` takes one whole request (bytes)
and returns (answer bytes or None, Txn or None); TCP and serial both use it.
None means: send nothing (the "lost" outcome drops the answer on purpose).
Decisions where the sources disagree are listed in docs/CONCERT.md.
"""
import asyncio
import binascii

from firmware import log
from firmware.core import receipt
from firmware.core.terminal import APPROVED, CANCELLED, Busy
from wire import concert_tlv as tlv

# actions (CD)
_PAY = "0"
_REFUND = "1"
_VOID = "2"
_DUPLICATE = "3"
_PREAUTH = "4"
_SETTLE = "B"
_IDENTIFY = "I"
_PRINT = "P"
_STATUS = "T"
_OPS = {_PAY: "pay", _REFUND: "refund", _VOID: "void", _PREAUTH: "preauth"}
_MANDATORY = ("CZ", "CJ", "CA", "CB", "CD", "CE")

# AE status, AF complement
_DONE = "10"
_NOT_DONE = "01"
_TAKEN = "11"
_AF = {
    "decline": "04",
    "pin": "04",
    "forbidden": "05",
    "cancel": "06",
    "no_card": "08",
    "host": "07",
    "abort": "11",
    "currency": "13",
    "journal": "07",
    "not_found": "04",
    "internal": "00",
}
AF_UNKNOWN = "00"
AF_FORMAT = "09"
AF_ACTION = "12"

# answer tag order (C* echoes first, CZ always first)
_ECHO = ("CJ", "CA", "CB", "CD", "CE", "CH")
_CARD = {"chip": "1", "contactless": "2", "magstripe": "3"}
_APP = {"AMEX": ("002", "00D")}  # default: CB/Visa/Mastercard ("001", "00B")
_CHEQUE = "00C"


def mandatory(action):
    """Tags a request for this action must carry."""
    return _MANDATORY if action in _OPS else ("CZ", "CD")


def complete(req):
    """True once a decoded request carries every tag its action needs."""
    a = req.get("CD")
    if a is None:
        return False
    for k in mandatory(a):
        if k not in req:
            return False
    return True


def _version(app, req):
    v = app.cfg["concert"]["version"]
    if v == "echo":
        v = req.get("CZ", "0320")
    return v


def _head(app, req, cb=None):
    pairs = [("CZ", _version(app, req))]
    for k in _ECHO:
        v = req.get(k)
        if k == "CB" and cb is not None:
            v = cb
        if v:
            pairs.append((k, v))
    return pairs


def _tickets(app, req, t=None, text=None):
    """ZT elements asked for by CK (pos1 '1': yes; pos2 0/1/2: whose; pos3 1: HTML)."""
    ck = req.get("CK", "")
    if len(ck) != 3 or ck[0] != "1":
        return []
    copies = ("1",) if ck[1] == "1" else ("0", "1") if ck[1] == "2" else ("0",)
    out = []
    for c in copies:
        body = text if text is not None else receipt.transaction(t, app.cfg, c == "1")
        if ck[2] == "1":
            body = "<html><body><pre>%s</pre></body></html>" % body
        ak = binascii.b2a_base64(body.encode(), newline=False).decode()
        out.append(("ZT", [("CK", "1" + c + ck[2]), ("AK", ak)]))
    return out


def fail(app, req, af, cb=None):
    return tlv.encode(_head(app, req, cb) + [("AE", _NOT_DONE), ("AF", af)])


def _card_tags(t, req):
    if req.get("CC") == _CHEQUE:
        return [("CC", _CHEQUE), ("AC", t.auth)]
    if t.pan is None:  # void, capture: no card read
        return [("AC", t.auth)]
    app = _APP.get(t.brand, ("001", "00B"))
    return [
        ("CC", app[1] if t.mode == "contactless" else app[0]),
        ("CI", _CARD.get(t.mode, "0")),
        ("AC", t.auth),
        ("AA", t.pan),
        ("AL", "1"),
        ("AB", t.exp),
        ("AI", t.aid),
    ]


def answer(app, req, t):
    """The answer to a finished transaction (also used for status replies)."""
    if t.result == APPROVED:
        pairs = _head(app, req) + [("AE", _DONE), ("AF", "01")]
        pairs += _card_tags(t, req)
        pairs += [("CF", req.get("CF")), ("CG", app.cfg["merchant_id"])]
    else:
        cb = None
        if t.result == CANCELLED and app.cfg["concert"]["zero_amount_on_cancel"]:
            cb = "0" * len(req.get("CB", "00"))
        af = "04" if req.get("CC") == _CHEQUE else _AF.get(t.reason, AF_UNKNOWN)
        pairs = _head(app, req, cb) + [("AE", _NOT_DONE), ("AF", af), ("CF", req.get("CF"))]
    return tlv.encode(pairs + _tickets(app, req, t))


def _check(req):
    """Field formats; returns what is wrong, or None."""
    cb = req.get("CB")
    if cb is not None and not (1 <= len(cb) <= 12 and cb.isdigit()):
        return "CB"
    ce = req.get("CE")
    if ce is not None and not (len(ce) == 3 and ce.isdigit()):
        return "CE"
    ca = req.get("CA")
    if ca is not None and not (1 <= len(ca) <= 2 and ca.isdigit()):
        return "CA"
    if len(req["CD"]) != 1:
        return "CD"
    if len(req["CZ"]) != 4:
        return "CZ"
    return None


async def serve(app, msg, src):
    try:
        req = tlv.decode(msg)
    except tlv.TLVError as e:
        log.event(src, "malformed", str(e))
        return fail(app, {}, AF_FORMAT), None
    if not complete(req):
        log.event(src, "malformed", "missing mandatory tags")
        return fail(app, req, AF_FORMAT), None
    bad = _check(req)
    if bad:
        log.event(src, "malformed", "bad " + bad)
        return fail(app, req, AF_FORMAT), None
    action = req["CD"]
    term = app.term
    if action == _IDENTIFY:
        return _identify(app, req), None
    if action == _STATUS:
        return _status(app, req)
    if action == _DUPLICATE:
        return _duplicate(app, req), None
    if action == _PRINT:
        log.event(src, "print", "%d ticket(s)" % len(req.get("ZT", ())))
        return tlv.encode(_head(app, req) + [("AE", _DONE)]), None
    if action == _SETTLE:
        return _settle(app, req), None
    op = _OPS.get(action)
    if op is None:
        log.event(src, "unknown-action", action)
        return fail(app, req, AF_ACTION), None
    amount = int(req["CB"])
    cur = int(req["CE"])
    orig = None
    if op == "void":
        target = term.find_void_target(amount, cur, _same_ref(req))
        if target is None:
            log.event(src, "void", "no matching transaction")
            return fail(app, req, _AF["not_found"]), None
        orig = target.no
    data = {"CJ": req["CJ"], "CA": req["CA"], "CF": req.get("CF")}
    try:
        t = term.start(op, amount, cur, src, ref=req.get("CF"), orig=orig, data=data)
    except Busy:
        return fail(app, req, AF_UNKNOWN), None
    if req.get("BA") == "1":
        asyncio.create_task(term.run(t))
        return tlv.encode(_head(app, req) + [("AE", _TAKEN)]), None
    await term.run(t)
    if t.drop:
        return None, t
    return answer(app, req, t), t


def _same_ref(req):
    cf = req.get("CF")
    if cf is None:
        return None
    return lambda t: t.ref == cf


def _identify(app, req):
    cfg = app.cfg
    return tlv.encode(
        _head(app, req) + [("AE", _DONE), ("AQ", cfg["terminal_id"]), ("CG", cfg["merchant_id"])]
    )


def _status(app, req):
    """CD=T: the last transaction's answer, as it was (or would have been)."""
    term = app.term
    if term.busy():
        return fail(app, req, AF_UNKNOWN), None
    t = term.last()
    if t is None:
        return fail(app, req, AF_UNKNOWN), None
    view = {"CZ": req["CZ"], "CD": req["CD"], "CB": "%d" % t.amount, "CE": "%03d" % t.cur}
    for k in ("CJ", "CA", "CF"):
        v = (t.data or {}).get(k) or req.get(k)
        if v:
            view[k] = v
    if "CK" in req:
        view["CK"] = req["CK"]
    return answer(app, view, t), t


def _duplicate(app, req):
    t = app.term.last()
    if t is None:
        return fail(app, req, AF_UNKNOWN)
    if "CK" not in req:
        req["CK"] = "100"
    return tlv.encode(_head(app, req) + [("AE", _DONE)] + _tickets(app, req, t))


def _settle(app, req):
    try:
        s = app.term.settle()
    except Busy:
        return fail(app, req, AF_UNKNOWN)
    text = receipt.settlement(s, app.cfg)
    if "CK" not in req:
        req["CK"] = "110"
    return tlv.encode(_head(app, req) + [("AE", _DONE)] + _tickets(app, req, text=text))
