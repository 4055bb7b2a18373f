"""Synqpay's link frames over a serial line (115200 8N1 by default).

The frames, keys, methods and cached responses are the Synqpay adapter's
(synqpay.serve hands it the frames it reads, as on TCP and TLS); this
module only makes a UART look like a connection.  A line never closes, so
"a new connection evicts the old one" becomes: bytes arriving on the line
make it the client (a TCP client is evicted), and a TCP client connecting
evicts the line's session; the line's next bytes start a new one.
"""
import asyncio

from firmware import log, synqpay, uart


class _Line:
    """The UART as the stream synqpay.serve reads: never at an end; the
    bytes that woke the listener come first."""

    def __init__(self, st, first):
        self.st = st
        self.first = first

    async def read(self, n):
        b = self.first
        if b:
            self.first = b""
            return b
        while not b:
            b = await uart.read(self.st, 1000, n)
        return b

    def write(self, b):
        self.st.write(b)

    async def drain(self):
        await self.st.drain()


async def serve(app, name, st, lc, first):
    """The line, from its first bytes on (uart.UARTListener calls this)."""
    while True:
        task = asyncio.create_task(synqpay.serve(app, name, _Line(st, first), "line"))
        try:
            await task
        except asyncio.CancelledError:  # evicted by a TCP client
            pass
        first = b""
        while not first:  # until the register speaks on the line again
            first = await uart.read(st, 1000)
        log.event(name, "line", "the register speaks again")
