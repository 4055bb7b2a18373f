"""Concert over a serial line: V2 (protocols E and E+) and V3, one terminal.

The link layer (ENQ/ACK/NAK/STX/ETX/EOT, LRC, retries, time-outs, turn
taking) is lib/wire/concert_link; this module moves its bytes over the line
and turns each request into a terminal operation.  Each frame tells its
protocol: a V3 message starts with CZ, a V2 one with the register number
(two digits); `protocol` in the listener config can force one.  V3 requests
go to the Concert adapter's request(), as over TCP.  Decisions are in docs/CONCERT.md.
"""
import asyncio
import sys
import time

from firmware import adapter, log, uart, when_room
from firmware.concert import OPS, Concert
from firmware.terminal import Busy
from wire import concert_link
from wire import concert_v2 as v2

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
        self.lock = asyncio.Lock()  # one writer at a time: the reader and the answer
        self.t = None  # the transaction whose answer is on the line

    async def run(self, first=b""):
        link = self.link
        gen = -1
        deadline = None
        if first:
            if log.frames or log._observers:
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
                if log.frames or log._observers:
                    log.frame(self.name, "rx", PEER, data)
                await self._after(link.receive(data))

    async def _flush(self):
        async with self.lock:
            out = self.link.output()
            if out:
                self.st.write(out)
                await self.st.drain()
                if log.frames or log._observers:
                    log.frame(self.name, "tx", PEER, out)

    async def _after(self, events):
        await self._flush()
        for kind, what in events:
            if kind == "request":
                asyncio.create_task(self._serve(what))
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
        p = self.lc["protocol"]
        v3 = p == "v3" or (p == "auto" and msg[:2] == b"CZ")
        t = None
        try:
            if v3:
                ans, t = await self.concert.request(msg, self.name)
            else:
                ans, t = await self._v2(msg)
        except Exception as e:  # a bug: refuse rather than hold the line for ever
            log.event(self.name, "error", repr(e))
            sys.print_exception(e)
            ans = self.concert.busy({}) if v3 else v2.encode(
                v2.salvage(msg), v2.REFUSED)
        if ans is None:
            self.link.drop()
            if t is not None and not t.delivered:
                self.app.term.delivered(t, False)
                log.event(self.name, "drop", "answer withheld (lost outcome)")
            return
        self.t = t
        try:
            await self._after(self.link.send(ans))
        except Exception as e:  # the line was closed under us (listener restart)
            log.event(self.name, "closed", repr(e))
            if t is not None:
                self.app.term.delivered(t, False)

    async def _v2(self, msg):
        try:
            req = v2.decode(msg)
        except v2.V2Error as e:
            log.event(self.name, "malformed", str(e))
            return v2.encode(v2.salvage(msg), v2.REFUSED), None
        term = self.app.term
        op = OPS.get(req["type"])
        amount = int(req["amount"])
        cur = int(req["currency"])
        orig = None
        if op == "void":
            target = term.find_void_target(amount, cur)
            if target is None:
                log.event(self.name, "void", "no matching transaction")
                op = None
            else:
                orig = target.no
        elif op is None:
            log.event(self.name, "unknown-type", req["type"])
        if op is None:
            return v2.encode(req, v2.REFUSED), None
        try:
            t = term.start(op, amount, cur, self.name, orig=orig, data={"pos": req["pos"]})
        except Busy:
            return v2.encode(req, v2.REFUSED), None
        t.hold = ("whole",)  # V2 answers no amount: no partial approval (unhappy.py)
        if req["delai"] == "A011" and self.lc["immediate"]:  # answer now, result on the terminal
            asyncio.create_task(term.run(t))
            return v2.encode(req, v2.TAKEN), None
        await term.run(t)
        if t.drop:
            return None, t
        if t.result != "approved":
            return await when_room(v2.encode, req, v2.REFUSED), t
        return await when_room(v2.encode, req, v2.ACCEPTED, "" if req["mode"] == "C" else t.pan or ""), t
