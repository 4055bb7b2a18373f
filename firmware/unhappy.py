"""The rarer outcomes: wrong PIN then right, chip error and magstripe
fallback, card removed, contactless soft decline (SCA), possible duplicate,
partial approval, paper out, power cut.

Imported by the core (firmware/terminal.py, after a collection) the first
time a transaction gets one of them, or while the duplicate check
(card.dup_min) is on: a terminal that only approves and declines never
carries it.  It wraps the core's own flow (Terminal._flow) rather than
repeating it: a step before it (the duplicate question, a first card
refused), the core's flow with a plain outcome, its state changes watched
(wrong PINs, the card removed, the power cut after the card read), and a
step after it (the amount approved, the paper).  It imports nothing of the
core: the states are the core's names, as strings.
"""
import asyncio

from firmware import log

# the outcomes run here, beside the core's own (firmware.OUTCOMES); what each
# does: the README's outcome table and docs/CONTROL.md
NAMES = ("wrong_pin", "fallback", "removed", "sca", "duplicate", "paper_out", "partial", "power_cut")
# the arguments an outcome takes ("name:argument"); "" is the name alone
ARGS = {"wrong_pin": ("", "1", "2"), "sca": ("", "decline"), "duplicate": ("", "yes", "no"),
        "power_cut": ("after_card", "after_auth", "after_answer")}


def ok(v):
    """True for one of NAMES, with its argument if any (firmware.outcome)."""
    name, _, arg = v.partition(":")
    if name == "partial":
        return arg == "" or (arg.isdigit() and 0 < int(arg) < 10 ** 12)
    return name in NAMES and arg in ARGS.get(name, ("",)) and (arg or ":" not in v)


async def run(term, t):
    """Sets t.result and t.reason, as Terminal._flow does."""
    outcome = t.outcome
    o, _, arg = outcome.partition(":")
    base = outcome if o not in NAMES else "decline" if arg == "decline" else "approve"
    if o == "partial":
        part = int(arg) if arg else t.amount // 2
        if "whole" in t.hold or not 0 < part < t.amount:
            log.event("core", "partial", "#%d" % t.no, "not expressible here: declined")
            base = "decline"
    elif o == "power_cut" and arg != "after_card":
        _cut_when_done(term, t, arg)
    prog = t.progress
    seen = []  # type: list  # the states met, for the watcher

    def step(x):
        _step(term, x, o, arg, prog, seen)

    t.progress = step
    try:
        # void, capture and a refund of a known transaction need no card
        if t.op not in ("void", "capture") and not (t.op == "refund" and t.orig):
            if not (await _duplicate(term, t, o, arg) and await _refused(term, t, o)):
                return
        t.outcome = base
        await term._flow(t)
    finally:
        t.outcome, t.progress, term.note = outcome, prog, None
    if t.result == "approved" and base == "approve":
        if o == "partial":
            t.amount, t.reason = part, "partial"  # authorised for less
        elif o == "paper_out":
            t.reason = "paper_out"  # approved; its ticket could not be printed


def _step(term, t, o, arg, prog, seen):
    """Each state change of the core's flow, before the adapter hears of it."""
    s = t.state
    seen.append(s)
    if (s == "card_read" and seen.count(s) > 1) or s in ("pin", "auth"):
        term.note = None  # the card asked for again is in
    auto = not term.interactive
    if s == "wait_card" and term.note and auto:  # the card asked for again: inserted, swiped
        term.act("card", {"profile": "magstripe" if o == "fallback" else "chip"})
    elif s == "wait_card" and o == "removed" and auto and not (
            term.cfg["card"]["mode"] == "chip" and t.op in ("pay", "preauth")):
        _removed(term, t)  # no PIN to wait for: pulled out while it is read
    elif s == "card_read" and o == "power_cut" and arg == "after_card":
        cut(term, t, arg)
    elif s == "pin" and o == "removed":
        _removed(term, t)  # pulled out while the PIN is asked
    elif s == "pin" and o == "wrong_pin" and auto:
        if prog:
            prog(t)  # "Enter PIN", then each wrong one
        for i in range(int(arg or 1)):
            log.event("core", "pin", "#%d" % t.no, "wrong")
            term.note = "Wrong PIN, %d tries left" % (2 - i)
            if prog and i < int(arg or 1) - 1:
                prog(t)
    if prog:
        prog(t)


def _removed(term, t):
    log.event("core", "card", "#%d" % t.no, "removed before the end")
    term.card_in = False
    term.act("removed")  # the wait at hand ends: cancelled, reason removed


async def _refused(term, t, o):
    """sca: a contactless tap refused (strong authentication), "insert
    card"; fallback: a chip that cannot be read, "swipe card".  The first
    card is presented here, refused; the core's flow asks for it again."""
    if o not in ("sca", "fallback"):
        return True
    to = term.cfg["timeouts"]["card_s"] * 1000
    inter = term.interactive
    term._state(t, "wait_card")
    w = await term._wait(to if inter else min(term.cfg["delays"]["card_ms"], to))
    if w == "card":
        w = None
    elif w is None and inter:
        w = "no_card"
    if w:
        t.result, t.reason = ("timeout" if w == "no_card" else "cancelled"), w
        return False
    t.mode = "contactless" if o == "sca" else "chip"  # the card refused
    term._state(t, "card_read")
    term.note = "Insert card" if o == "sca" else "Chip error, swipe card"
    log.event("core", "card", "#%d" % t.no, t.mode, "refused:", term.note)
    return True


async def _duplicate(term, t, o, arg):
    """Possible duplicate: the same card and amount approved within
    card.dup_min minutes (or the outcome says so): the cardholder confirms
    (green key) or not (red key).  Asked before the card is read: the
    simulated card is known (card.pan)."""
    n = term.cfg["card"]["dup_min"]
    pan = term.cfg["card"]["pan"][-4:]
    if o != "duplicate" and not (n and [r for r in term.journal.recent if (
            r is not t and r.result == "approved" and r.op == t.op and r.amount == t.amount
            and r.cur == t.cur and (r.pan or "")[-4:] == pan and 0 <= t.ts - r.ts < n * 60)]):
        return True
    to = term.cfg["timeouts"]["pin_s"] * 1000
    term.note = "Possible duplicate, OK?"
    term._state(t, "confirm")
    if term.interactive:
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
    cut(term, t, "after_answer")


def cut(term, t, step):
    """The power goes at `step` (after_card, after_auth, after_answer): a
    board resets (after faults.off_ms); on a PC the firmware exits with the
    power cut's status and its launcher starts it again on the same state
    dir after that long (tools/understudy/launch.py)."""
    ms = term.cfg["faults"]["off_ms"]
    log.event("core", "power-cut", "#%d" % t.no, step, "off %d ms" % ms)
    from firmware.board import load

    load().power_cut(ms)
