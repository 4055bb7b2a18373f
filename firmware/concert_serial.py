"""Concert over a serial line: the link driver, one terminal per line.

The link layer (ENQ/ACK/NAK/STX/ETX/EOT, LRC, retries, time-outs, turn
taking) is lib/wire/concert_link; this module moves its bytes over the line
and hands each whole message to its protocol: a V3 message (it starts with
CZ) to the Concert adapter's request(), as over TCP, a V2 one (it starts
with the register number, two digits) to concert_v2_requests; `protocol` in
the listener config can force one.  Decisions are in docs/CONCERT.md.
"""
import asyncio
import sys
import time

from firmware import adapter, log, spawn, uart
from firmware.concert import Concert
from wire import concert_link

PEER = "line"
# ms: the longest read.  A time-out armed by the answer task (its ENQ) is seen
# by the reading loop at its next turn, so it may run up to this much late.
_TICK = 500


async def serve(app, name, st, lc, first):
    """The line, from its first bytes on (uart.UARTListener calls this)."""
    await Line(app, name, st, lc).run(first)


class Line:
    def __init__(self, app, name, st, lc):
        self.app = app
        self.name = name
        self.st = st
        self.lc = lc
        self.concert = adapter(app, Concert)
        self.link = concert_link.Link(lc["retries"], lc["byte_ms"], lc["reply_ms"],
                                      app.cfg["concert"]["max_request"])
        self.writing = False  # one writer at a time: the reader and the answer
        self.t = None  # the transaction whose answer is on the line

    async def run(self, first=b""):
        link = self.link
        gen = -1
        deadline = None
        if first:
            log.frame(self.name, "rx", PEER, first)
            await self._after(link.receive(first))
        while True:
            now = time.ticks_ms()
            if link.gen != gen:
                gen = link.gen
                deadline = None if link.wait is None else time.ticks_add(now, link.wait)
            wait = _TICK
            if deadline is not None:
                wait = time.ticks_diff(deadline, now)
                if wait <= 0:
                    deadline = None
                    await self._after(link.timeout())
                    continue
                wait = min(wait, _TICK)
            data = await uart.read(self.st, wait)
            if data:
                log.frame(self.name, "rx", PEER, data)
                await self._after(link.receive(data))

    async def _flush(self):
        while self.writing:  # (in this frame: asyncio.Lock's enter and exit are
            await asyncio.sleep_ms(5)  # coroutines, blocks a short heap may lack)
        self.writing = True
        try:
            out = self.link.output()
            if out:
                self.st.write(out)
                await self.st.drain()
                log.frame(self.name, "tx", PEER, out)
        finally:
            self.writing = False

    async def _after(self, events):
        await self._flush()
        for kind, what in events:
            if kind == "request":
                spawn(self._serve(what))
            elif kind == "sent" or kind == "failed":
                t = self.t
                self.t = None
                if kind == "failed":
                    log.event(self.name, "undelivered", what)
                if t is not None:
                    self.app.term.delivered(t, kind == "sent")
            else:  # nak, abandoned
                log.event(self.name, kind, what)

    async def _serve(self, msg):
        concert = self.concert
        p = self.lc["protocol"]
        v3 = p == "v3" or (p == "auto" and msg[:2] == b"CZ")
        t = None
        try:
            if v3:
                ans, t = await concert.request(msg, self.name)
            else:
                from firmware import concert_v2_requests

                ans, t = await concert_v2_requests.request(concert, msg, self.name, self.lc["immediate"])
        except Exception as e:  # a bug: refuse rather than hold the line for ever
            log.event(self.name, "error", repr(e))
            sys.print_exception(e)
            ans = _refusal(concert, msg, v3)
        if ans is None:
            self.link.no_answer()
            self.app.term.withheld(t, self.name)
            return
        self.t = t
        try:
            await self._after(self.link.send(ans))
        except Exception as e:  # the line was closed under us (listener restart)
            log.event(self.name, "closed", repr(e))
            if t is not None:
                self.app.term.delivered(t, False)


def _refusal(concert, msg, v3):
    """The refusal of a message whose handling failed; None (the line is
    freed, unanswered) if there is no room even for that."""
    try:
        if v3:
            return concert.busy({})
        from wire import concert_v2 as v2

        return v2.refusal(msg)
    except Exception:
        return None
