"""Understudy: a payment terminal stand-in for MicroPython."""

VERSION = "0.1.0"
# settings never shown: not in logs, config problem lines, the control API or the page
SECRET = ("web.token", "wifi.password", "synqpay.api_key", "synqpay.otp", "p3.merchant_secret",
          "card.pan", "listeners.concert-bt.pin")


def borrow(name):
    """(was it loaded already, the module): import a rarely used module for
    one job; give it back with drop(name, had)."""
    import sys

    return name in sys.modules, __import__(name, None, None, ["_"])


def load(name):
    """A personality's module, imported on its first use (a listener's
    first client or bytes), after a collection: its code needs contiguous
    blocks, which the garbage of a busy terminal may be holding."""
    import sys

    m = sys.modules.get(name)
    if m is None:
        import gc

        gc.collect()
        m = __import__(name, None, None, ["_"])
    return m


def drop(name, had=False):
    """Forget a module imported for a one-off job (boot, replay, a rare
    request), unless it was loaded before (had), so the garbage collector
    can take its RAM back; the next use reads it from flash again."""
    import sys

    if had or sys.modules.pop(name, None) is None:
        return
    i = name.rfind(".")
    if i > 0:
        parent = sys.modules.get(name[:i])
        if parent is not None and hasattr(parent, name[i + 1:]):
            delattr(parent, name[i + 1:])


def room(need):
    """True if `need` bytes are free (after a collection if they are not
    yet): work is refused before it starts, with the protocol's busy
    answer, rather than dropped half done when the heap runs out."""
    import gc

    if gc.mem_free() >= need:
        return True
    gc.collect()
    return gc.mem_free() >= need


ROOM_WAITS = (20, 100)  # ms: a peak of other clients mid-answer usually passes by then


async def when_room(fn, *args):
    """fn(*args), once more after a collection and a pause (each of
    ROOM_WAITS) if the heap has no block for it; MemoryError if it still
    has none.  For what must be built once work is done (the answer to a
    payment the terminal approved): a short wait beats an unanswered
    register."""
    import asyncio
    import gc

    for wait in ROOM_WAITS:
        try:
            return fn(*args)
        except MemoryError:
            gc.collect()
            await asyncio.sleep_ms(wait)
    return fn(*args)
