"""The rarer P3 requests: login, abort, signature, the transactions that
are not a plain charge (refunds, reversals, amend) and lookups, answered
from the terminal core and its journal.  p3 imports this module for one
request and forgets it afterwards (firmware.loaded, drop), so its RAM is free between
uses.
"""
from firmware import log
from firmware import p3_adapter as p3
from wire import p3 as w

NOT_FOUND = "TRANSACTION_NOT_FOUND"
_MODES = ("MOCK", "JUNGLE", "TEST", "TEST_FIXED", "LIVE", "LIVE_FIXED")
def find(app, ident, path):
    """The journal record an identifier names, or P3Error."""
    head = app.cfg["terminal_id"] + "-"
    no = ident[len(head):]
    t = None
    if ident.startswith(head) and no.isdigit():
        t = app.term.journal.get(int(no))
    if t is None:
        raise w.P3Error(NOT_FOUND, "no transaction %s" % ident, path)
    return t


def _done(app, op, no):
    """Sum approved `op`s of the open batch that refer to transaction no."""
    n = 0
    for t in app.term.journal.select(lambda t: t.op == op and t.orig == no and t.result == "approved"):
        n += t.amount
    return n


def prepare(app, kind, tp, path, key="referencedTransactionIdentifier", op=None):
    """(op, amount, currency, orig) of a refund, reversal or capture.

    A REFUND without a reference is a card refund: amount and currency are
    needed.  With one (or for a reversal or capture) they default to the
    original's (for a refund: what is left of it after the refunds of the
    open batch) and must match its currency; a refund or capture may not
    exceed it, a reversal is always of the whole amount.
    """
    ref = w.field(tp, key, path, str, kind != "REFUND" or op is not None)
    if ref is None:
        cur, places = p3.currency(w.field(tp, "currency", path), path)
        return "refund", p3.amount(tp, path, places), cur, None
    o = find(app, ref, path + key)
    alpha = w.field(tp, "currency", path, str, False)
    places = p3.alpha(o.cur)[1]
    if alpha is not None:
        cur, places = p3.currency(alpha, path)
        if cur != o.cur:
            raise w.P3Error(w.INVALID, "currency %s is not the transaction's" % alpha,
                            path + "currency")
    a = p3.amount(tp, path, places, False)
    want = ("pay", "capture") if kind == "REFUND" else ("preauth",) if kind == "CAPTURE" \
        else ("pay", "capture", "refund")
    refunded = _done(app, "refund", o.no)
    left = o.amount - refunded if kind == "REFUND" else o.amount
    why = None
    if o.result != "approved" or o.op not in want:
        why = "it is not an approved " + ("pre-authorisation" if kind == "CAPTURE" else "payment")
    elif o.voided:
        why = "it was reversed"
    elif kind == "REVERSAL" and o.batch != app.term.journal.batch:
        why = "its batch is closed (refund it instead)"
    elif kind == "REVERSAL" and refunded:
        why = "it was refunded, in part or in full"
    elif kind == "CAPTURE" and _done(app, "capture", o.no):
        why = "it was captured already"
    elif left <= 0:
        why = "it was refunded in full"
    elif a is not None and a > left:
        why = "the amount exceeds %s, what is left" % w.decimal(left, places).decode()
    elif a is not None and kind == "REVERSAL" and a != o.amount:
        why = "a reversal is of the whole amount"
    if why:
        raise w.P3Error(w.INVALID, "%s of %s refused: %s" % (kind.lower(), ref, why), path + key)
    return op or ("refund" if kind == "REFUND" else "void"), a or left, o.cur, o.no


