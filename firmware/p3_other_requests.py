"""The P3 requests other than a charge: login, abort, signature, the
transactions that are not a plain charge (refunds, reversals, amend) and
lookups, answered from the terminal core and its journal.  The P3 adapter
(p3_adapter.P3) imports this module for one request and forgets it
afterwards (firmware.loaded, drop), so its RAM is free between uses; it
passes itself in (its app, login, view() and start()), and this module
never imports it back.
"""
from firmware import log
from wire import currency
from wire import p3 as p3_codec

# error types only these requests answer (the others: wire.p3)
TRANSACTION_NOT_FOUND = "TRANSACTION_NOT_FOUND"
TRANSACTION_NOT_ABORTABLE = "TRANSACTION_NOT_ABORTABLE"
ACTION_NOT_PENDING = "ACTION_NOT_PENDING"
_MODES = ("MOCK", "JUNGLE", "TEST", "TEST_FIXED", "LIVE", "LIVE_FIXED")


def find(app, ident, path):
    """The journal record an identifier names, or P3Error."""
    head = app.cfg["terminal_id"] + "-"
    no = ident[len(head):]
    t = None
    if ident.startswith(head) and no.isdigit():
        t = app.term.journal.get(int(no))
    if t is None:
        raise p3_codec.P3Error(TRANSACTION_NOT_FOUND, "no transaction %s" % ident, path)
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
    ref = p3_codec.field(tp, key, path, str, kind != "REFUND" or op is not None)
    if ref is None:
        cur, places = p3_codec.currency_field(tp, path)
        return "refund", p3_codec.amount_field(tp, path, places), cur, None
    o = find(app, ref, path + key)
    given = p3_codec.currency_field(tp, path, False)
    places = currency.name(o.cur)[1]
    if given is not None:
        cur, places = given
        if cur != o.cur:
            raise p3_codec.P3Error(p3_codec.INVALID, "currency %s is not the transaction's"
                                   % tp["currency"], path + "currency")
    a = p3_codec.amount_field(tp, path, places, False)
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
        why = "the amount exceeds %s, what is left" % p3_codec.decimal(left, places).decode()
    elif a is not None and kind == "REVERSAL" and a != o.amount:
        why = "a reversal is of the whole amount"
    if why:
        raise p3_codec.P3Error(p3_codec.INVALID, "%s of %s refused: %s" % (kind.lower(), ref, why),
                               path + key)
    return op or ("refund" if kind == "REFUND" else "void"), a or left, o.cur, o.no


async def request(adapter, conn, op, body, path, tag, rtype, res):
    """The answer to request `op` (its body checked against path), or None
    when a transaction started writes its own (P3.request)."""
    app = adapter.app
    if op == "EXECUTE_TRANSACTION":
        return await _execute(adapter, conn, body, path, tag, rtype, res)
    if op == "LOGIN_MERCHANT":
        return _login(adapter, conn, body, path, tag, rtype)
    if op == "GET_TRANSACTION":
        return _lookup(adapter, body, path, tag, rtype, res)
    if op in ("REFUND_TRANSACTION", "AMEND_TRANSACTION"):
        kind = "REFUND" if op[0] == "R" else "CAPTURE"
        top, a, cur, orig = prepare(app, kind, body, path, "transactionIdentifier", kind.lower())
        return await adapter.start(conn, top, a, cur, body, path, orig, tag, rtype, res, False)
    # abort (under both names) and signature: the running P3 transaction
    term = app.term
    t = term.current
    sig = op == "SUBMIT_SIGNATURE"
    if t is None or t.src != adapter.SRC or (sig and t.state != "signature"):
        raise p3_codec.P3Error(ACTION_NOT_PENDING if sig else TRANSACTION_NOT_ABORTABLE,
                               "no signature was asked for" if sig else "no P3 transaction is running")
    if sig:
        if p3_codec.field(body, "signatureOnReceipt", path, bool, False):
            how, what = "receipt", "signed"
        else:
            p3_codec.field(body, "signature", path)
            how = "digital"
            verified = p3_codec.field(body, "verified", path, bool, False)
            what = "unsigned" if verified is False else "signed"
        if t.data is None:
            t.data = {}
        t.data["sig"] = how
        term.act(what)
        log.event(conn.name, "signature", conn.peer, how, what)
    elif term.act("abort"):
        log.event(conn.name, "abort", conn.peer, "#%d" % t.no)
    else:
        raise p3_codec.P3Error(TRANSACTION_NOT_ABORTABLE, "the transaction can no longer be aborted",
                               "state " + t.state)
    return p3_codec.message(rtype, tag, res, "OK")


