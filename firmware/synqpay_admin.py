"""Synqpay's methods around the payments, loaded on first use: pairing
(pair, authenticate), lookups (getTransaction), settlement and batch
(settlement, getBatchFileStatus), device and terminal information
(getDeviceInfo, getTerminalStatus).

call(a, method, params) returns the JSON text of the result, or raises
a.Err; `a` is the app's synqpay.Synqpay adapter, whose state (the key, the
pairing code) and codes these use.  This module never imports synqpay:
the transaction path stays there.
"""
import asyncio
import os
import sys
import time
from binascii import hexlify

from micropython import const

from firmware import VERSION, clock, log
from firmware.terminal import Busy

# the JSON-RPC error codes only these methods answer with (the others:
# synqpay.py's table, read from the adapter)
_METHOD_NOT_FOUND = const(-32601)
_GENERAL_ERROR = const(100)
PAIRING_MS = 30000  # how long the pairing code is valid


def call(a, m, p):
    if m == "pair":
        return _pair(a, p)
    if m == "authenticate":
        return _authenticate(a, p)
    if m == "getTransaction":
        return _get_transaction(a, p)
    cfg = a.app.cfg
    if m == "getTerminalStatus":
        return a.obj((("terminalId", cfg["terminal_id"]), ("terminalName", cfg["merchant_name"]),
                      ("terminalStatus", "READY")))
    if m == "getDeviceInfo":
        return _device_info(a)
    if m == "settlement":
        return _settlement(a, p)
    if m == "getBatchFileStatus":
        return '{"mainTerminal":{"terminalId":"%s","batchFile":[%s]}}' % (
            cfg["terminal_id"], ",".join(_batch(a)))
    raise a.Err(_METHOD_NOT_FOUND, "method not found")


def _pair(a, p):
    cfg = a.app.cfg["synqpay"]
    if a.param(p, "serialNumber", str, "serial number") != cfg["serial_number"]:
        raise a.Err(a.INVALID_PARAM, "serial number does not match")
    a.refuse_if_busy()
    code = cfg["otp"] or "%06d" % (int.from_bytes(os.urandom(4), "big") % 1000000)
    a.pairing_code = [code, time.ticks_add(time.ticks_ms(), PAIRING_MS)]
    # the code a real terminal shows on its screen: ours is the web page's
    # (web.screen) and the log; this line also tells open pages
    log.event(a.SRC, "pairing", "code", code, "valid %d s" % (PAIRING_MS // 1000))
    asyncio.create_task(_expire(a))
    return "null"


async def _expire(a):
    """Open pages hear when the code is gone from the screen."""
    await asyncio.sleep_ms(PAIRING_MS + 20)
    if a.app.trace is not None and not a.pairing():
        a.app.trace.kick()


def _authenticate(a, p):
    otp = a.param(p, "otp", str, "otp")
    if not a.pairing():
        raise a.Err(a.ILLEGAL_STATE, "no pairing in progress")
    if otp != a.pairing_code[0]:
        raise a.Err(a.INVALID_PARAM, "wrong code")
    hx = a.app.cfg["synqpay"]["api_key"].lower()
    while not hx or hx == "00000000":
        hx = hexlify(os.urandom(4)).decode()
    path = a.app.board.STATE_DIR + a.KEY_FILE
    try:
        try:
            os.mkdir(a.app.board.STATE_DIR)
        except OSError:
            pass  # it exists
        with open(path + ".new", "w") as f:
            f.write(hx + "\n")
        os.rename(path + ".new", path)
    except OSError as e:
        log.event(a.SRC, "pairing-failed", repr(e))
        raise a.Err(_GENERAL_ERROR, "cannot store the key")
    a.api_key = bytes.fromhex(hx)
    a.pairing_code = None
    log.event(a.SRC, "paired", "key stored in", path)
    return '{"apiKey":"%s"}' % hx


def _get_transaction(a, p):
    j = a.app.term.journal
    how = a.param(p, "lookupMethod", str, "lookup method")
    a.refuse_if_busy()
    if how == "LAST_TRANS":
        t = j.last()
    elif how in ("REF_ID", "TRANS_ID"):
        v = a.param(p, "lookupValue", str, "lookup value")
        if how == "REF_ID":
            t = j.lookup(v, a.SRC)
        else:
            t = j.get(int(v[12:])) if len(v) == 23 and v.isdigit() else None
            if t is not None and a.txid(t) != v:
                t = None
    else:
        raise a.Err(a.INVALID_PARAM, "lookup method is invalid")
    if t is None or not t.result:
        raise a.Err(a.TRANSACTION_NOT_FOUND, "transaction not found")
    return '{"transactionResult":"%s","transaction":%s}' % (a.result_of(t), a.transaction(t))


def _device_info(a):
    v = sys.implementation.version
    cfg = a.app.cfg
    return a.obj((
        ("appVersion", VERSION),
        ("brand", "understudy"),
        ("firmware", "%d.%d.%d" % (v[0], v[1], v[2])),
        ("localIP", a.app.board.address()),
        ("model", "UNDERSTUDY"),
        ("serialNumber", cfg["synqpay"]["serial_number"]),
        ("ssid", cfg["wifi"]["ssid"]),
        ("time", a.stamp(clock.now())),
    ))


def _batch(a):
    """The open batch's approved sales and refunds, oldest first."""
    return [a.obj((("type", "R"), ("referenceId", t.ref), ("transactionId", a.txid(t))))
            for t in a.app.term.journal.select(
                lambda t: t.result == "approved" and not t.voided and t.op in ("pay", "refund", "capture"))]


def _settlement(a, p):
    if a.param(p, "host", str, "host") != "SHVA":
        raise a.Err(a.INVALID_PARAM, "host is invalid")
    a.refuse_if_busy()
    items = _batch(a)
    try:
        s = a.app.term.settle()
    except Busy:
        raise a.Err(a.ILLEGAL_STATE, "device is busy")
    cfg = a.app.cfg
    lines = [cfg["merchant_name"], "TERMINAL " + cfg["terminal_id"], "BATCH %08d" % s["batch"]]
    for cur, tot in sorted(s["totals"].items()):
        lines.append("%03d SALES %d %d REFUNDS %d %d VOIDS %d %d NET %d" % (
            cur, tot["pay"][0], tot["pay"][1], tot["refund"][0], tot["refund"][1],
            tot["void"][0], tot["void"][1], tot["net"]))
    return a.obj((("result", "OK"), ("settlement", (a.obj((
        ("terminalId", cfg["terminal_id"]),
        ("settlementId", "%s-%08d" % (cfg["terminal_id"], s["batch"])),
        ("batchNo", "%08d" % s["batch"]),
        ("report", "<!>".join(lines)),
        ("settledTransactions", ("[" + ",".join(items) + "]",)),
        ("time", a.stamp(s["ts"])),
    )),))))