async def serve(conn, op, body, path, tag, rtype, res):
    app = conn.app
    if op == "EXECUTE_TRANSACTION":
        return await _execute(conn, body, path, tag, rtype, res)
    if op == "LOGIN_MERCHANT":
        return await _login(conn, body, path, tag, rtype)
    if op == "GET_TRANSACTION":
        return await _lookup(conn, body, path, tag, rtype, res)
    if op in ("REFUND_TRANSACTION", "AMEND_TRANSACTION"):
        kind = "REFUND" if op[0] == "R" else "CAPTURE"
        top, a, cur, orig = prepare(app, kind, body, path, "transactionIdentifier", kind.lower())
        return await p3.start(conn, top, a, cur, body, path, orig, tag, rtype, res, False)
    # abort (under both names) and signature: the running P3 transaction
    term = app.term
    t = term.current
    sig = op == "SUBMIT_SIGNATURE"
    if t is None or t.src != p3.SRC or (sig and t.state != "signature"):
        raise w.P3Error("ACTION_NOT_PENDING" if sig else "TRANSACTION_NOT_ABORTABLE",
                        "no signature was asked for" if sig else "no P3 transaction is running")
    if sig:
        if w.field(body, "signatureOnReceipt", path, bool, False):
            how, what = "receipt", "signed"
        else:
            w.field(body, "signature", path)
            how = "digital"
            verified = w.field(body, "verified", path, bool, False)
            what = "unsigned" if verified is False else "signed"
        if t.data is None:
            t.data = {}
        t.data["sig"] = how
        term.act(what)
        log.event(conn.name, "signature", conn.peer, how, what)
    elif term.act("abort"):
        log.event(conn.name, "abort", conn.peer, "#%d" % t.no)
    else:
        raise w.P3Error("TRANSACTION_NOT_ABORTABLE", "the transaction can no longer be aborted",
                        "state " + t.state)
    await conn.send(w.message(rtype, tag, res, "OK"))


async def _lookup(conn, body, path, tag, rtype, res):
    app = conn.app
    ident = w.field(body, "transactionIdentifier", path, str, False)
    if ident is not None:
        t = find(app, ident, path + "transactionIdentifier")
    else:
        custom = w.field(body, "customIdentifier", path, str, False)
        if custom is None:
            raise w.P3Error(w.MISSING, "transactionIdentifier or customIdentifier is missing",
                            path[:-1])
        t = app.term.journal.lookup(custom, p3.SRC)
        if t is None:
            raise w.P3Error(NOT_FOUND, "no transaction with customIdentifier %s" % custom,
                            path + "customIdentifier")
    v = p3.view(app, t)
    if t.op == "preauth" and _done(app, "capture", t.no):
        v = tuple([(k, True if k == "captured" else x) for k, x in v])
    await conn.send(w.message(rtype, tag, res, "OK", None, (("transaction", v),)))


async def _login(conn, body, path, tag, rtype):
    pc = conn.app.cfg["p3"]
    mode = w.field(body, "providerMode", path)
    mid = w.field(body, "merchantIdentifier", path)
    secret = w.field(body, "merchantSecret", path)
    if mode not in _MODES:
        raise w.P3Error(w.INVALID, "providerMode %s is not one of %s" % (mode, ", ".join(_MODES)),
                        path + "providerMode")
    if (pc["merchant_identifier"] and mid != pc["merchant_identifier"]) or \
            (pc["merchant_secret"] and secret != pc["merchant_secret"]):
        p3.login = None
        log.event(conn.name, "login-refused", conn.peer, mid)
        raise w.P3Error("SERVER_AUTHENTICATION_FAILED",
                        "merchant identifier or secret not accepted",
                        "the terminal's p3.merchant_identifier and p3.merchant_secret")
    p3.login = mid
    log.event(conn.name, "login", conn.peer, mid, mode)
    dev = (("name", pc["device_name"]), ("identifier", pc["device"]),
           ("resource", "devices/" + pc["device"]), ("type", pc["device_type"]),
           ("comlink", "WIFI"), ("components", [(("type", "TRANSACTION"),)]))
    await conn.send(w.message(rtype, tag, None, "OK", None, (
        ("information", (("location", pc["location"]),)), ("devices", [dev]))))


async def _execute(conn, body, path, tag, rtype, res):
    """EXECUTE_TRANSACTION other than a well-formed CHARGE: REFUND, REVERSAL,
    or whatever is wrong with the request."""
    tp = w.field(body, "transactionParameters", path, dict, "sessionIdentifier" not in body)
    if tp is None:
        raise w.P3Error(w.INVALID, "sessionIdentifier transactions live on the Payworks backend;"
                        " send transactionParameters", path + "sessionIdentifier")
    path += "transactionParameters."
    kind = w.field(tp, "type", path)
    if kind not in ("REFUND", "REVERSAL"):
        raise w.P3Error(w.INVALID, "type %s is not CHARGE, REFUND or REVERSAL" % kind,
                        path + "type")
    op, a, cur, orig = prepare(conn.app, kind, tp, path)
    await p3.start(conn, op, a, cur, tp, path, orig, tag, rtype, res, True)
