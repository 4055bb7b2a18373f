"""The live trace behind the web page: the newest log lines in a small ring.

Made when the web listener starts; it records from the first HTTP request
on (`record()`), so a terminal nobody watches keeps no lines (and its heap does
not carry their varying sizes).  It keeps the lines log.py already made
(cut to MAX characters), the last frame each way per personality, and
wakes whoever waits for news (the page's event stream).  Bounded:
`web.trace` lines, whatever the traffic.
"""
import asyncio

from firmware import log

MAX = 200  # characters kept of one line


class Trace:
    def __init__(self, app):
        self.app = app
        self.size = app.cfg["web"]["trace"]
        self.ring = [None] * self.size  # type: list  # line number n is ring[n % size]
        self.seq = 0  # number of the newest line
        self.last = {}  # source -> [newest rx line, newest tx line]
        self.on = False  # recording: set by the first HTTP request (record())
        self.news = 0  # counts changes: lines and transaction states
        self._ev = None  # set on news; made only while someone waits
        app.term.watchers.append(self.on_txn)

    def record(self):
        """Record from now on (the first HTTP request); until then log.frame
        renders no frame for the trace."""
        if not self.on:
            log.watch(self.on_log)
            self.on = True

    def rest(self):
        """Nobody watches any more: stop recording, let the lines go."""
        if self.on:
            log.unwatch(self.on_log)
            self.on = False
        for i in range(self.size):
            self.ring[i] = None
        self.last = {}

    def on_log(self, source, what, line):
        if not self.on:
            return
        if len(line) > MAX:
            line = line[:MAX] + "..."
        self.seq += 1
        self.ring[self.seq % self.size] = line
        if what == "rx" or what == "tx":
            pair = self.last.get(source)
            if pair is None:
                pair = self.last[source] = [None, None]
            pair[what == "tx"] = line
        self.kick()

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
        return [(n, self.ring[n % self.size]) for n in range(first, self.seq + 1)]

    async def wait(self, ms):
        """Until the next line or state change, or ms."""
        if self._ev is None:
            self._ev = asyncio.Event()
        try:
            await asyncio.wait_for_ms(self._ev.wait(), ms)
        except asyncio.TimeoutError:
            pass
