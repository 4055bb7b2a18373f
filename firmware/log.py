"""One line per event on stdout (the REPL on a board), machine-greppable.

    <source> <event> [details...]

e.g. `concert-ip rx 127.0.0.1 CZ0040300...`.  `frames` turns the per-frame
rx/tx lines on or off; events are always printed.  Observers (the web face's
live trace) get every line as (source, event, text).
"""

frames = True
# who gets every line (watch/unwatch change it); a caller that would build
# a costly frame line reads it with frames: `if log.frames or log.observers`
observers = []  # type: list


def watch(fn):
    observers.append(fn)


def unwatch(fn):
    if fn in observers:
        observers.remove(fn)


# A handler of MemoryError acts first (closes, answers busy) and logs after:
# the call itself (its details tuple, any formatting done for it) can find
# no room, and log's guard covers only what happens inside it.  Pass values
# as details rather than formatting them, so log's guard formats them.
def event(source, what, *details):
    """Never raises: a MemoryError here (the heap is short, which is often
    why there is something to log) must not kill the task that logs it.
    Then the line goes out short, without its details."""
    try:
        line = source + " " + what
        if details:
            line += " " + " ".join([str(d) for d in details])
        print(line)
        for fn in observers:
            fn(source, what, line)
    except MemoryError:
        _short(source, what)


def _short(source, what):
    try:
        print(source, what, "(details dropped: out of memory)")
    except MemoryError:
        pass


def frame(source, direction, peer, data, size=0):
    """A protocol frame, rx (from the register) or tx (to it); never raises.
    size: the frame's length when data is only its start."""
    if not frames and not observers:
        return
    try:
        size = "...(%d bytes)" % size if size > len(data) else ""
        if not frames:  # only the live trace wants it, and keeps at most 200 characters
            data = data[:200]
        if not isinstance(data, str):
            data = printable(data)
        line = "%s %s %s %s%s" % (source, direction, peer, data, size)
        if frames:
            print(line)
        for fn in observers:
            fn(source, direction, line)
    except MemoryError:
        _short(source, direction)


def printable(data):
    """ASCII as is, anything else (and "<") as <hh>: readable for text and
    binary.  Built run by run: a frame is mostly one text run between a few
    control bytes, so this makes few strings."""
    out = ""
    i, n = 0, len(data)
    while i < n:
        j = i
        while j < n and 32 <= data[j] < 127 and data[j] != 60:
            j += 1
        if j > i:
            out += bytes(data[i:j]).decode()
            i = j
        else:
            out += "<%02x>" % data[i]
            i += 1
    return out
