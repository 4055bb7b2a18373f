"""Understudy: a payment terminal stand-in for MicroPython."""

VERSION = "0.1.0"
# settings never shown: not in logs, config problem lines, the control API or the page
SECRET = ("web.token", "wifi.password", "synqpay.api_key", "synqpay.otp", "p3.merchant_secret",
          "card.pan", "listeners.concert-bt.pin")


PIN_TRIES = 3  # wrong PINs before the card is blocked (terminal, cardholder)

# What happens to a transaction, chosen by the amount's last two digits (the
# `outcomes` table).  Adapters map results to their protocol's codes.
OUTCOMES = (
    "approve",  # approved at once
    "decline",  # refused by the issuer
    "cancel",  # cardholder presses the red button
    "no_card",  # no card presented before timeouts.card_s
    "pin_blocked",  # wrong PIN three times
    "slow",  # approved after delays.slow_auth_ms
    "currency",  # currency not supported
    "lost",  # approved, then the connection drops before the answer
    "forbidden",  # card not allowed (blacklisted, expired)
    "host_error",  # no answer from the bank: not completed
    "signature",  # approved after the cardholder signs (P3 asks the POS)
)
# the rarer outcomes (wrong_pin, fallback, removed, sca, duplicate, paper_out,
# partial, power_cut, some with an argument: "wrong_pin:2") are named in
# firmware/unhappy.py, which runs them: their names are not interned at boot
# unless the config uses one (docs/MEMORY.md, "Names").  Here, not in
# config.py: the core and the control API check outcome names without
# importing the config module (13 KB of a 32-bit heap from .mpy)


def outcome(v):
    """True for an outcome the core knows: one of OUTCOMES, or a rarer one
    with its argument if any (unhappy.ok)."""
    if v in OUTCOMES:
        return True
    if type(v) is not str:
        return False
    had = loaded("firmware.unhappy")
    from firmware import unhappy

    ok = unhappy.ok(v)
    drop("firmware.unhappy", had)
    return ok


def loaded(name, collect=False):
    """True if module `name` is imported already.  Code used rarely is
    imported inside the function that needs it (the firmware's one way of
    loading on demand); a one-off job notes loaded() first and gives the
    module back with drop(name, had) when done.  collect: if it is not
    loaded, collect the garbage first, since the import that follows needs
    contiguous blocks the garbage may be holding."""
    import sys

    if name in sys.modules:
        return True
    if collect:
        import gc

        gc.collect()
    return False


def adapter(app, cls):
    """The app's one instance of a personality's adapter class, made at its
    first use: the personality's state lives there (tests make a fresh app,
    host_tests/mp/inproc.py), not in module globals."""
    a = app.adapters.get(cls)
    if a is None:
        a = app.adapters[cls] = cls(app)
    return a


def drop(name, had=False):
    """Forget a module imported for a one-off job (boot, replay, a rare
    request), unless it was loaded before (had: loaded(name) before the
    import), so the garbage collector can take its RAM back; the next use
    reads it from flash again."""
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


def spawn(co):
    """asyncio.create_task(co) for work that ends (a transaction, an
    answer): the task runs co inside a small coroutine that lets go of it.
    asyncio's queue can point at a task for seconds after it ended (its
    pairing heap keeps a stale pointer, docs/MEMORY.md), and a task whose
    own coroutine is co keeps all that co held meanwhile."""
    import asyncio

    return asyncio.create_task(_ended(co))


async def _ended(co):
    try:
        await co  # (done, its slot holds what co returned, not co)
    finally:
        co = None


async def drained(s, ms):
    """Wait until stream s has sent what it was given, at most ms
    (asyncio.TimeoutError).  asyncio's stream writes straight to the socket
    when it holds nothing, so mostly there is nothing to wait for and no
    time-out is armed (wait_for's task and coroutines: heap a busy terminal
    may not have), only a yield."""
    import asyncio

    if getattr(s, "out_buf", True):  # (a stream without one: always wait)
        await asyncio.wait_for_ms(s.drain(), ms)
    else:
        await asyncio.sleep_ms(0)


ROOM_WAITS = (20, 100)  # ms: a peak of other clients mid-answer usually passes by then


async def when_room(fn, *args, ms=120):
    """fn(*args), tried again after a collection and a pause (ROOM_WAITS,
    then every 100 ms) while the heap has no block for it, until ms of
    pauses are spent; then MemoryError.  For what must be built once work
    is done: a short wait beats an unanswered register; the answer owed
    for a payment run waits up to timeouts.request_ms (the caller's ms).
    Its own coroutine is a block too: a retry that must not fail for want
    of one loops in the caller's frame (asyncio.sleep_ms allocates
    nothing), as P3's final answer and the rest of a message do."""
    import asyncio
    import gc

    w = ROOM_WAITS[0]
    while True:
        try:
            return fn(*args)
        except MemoryError:
            ms -= w
            if ms < 0:
                raise
            gc.collect()
            await asyncio.sleep_ms(w)
            w = ROOM_WAITS[1]


def signature(path):
    """CRC of a file (None if unreadable): how the config watcher and PUT
    /api/config know the file changed (mtime is too coarse, 1 s, and
    littlefs may lack it).  Read in small pieces: the watcher runs every
    few seconds, whatever the heap, and a config file is a few KB."""
    from binascii import crc32

    buf = bytearray(128)
    mv = memoryview(buf)
    crc = 0
    try:
        with open(path, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    return crc
                crc = crc32(mv[:n], crc)
    except OSError:
        return None
