"""The rarer outcomes' steps: wrong PIN then right, chip error and magstripe
fallback, card removed, contactless soft decline (SCA), possible
duplicate, partial approval, paper out, power cut.

Loaded by the core (firmware/terminal.py) with firmware.load() the first
time a transaction gets one of them, or while the duplicate check
(`card.dup_min`) is on; a terminal that only approves and declines never
carries it.  It walks the whole flow for such a transaction (card, PIN,
duplicate check, authorisation) on the Terminal and Txn it is given, and
imports nothing of the core: the states are the core's names, as strings.
"""
import asyncio

from firmware import log

# the outcomes run here, beside the core's own (config.OUTCOMES); what each does:
# the README's outcome table and docs/CONTROL.md
NAMES = (
    "wrong_pin",  # one wrong PIN (wrong_pin:2 two), then the right one: approved
    "fallback",  # the chip cannot be read: swiped (magstripe), approved
    "removed",  # the card pulled out after it was read: cancelled
    "sca",  # a tap refused ("insert card"), inserted, PIN: approved (sca:decline declined)
    "duplicate",  # "possible duplicate?": the cardholder confirms (duplicate:no refuses)
    "paper_out",  # approved; its ticket could not be printed
    "partial",  # approved for half (partial:N for N minor units) where the protocol says so
    "power_cut",  # power_cut:after_card|after_auth|after_answer: the terminal reboots there
)
# the arguments an outcome takes ("name:argument"); "" is the name alone
ARGS = {"wrong_pin": ("", "1", "2"), "sca": ("", "decline"), "duplicate": ("", "yes", "no"),
        "power_cut": ("after_card", "after_auth", "after_answer")}


def ok(v):
    """True for one of NAMES, with its argument if any (config.outcome)."""
    if type(v) is not str:
        return False
    name, _, arg = v.partition(":")
    if name not in NAMES:
        return False
    if name == "partial":
        return arg == "" or (arg.isdigit() and 0 < int(arg) < 10 ** 12)
    return arg in ARGS.get(name, ("",)) and (arg or ":" not in v)


async def run(term, t):
    """Sets t.result and t.reason, walking the steps: card, PIN, duplicate
    check, authorisation.  A step that ends the transaction returns False.
    t.outcome is "name" or "name:argument" (power_cut:after_auth)."""
    o, _, arg = t.outcome.partition(":")
    if o == "power_cut" and arg != "after_card":  # after_card: in _card below
        _cut_when_done(term, t, arg)
    if o == "currency" or t.cur not in term.cfg["currencies"]:
        t.result, t.reason = "error", "currency"
        return
    # void, capture and a refund of a known transaction need no card
    if t.op not in ("void", "capture") and not (t.op == "refund" and t.orig):
        if not (await _card(term, t, o, arg) and await _continue(term, t)
                and await _pin(term, t, o, arg) and await _duplicate(term, t, o, arg)):
            return
    await _auth(term, t, o, arg)


async def _present(term, t, o, first):
    """Waits for a card: its data ({} in automatic mode), or None once the
    result is set (time-out, cancelled)."""
    to = term.cfg["timeouts"]
    term._state(t, "wait_card")
    card_ms = to["card_s"] * 1000
    inter = term.mode == "interactive"
    w = await term._wait(card_ms if (o == "no_card" and first) or inter
                         else min(term.cfg["delays"]["card_ms"], card_ms))
    card = None
    if w == "card":  # presented on the page or through the API
        card, w = term.wake_data or {}, None
    elif w is None and inter:
        o = "no_card"  # nobody presented one in time
    if w or (card is None and first and o in ("no_card", "cancel")):
        t.result = "cancelled" if w or o == "cancel" else "timeout"
        t.reason = w or o
        return None
    return card or {}


async def _card(term, t, o, arg):
    """The card step: presented, read; a contactless tap refused for strong
    authentication (sca: insert the card) or a chip that cannot be read
    (fallback: swipe it) asks for the card again."""
    card = await _present(term, t, o, True)
    if card is None:
        return False
    c = term.cfg["card"]
    t.pan = "*" * (len(c["pan"]) - 4) + c["pan"][-4:]
    t.brand, t.mode, t.aid, t.exp = c["brand"], c["mode"], c["aid"], c["expiry"]
    t.mode = card.get("profile") or t.mode
    t.brand = card.get("brand") or t.brand
    again = None
    if o == "sca" and t.mode != "magstripe":
        t.mode, again = "contactless", ("Insert card", "chip")  # the tap the issuer refused
    elif o == "fallback" and t.mode == "chip":
        again = ("Chip error, swipe card", "magstripe")
    if again:
        term._state(t, "card_read")
        log.event("core", "card", "#%d" % t.no, t.mode, "refused:", again[0])
        term.note = again[0]
        card = await _present(term, t, o, False)
        term.note = None
        if card is None:
            return False
        t.mode = again[1]  # whatever the page said: inserted, swiped
    term.card_in = term.mode == "interactive" and t.mode == "chip"  # auto mode: taken out at once
    term._state(t, "card_read")
    if o == "power_cut" and arg == "after_card":
        cut(term, t, arg)
    return True


async def _continue(term, t):
    if "card" not in t.hold:  # the register looks at the card first
        return True
    term._state(t, "wait_continue")
    w = await term._wait(term.cfg["timeouts"]["continue_s"] * 1000)
    if w != "continue":
        t.result = "cancelled" if w else "timeout"
        t.reason = w or "no_continue"
        return False
    if term.wake_data and term.wake_data.get("amount"):
        t.amount = term.wake_data["amount"]
    return True


