"""Concert V3's tickets and the actions beside payments, loaded on use.

Tickets (ZT) a request asks for with CK; the actions that are not payments:
identification (CD=I), status of the last transaction (T), duplicate ticket
(3), settlement (B), print a register's ticket (P); and the answers to the
rarer outcomes (partial approval, paper out, card removed...).  Every
function is handed the adapter (firmware.concert.Concert) and builds its
answers with it; this module never imports its caller.
"""
import binascii

from micropython import const

from firmware import log, receipt
from firmware.terminal import Busy
from wire import concert_tlv as tlv

_AF_UNKNOWN_ACTION = const("12")  # the one AF code only this module sends (concert.py names the rest)


def tickets(concert, req, t=None, text=None):
    """ZT elements asked for by CK: pos 2 whose (0 cardholder, 1 merchant,
    2 both), pos 3 the format (0 Latin-1 text, 1 HTML), base64 in AK."""
    ck = req["CK"]
    copies = "1" if ck[1:2] == "1" else "01" if ck[1:2] == "2" else "0"
    html = ck[2:3] == "1"
    out = []
    for copy in copies:
        body = text if text is not None else receipt.transaction(t, concert.app.cfg, copy == "1")
        if html:
            body = "<html><body><pre>%s</pre></body></html>" % body
        ak = binascii.b2a_base64(body.encode(), newline=False).decode()
        out.append(("ZT", [("CK", "1" + copy + ("1" if html else "0")), ("AK", ak)]))
    return out


# the answer to a reason Concert.answer does not know, as the answer to one
# it does: the rarer outcomes (firmware/unhappy.py), and the core's own
# (internal: AF 00)
_AS = {"removed": "cancel",  # the card pulled out: abandoned, AF 06 as the red button
       "duplicate": "cancel",  # "possible duplicate?" refused by the cardholder: AF 06
       "no_confirm": "no_card",  # nobody answered it: AF 08, as other time-outs
       "partial": None,  # approved for less: CB says the amount approved
       "paper_out": None}  # approved, and no ticket: the paper is out


def odd(concert, req, t):
    """concert.answer for a transaction whose reason it does not know (odd: a
    name the terminal knows already, docs/MEMORY.md "Names")."""
    why = t.reason
    t.reason = _AS.get(why, "")
    if why == "partial":
        req = dict(req)
        req["CB"] = "%02d" % t.amount
    elif why == "paper_out":
        req = dict(req)
        req.pop("CK", None)
    try:
        return concert.answer(req, t)
    finally:
        t.reason = why


def _done(concert, req, more=()):
    """AE=10 (operation performed), with the action's own tags."""
    return tlv.encode(concert.head(req) + list(more))


def action(concert, req, src):
    """(answer, Txn or None) for an action that is not a payment."""
    a = req["CD"]
    term = concert.app.term
    if a == "I":
        cfg = concert.app.cfg
        return _done(concert, req, [("AQ", cfg["terminal_id"]), ("CG", cfg["merchant_id"])]), None
    if a == "T":
        # the last transaction's answer, as it was (or would have been) sent
        t = None if term.current else term.journal.last()
        if t is None:
            return concert.busy(req), None
        view = {"CZ": req["CZ"], "CD": "T", "CB": "%d" % t.amount, "CE": "%03d" % t.cur}
        for k in ("CJ", "CA", "CF"):
            v = (t.data or {}).get(k) or req.get(k)
            if v:
                view[k] = v
        if "CK" in req:
            view["CK"] = req["CK"]
        return concert.answer(view, t), t
    if a == "3":
        t = term.journal.last()
        if t is None:
            return concert.busy(req), None
        req.setdefault("CK", "100")
        return _done(concert, req, tickets(concert, req, t)), None
    if a == "B":
        try:
            s = term.settle()
        except Busy:
            return concert.busy(req), None
        req.setdefault("CK", "110")
        return _done(concert, req, tickets(concert, req, text=receipt.settlement(s, concert.app.cfg))), None
    if a == "P":
        log.event(src, "print", "%d ticket(s)" % len(req.get("ZT", ())))
        return _done(concert, req), None
    log.event(src, "unknown-action", a)
    return concert.fail(req, _AF_UNKNOWN_ACTION), None
