"""Cardholder, merchant and settlement receipts as plain text.

Receipts are rebuilt from the transaction record whenever they are asked for
(duplicates included), so nothing but the record needs to be kept.
"""
from firmware import clock
from wire import currency

def money(minor, num):
    """1250, 978 -> '12.50 EUR'."""
    alpha, d = currency.name(num)
    sign = "-" if minor < 0 else ""
    minor = abs(minor)
    if d:
        p = 10 ** d
        return "%s%d.%0*d %s" % (sign, minor // p, d, minor % p, alpha)
    return "%s%d %s" % (sign, minor, alpha)

_OPS = {
    "pay": "PAYMENT",
    "refund": "REFUND",
    "void": "VOID",
    "preauth": "PRE-AUTHORISATION",
    "capture": "CAPTURE",
}
_RESULTS = {
    "approved": "APPROVED",
    "declined": "DECLINED",
    "cancelled": "CANCELLED",
    "timeout": "TIMED OUT",
    "error": "NOT COMPLETED",
}
_REASONS = {
    "pin": "PIN BLOCKED",
    "forbidden": "CARD NOT ALLOWED",
    "currency": "CURRENCY NOT SUPPORTED",
    "host": "NO ANSWER FROM BANK",
    "abort": "ABORTED BY REGISTER",
    "journal": "TERMINAL MEMORY FULL",
    "interrupted": "INTERRUPTED",
    "not_found": "ORIGINAL NOT FOUND",
}


def _center(s, w):
    pad = (w - len(s)) // 2
    return " " * pad + s if pad > 0 else s[:w]


def _pair(left, right, w):
    gap = w - len(left) - len(right)
    return left + " " * (gap if gap > 0 else 1) + right


def _date(secs):
    y, mo, d, h, mi, s = clock.parts(secs)
    return "%02d/%02d/%04d %02d:%02d:%02d" % (d, mo, y, h, mi, s)


def _head(cfg, w):
    return [_center(cfg["merchant_name"], w), _center(cfg["merchant_city"], w)]


def lines(t, cfg, merchant=False):
    """A transaction's receipt, line by line (P3 sends them so: no block
    of the whole text needed)."""
    w = cfg["receipt"]["width"]
    lines = _head(cfg, w)
    if t.brand:
        lines.append(t.brand)
    if t.aid:
        lines.append(t.aid)
    lines.append(_date(t.ts))
    lines.append(_pair(cfg["terminal_id"], cfg["merchant_id"], w))
    if t.pan:
        lines.append(t.pan)
    lines.append(_OPS.get(t.op, t.op.upper()))
    lines.append(_pair("No %06d" % t.no, "BATCH %03d" % t.batch, w))
    if t.auth:
        lines.append("AUTH " + t.auth)
    lines.append(_pair("AMOUNT", money(t.amount, t.cur), w))
    lines.append(_center(_RESULTS.get(t.result, "IN PROGRESS"), w))
    if t.reason in _REASONS:
        lines.append(_center(_REASONS[t.reason], w))
    lines.append(_center("MERCHANT COPY" if merchant else "CARDHOLDER COPY", w))
    return lines


def transaction(t, cfg, merchant=False):
    return "\n".join(lines(t, cfg, merchant)) + "\n"


def settlement(s, cfg):
    """s: the summary returned by Journal.settle()."""
    w = cfg["receipt"]["width"]
    lines = _head(cfg, w)
    lines.append(_date(s["ts"]))
    lines.append(_pair(cfg["terminal_id"], cfg["merchant_id"], w))
    lines.append(_center("SETTLEMENT", w))
    lines.append("BATCH %03d" % s["batch"])
    for cur in sorted(s["totals"]):
        tot = s["totals"][cur]
        for op in ("pay", "refund", "void"):
            n, amount = tot[op]
            lines.append(_pair("%s x%d" % (_OPS[op], n), money(amount, cur), w))
        lines.append(_pair("NET", money(tot["net"], cur), w))
    if not s["totals"]:
        lines.append(_center("NO TRANSACTIONS", w))
    lines.append(_center("BATCH CLOSED", w))
    return "\n".join(lines) + "\n"