async def _pin(term, t, o, arg):
    """The PIN step (chip cards paying): right at once, wrong once or twice
    first (wrong_pin[:2]), three times wrong (pin_blocked); the card pulled
    out meanwhile (removed)."""
    d = term.cfg["delays"]
    ms = term.cfg["timeouts"]["pin_s"] * 1000
    if o != "pin_blocked" and not (t.mode == "chip" and t.op in ("pay", "preauth")):
        if o == "removed":  # no PIN to wait for: pulled out while it is read
            return _removed(term, t)
        return True
    term._state(t, "pin")
    if term.mode == "interactive":
        from firmware import cardholder  # only when someone types PINs

        return await cardholder.pin(term, t, o, ms)
    wrong = 3 if o == "pin_blocked" else int(arg or 1) if o == "wrong_pin" else 0
    for i in range(wrong + 1):
        w = await term._wait(min(d["pin_ms"], ms))
        if w:
            t.result, t.reason = "cancelled", w
            return False
        if o == "removed":
            return _removed(term, t)
        if i == wrong:
            break
        log.event("core", "pin", "#%d" % t.no, "wrong")
        if i == 2:
            t.result, t.reason = "declined", "pin"
            return False
        term.note = "Wrong PIN, %d tries left" % (2 - i)
        term._state(t, "pin")
    term.note = None
    return True


def _removed(term, t):
    log.event("core", "card", "#%d" % t.no, "removed before the end")
    term.card_in = False
    t.result, t.reason = "cancelled", "removed"
    return False


async def _duplicate(term, t, o, arg):
    """Possible duplicate: the same card and amount approved within
    card.dup_min minutes (or the outcome says so): the cardholder confirms
    (green key) or not (red key)."""
    if o != "duplicate" and not _seen(term, t):
        return True
    to = term.cfg["timeouts"]["pin_s"] * 1000
    term.note = "Possible duplicate, OK?"
    term._state(t, "confirm")
    if term.mode == "interactive":
        w = await term._wait(to)
    else:
        w = await term._wait(min(term.cfg["delays"]["pin_ms"], to))
        w = w or ("cancel" if arg == "no" else "confirm")
    term.note = None
    if w == "confirm":
        return True
    if w:
        t.result, t.reason = "cancelled", "duplicate" if w == "cancel" else w
    else:
        t.result, t.reason = "timeout", "no_confirm"
    return False


def _seen(term, t):
    n = term.cfg["card"]["dup_min"]
    if not n or not t.pan:
        return False
    for r in term.journal.recent:
        if (r is not t and r.result == "approved" and r.op == t.op and r.amount == t.amount
                and r.pan == t.pan and r.cur == t.cur and 0 <= t.ts - r.ts < n * 60):
            return True
    return False


async def _auth(term, t, o, arg):
    d = term.cfg["delays"]
    to = term.cfg["timeouts"]
    term._state(t, "auth")
    ms = d["slow_auth_ms"] if o == "slow" else d["auth_ms"] if term.auth_ms is None else term.auth_ms
    host_ms = to["auth_s"] * 1000
    if ms:
        await asyncio.sleep_ms(min(ms, host_ms))
    if ms > host_ms or o == "host_error":
        t.result, t.reason = "error", "host"
        return
    if o in ("decline", "forbidden") or (o == "sca" and arg == "decline"):
        t.result, t.reason = "declined", "decline" if o == "sca" else o
        return
    if o == "partial":
        part = int(arg) if arg else t.amount // 2
        if "partial" not in t.hold or not 0 < part < t.amount:
            log.event("core", "partial", "#%d" % t.no, "not expressible here: declined")
            t.result, t.reason = "declined", "decline"
            return
        t.amount, t.reason = part, "partial"
    t.auth = "%06d" % ((t.no * 7919 + t.amount * 31) % 1000000)
    if o == "signature" and "signature" in t.hold:
        term._state(t, "signature")
        w = await term._wait(to["signature_s"] * 1000)
        if w != "signed":
            t.result, t.reason = ("cancelled", w) if w == "abort" else ("declined", "signature")
            t.auth = None
            return
    t.result = "approved"
    if o == "paper_out":
        t.reason = "paper_out"  # approved; its ticket could not be printed
    t.drop = o == "lost"


def _cut_when_done(term, t, step):
    """The power cut after the authorisation (the outcome journaled, the
    answer not sent) or after the answer (once the adapter reports it
    delivered): the core's state change to "done" comes after the journal
    has the outcome and before the adapter answers."""

    def done(x):
        if x is t and x.state == "done":
            term.watchers.remove(done)
            if step == "after_auth":
                cut(term, t, step)
            else:
                asyncio.create_task(_after_answer(term, t))

    term.watchers.append(done)


async def _after_answer(term, t):
    # the adapter writes the answer, then reports it delivered: within 5 s,
    # or the power goes anyway (a register gone before its answer)
    for _ in range(500):
        if t.delivered:
            break
        await asyncio.sleep_ms(10)
    cut(term, t, "after_answer" if t.delivered else "after_answer (not delivered)")


def cut(term, t, step):
    """The power goes at `step` (after_card, after_auth, after_answer): a
    board resets (after faults.off_ms); on a PC the firmware exits
    with the power cut's status and its launcher starts it again on the
    same state dir after that long (tools/understudy/launch.py)."""
    ms = term.cfg["faults"]["off_ms"]
    log.event("core", "power-cut", "#%d" % t.no, step, "off %d ms" % ms)
    from firmware.board import load

    load().power_cut(ms)
