"""Synqpay methods used now and then, loaded on first use: pairing, lookups,
settlement and batch, device and terminal information.

call(app, method, params) returns the JSON text of the result, or raises
synqpay.Err.  The transaction path stays in synqpay.py.
"""
import asyncio
import os
import sys
import time
from binascii import hexlify

from micropython import const

from firmware import VERSION, clock, log
from firmware import synqpay as S
from firmware.terminal import Busy

# synqpay.py's error codes that these operations answer with
_METHOD_NOT_FOUND = const(-32601)
_GENERAL_ERROR = const(100)
_INVALID_PARAM = const(103)
_ILLEGAL_STATE = const(201)
_TRANSACTION_NOT_FOUND = const(302)

PAIRING_MS = 30000  # how long the pairing code is valid


def call(app, m, p):
    if m == "pair":
        return _pair(app, p)
    if m == "authenticate":
        return _authenticate(app, p)
    if m == "getTransaction":
        return _get_transaction(app, p)
    if m == "getTerminalStatus":
        return S.obj((("terminalId", app.cfg["terminal_id"]), ("terminalName", app.cfg["merchant_name"]),
                      ("terminalStatus", "READY")))
    if m == "getDeviceInfo":
        return _device_info(app)
    if m == "settlement":
        return _settlement(app, p)
    if m == "getBatchFileStatus":
        return '{"mainTerminal":{"terminalId":"%s","batchFile":[%s]}}' % (
            app.cfg["terminal_id"], ",".join(_batch(app)))
    raise S.Err(_METHOD_NOT_FOUND, "method not found")


def _idle(app):
    if app.term.current or S.pairing():
        raise S.Err(_ILLEGAL_STATE, S.busy())


def _pair(app, p):
    sn = S._need(p, "serialNumber", str, "serial number")
    if sn != app.cfg["synqpay"]["serial_number"]:
        raise S.Err(_INVALID_PARAM, "serial number does not match")
    _idle(app)
    code = app.cfg["synqpay"]["otp"] or "%06d" % (int.from_bytes(os.urandom(4), "big") % 1000000)
    S._otp = [code, time.ticks_add(time.ticks_ms(), PAIRING_MS)]
    # the code a real terminal shows on its screen: ours is the web page's
    # (web.screen) and the log; this line also tells open pages
    log.event(S.SRC, "pairing", "code", code, "valid %d s" % (PAIRING_MS // 1000))
    asyncio.create_task(_expire(app))
    return "null"


async def _expire(app):
    """Open pages hear when the code is gone from the screen."""
    await asyncio.sleep_ms(PAIRING_MS + 20)
    if app.trace is not None and not S.pairing():
        app.trace.kick()


def _authenticate(app, p):
    otp = S._need(p, "otp", str, "otp")
    if not S.pairing():
        raise S.Err(_ILLEGAL_STATE, "no pairing in progress")
    if S._otp is None or otp != S._otp[0]:
        raise S.Err(_INVALID_PARAM, "wrong code")
    hx = app.cfg["synqpay"]["api_key"].lower()
    while not hx or hx == "00000000":
        hx = hexlify(os.urandom(4)).decode()
    d = app.board.STATE_DIR
    try:
        try:
            os.mkdir(d)
        except OSError:
            pass  # it exists
        with open(d + S.KEY_FILE + ".new", "w") as f:
            f.write(hx + "\n")
        os.rename(d + S.KEY_FILE + ".new", d + S.KEY_FILE)
    except OSError as e:
        log.event(S.SRC, "pairing-failed", repr(e))
        raise S.Err(_GENERAL_ERROR, "cannot store the key")
    S._key = bytes.fromhex(hx)
    S._otp = None
    log.event(S.SRC, "paired", "key stored in", d + S.KEY_FILE)
    return '{"apiKey":"%s"}' % hx


def _get_transaction(app, p):
    j = app.term.journal
    how = S._need(p, "lookupMethod", str, "lookup method")
    _idle(app)
    if how == "LAST_TRANS":
        t = j.last()
    elif how in ("REF_ID", "TRANS_ID"):
        v = S._need(p, "lookupValue", str, "lookup value")
        if how == "REF_ID":
            t = j.lookup(v, S.SRC)
        else:
            t = j.get(int(v[12:])) if len(v) == 23 and v.isdigit() else None
            if t is not None and S.txid(t) != v:
                t = None
    else:
        raise S.Err(_INVALID_PARAM, "lookup method is invalid")
    if t is None or not t.result:
        raise S.Err(_TRANSACTION_NOT_FOUND, "transaction not found")
    return '{"transactionResult":"%s","transaction":%s}' % (S.result_of(t), S.tx(app, t))


def _device_info(app):
    v = sys.implementation.version
    return S.obj((
        ("appVersion", VERSION),
        ("brand", "understudy"),
        ("firmware", "%d.%d.%d" % (v[0], v[1], v[2])),
        ("localIP", app.board.address()),
        ("model", "UNDERSTUDY"),
        ("serialNumber", app.cfg["synqpay"]["serial_number"]),
        ("ssid", app.cfg["wifi"]["ssid"]),
        ("time", S.stamp(clock.now())),
    ))


def _batch(app):
    """The open batch's approved sales and refunds, oldest first."""
    return [S.obj((("type", "R"), ("referenceId", t.ref), ("transactionId", S.txid(t))))
            for t in app.term.journal.select(
                lambda t: t.result == "approved" and not t.voided and t.op in ("pay", "refund", "capture"))]


def _settlement(app, p):
    if S._need(p, "host", str, "host") != "SHVA":
        raise S.Err(_INVALID_PARAM, "host is invalid")
    _idle(app)
    items = _batch(app)
    try:
        s = app.term.settle()
    except Busy:
        raise S.Err(_ILLEGAL_STATE, "device is busy")
    cfg = app.cfg
    lines = [cfg["merchant_name"], "TERMINAL " + cfg["terminal_id"], "BATCH %08d" % s["batch"]]
    for cur, tot in sorted(s["totals"].items()):
        lines.append("%03d SALES %d %d REFUNDS %d %d VOIDS %d %d NET %d" % (
            cur, tot["pay"][0], tot["pay"][1], tot["refund"][0], tot["refund"][1],
            tot["void"][0], tot["void"][1], tot["net"]))
    return S.obj((("result", "OK"), ("settlement", (S.obj((
        ("terminalId", cfg["terminal_id"]),
        ("settlementId", "%s-%08d" % (cfg["terminal_id"], s["batch"])),
        ("batchNo", "%08d" % s["batch"]),
        ("report", "<!>".join(lines)),
        ("settledTransactions", ("[" + ",".join(items) + "]",)),
        ("time", S.stamp(s["ts"])),
    )),))))
