"""Concert V2 (protocols E and E+) requests <-> terminal operations.

The serial line (firmware/concert_serial.py) hands each V2 message to
request(), with the Concert adapter; the fixed-field codec is
lib/wire/concert_v2.  Loaded at the line's first V2 message: a line that
speaks V3 never carries it.  Decisions are in docs/CONCERT.md.
"""

from firmware import log, spawn, when_room
from firmware.concert import OPS
from firmware.terminal import Busy
from wire import concert_v2 as v2


async def request(concert, msg, src, immediate):
    """(answer bytes or None, Txn or None) for one V2 message from src (the
    listener's name), as Concert.request for V3; concert is the adapter,
    immediate the listener's `immediate` (DELAI A011 answers at once)."""
    try:
        req = v2.decode(msg)
    except v2.V2Error as e:
        log.event(src, "malformed", str(e))
        return v2.refusal(msg), None
    term = concert.app.term
    op = OPS.get(req["type"])
    amount = int(req["amount"])
    cur = int(req["currency"])
    orig = None
    if op == "void":
        target = term.find_void_target(amount, cur)
        if target is None:
            log.event(src, "void", "no matching transaction")
            op = None
        else:
            orig = target.no
    elif op is None:
        log.event(src, "unknown-type", req["type"])
    if op is None:
        return v2.encode(req, v2.REFUSED), None
    try:
        t = term.start(op, amount, cur, src, orig=orig, data={"pos": req["pos"]})
    except Busy:
        return v2.encode(req, v2.REFUSED), None
    t.hold = ("whole",)  # V2 answers no amount: no partial approval (unhappy.py)
    if req["delai"] == "A011" and immediate:  # answer now, result on the terminal
        spawn(term.run(t))
        return v2.encode(req, v2.TAKEN), None
    await term.run(t)
    if t.withhold:
        return None, t
    ok = t.result == "approved"  # (the answer owed for a payment run: worth request_ms)
    return await when_room(v2.encode, req, v2.ACCEPTED if ok else v2.REFUSED,
                           t.pan or "" if ok and req["mode"] != "C" else "",
                           ms=concert.app.cfg["timeouts"]["request_ms"]), t
