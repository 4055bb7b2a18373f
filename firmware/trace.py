"""The live trace behind the web page: the newest log lines in a small ring.

Made when the web listener starts; it records from the first HTTP request
on (`on`), so a terminal nobody watches keeps no lines (and its heap does
not carry their varying sizes).  It keeps the lines log.py already made
(cut to MAX characters), the last frame each way per personality, and
wakes whoever waits for news (the page's event stream).  Bounded:
`web.trace` lines, whatever the traffic.

The lines are copied into one bytearray of `web.trace` slots of SLOT bytes,
made at the first request, rather than kept as string objects: a ring of
strings that each live for the next 24 lines of traffic pins ~200-byte
blocks all over a small heap, which then has 30 KB free and no 600-byte hole
(docs/MEMORY.md, "32-bit frozen build").  The newest frame each way per
personality is kept the same way (two slots per source).
"""
import asyncio

from firmware import log

MAX = 200  # bytes kept of one line (UTF-8, cut on a character boundary)
SLOT = MAX + 3  # and "..." when cut


def _put(buf, o, line):
    """Copy line into the slot at o; its length in bytes."""
    enc = line.encode()
    n = len(enc)
    if n > MAX:
        n = MAX
        while n and enc[n] & 0xC0 == 0x80:  # not in the middle of a character
            n -= 1
    buf[o:o + n] = memoryview(enc)[:n]
    if n < len(enc):
        buf[o + n:o + n + 3] = b"..."
        n += 3
    return n


class Trace:
    def __init__(self, app):
        self.app = app
        self.size = app.cfg["web"]["trace"]
        self.buf = bytearray(0)  # size slots of SLOT bytes: line n is slot n % size; made by record()
        self.lens = bytearray(self.size)  # bytes used in each slot
        self.seq = 0  # number of the newest line
        self.last = {}  # source -> [bytearray(2 slots): rx, tx; [rx length, tx length]]
        self.on = False  # recording: set by the first HTTP request
        self.news = 0  # counts changes: lines and transaction states
        self._ev = None  # set on news; made only while someone waits
        app.term.watchers.append(self.on_txn)

    def record(self):
        """Start recording (the first HTTP request): MemoryError if no room."""
        if not self.on:
            self.buf = bytearray(self.size * SLOT)
            log.watch(self.on_log)  # (until then log.frame renders no frame for us)
            self.on = True

    def on_log(self, source, what, line):
        if not self.on:
            return
        self.seq += 1
        i = self.seq % self.size
        self.lens[i] = _put(self.buf, i * SLOT, line)
        if what == "rx" or what == "tx":
            pair = self.last.get(source)
            if pair is None:
                try:
                    pair = self.last[source] = [bytearray(2 * SLOT), [0, 0]]
                except MemoryError:  # (a log line must never fail) not kept this time
                    pair = None
            if pair is not None:
                tx = what == "tx"
                pair[1][tx] = _put(pair[0], tx * SLOT, line)
        self.kick()

    def line(self, n):
        """Line number n (still in the ring)."""
        i = n % self.size
        return str(memoryview(self.buf)[i * SLOT:i * SLOT + self.lens[i]], "utf-8")

    def newest(self, source):
        """[newest rx line, newest tx line] of a source (None: none yet)."""
        pair = self.last.get(source)
        if pair is None:
            return [None, None]
        mv = memoryview(pair[0])
        return [str(mv[k * SLOT:k * SLOT + pair[1][k]], "utf-8") if pair[1][k] else None
                for k in (0, 1)]

    def on_txn(self, t):
        self.kick()

    def kick(self):
        self.news += 1
        ev = self._ev
        if ev is not None:
            self._ev = None
            ev.set()

    def since(self, cursor):
        """[(seq, line)] newer than cursor, oldest first (what the ring still has)."""
        first = max(cursor + 1, self.seq - self.size + 1, 1)
        return [(n, self.line(n)) for n in range(first, self.seq + 1)]

    async def wait(self, ms):
        """Until the next line or state change, or ms."""
        if self._ev is None:
            self._ev = asyncio.Event()
        try:
            await asyncio.wait_for_ms(self._ev.wait(), ms)
        except asyncio.TimeoutError:
            pass