def _lookup(adapter, body, path, tag, rtype, res):
    app = adapter.app
    ident = p3_codec.field(body, "transactionIdentifier", path, str, False)
    if ident is not None:
        t = find(app, ident, path + "transactionIdentifier")
    else:
        custom = p3_codec.field(body, "customIdentifier", path, str, False)
        if custom is None:
            raise p3_codec.P3Error(p3_codec.MISSING, "transactionIdentifier or customIdentifier is missing",
                                   path[:-1])
        t = app.term.journal.lookup(custom, adapter.SRC)
        if t is None:
            raise p3_codec.P3Error(TRANSACTION_NOT_FOUND,
                                   "no transaction with customIdentifier %s" % custom,
                                   path + "customIdentifier")
    v = adapter.view(t)
    if t.op == "preauth" and _done(app, "capture", t.no):
        v = tuple([(k, True if k == "captured" else x) for k, x in v])
    return p3_codec.message(rtype, tag, res, "OK", None, (("transaction", v),))


def _login(adapter, conn, body, path, tag, rtype):
    pc = adapter.app.cfg["p3"]
    mode = p3_codec.field(body, "providerMode", path)
    mid = p3_codec.field(body, "merchantIdentifier", path)
    secret = p3_codec.field(body, "merchantSecret", path)
    if mode not in _MODES:
        raise p3_codec.P3Error(p3_codec.INVALID, "providerMode %s is not one of %s"
                               % (mode, ", ".join(_MODES)), path + "providerMode")
    if (pc["merchant_identifier"] and mid != pc["merchant_identifier"]) or \
            (pc["merchant_secret"] and secret != pc["merchant_secret"]):
        adapter.login = None
        log.event(conn.name, "login-refused", conn.peer, mid)
        raise p3_codec.P3Error(p3_codec.SERVER_AUTHENTICATION_FAILED,
                               "merchant identifier or secret not accepted",
                               "the terminal's p3.merchant_identifier and p3.merchant_secret")
    adapter.login = mid
    log.event(conn.name, "login", conn.peer, mid, mode)
    dev = (("name", pc["device_name"]), ("identifier", pc["device"]),
           ("resource", "devices/" + pc["device"]), ("type", pc["device_type"]),
           ("comlink", "WIFI"), ("components", [(("type", "TRANSACTION"),)]))
    return p3_codec.message(rtype, tag, None, "OK", None, (
        ("information", (("location", pc["location"]),)), ("devices", [dev])))


async def _execute(adapter, conn, body, path, tag, rtype, res):
    """EXECUTE_TRANSACTION other than a well-formed CHARGE: REFUND, REVERSAL,
    or whatever is wrong with the request."""
    tp = p3_codec.field(body, "transactionParameters", path, dict, "sessionIdentifier" not in body)
    if tp is None:
        raise p3_codec.P3Error(p3_codec.INVALID, "sessionIdentifier transactions live on the Payworks"
                               " backend; send transactionParameters", path + "sessionIdentifier")
    path += "transactionParameters."
    kind = p3_codec.field(tp, "type", path)
    if kind not in ("REFUND", "REVERSAL"):
        raise p3_codec.P3Error(p3_codec.INVALID, "type %s is not CHARGE, REFUND or REVERSAL" % kind,
                               path + "type")
    op, a, cur, orig = prepare(adapter.app, kind, tp, path)
    return await adapter.start(conn, op, a, cur, tp, path, orig, tag, rtype, res, True)
