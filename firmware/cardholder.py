"""The cardholder at the keypad, in interactive mode (web.mode or POST
/api/mode): imported by the core only when a PIN is typed on the page or
through the control API, so automatic terminals do not carry it."""
from firmware import PIN_TRIES, log


async def pin(term, t, o, ms):
    """Interactive PIN entry: True once the right PIN is in; else sets the
    result (three wrong PINs: blocked; nobody: time-out; red button)."""
    wrong = 0
    while True:
        w = await term._wait(ms)
        ok = w == "confirm" or (w == "pin" and (term.wake_data or {}).get("ok"))
        if ok and o != "pin_blocked":
            term.note = None
            return True
        if w in ("pin", "confirm"):
            wrong += 1
            if wrong >= PIN_TRIES:
                t.result, t.reason = "declined", "pin"
                return False
            term.note = "Wrong PIN, %d tries left" % (PIN_TRIES - wrong)
            log.event("core", "pin", "#%d" % t.no, "wrong")
            term._state(t, t.state)  # PIN entry again
            continue
        t.result, t.reason = ("cancelled", w) if w else ("timeout", "no_pin")
        return False
