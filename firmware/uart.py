"""A serial-line listener: a board UART, or a tty/pty on the unix port, as
one asyncio stream, that can be stopped and restarted on its own.

The board opens the device (`board.uart(name, lc)` -> (device, where)):
machine.UART on ESP32/RP2 with id, pins, baud, bits, parity and stop bits
from the listener config; on a PC a tty path, or the pty the launcher made
for this listener.  The personality is imported when the first bytes
arrive (App.serve_of: a line nobody talks on costs no RAM for its
protocol); its `async serve(app, name, stream, lc, first)` then owns the
line until the listener stops, reading with read() below.
"""
import asyncio
import gc
import sys

from firmware import log


async def read(st, ms, n=128):
    """Up to n bytes, b"" if none came within ms.  A line that reports data
    but yields none (a tty whose other end is gone) is slowed down here
    instead of spinning the loop."""
    try:
        data = await asyncio.wait_for_ms(st.read(n), ms)
    except asyncio.TimeoutError:
        return b""
    except OSError:
        data = None
    if not data:
        await asyncio.sleep_ms(min(ms, 200))
        return b""
    return data


class UARTListener:
    kind = "serial"

    def __init__(self, app, name):
        self.app = app
        self.name = name
        self.dev = None
        self.task = None

    async def start(self, lc):
        dev, where = self.app.board.uart(self.name, lc)
        self.dev = dev
        self.task = asyncio.create_task(serve_line(self.app, self.name, asyncio.StreamReader(dev), lc))
        return ["%s %s %s %d" % (self.name, self.kind, where, lc["baud"])]

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        await asyncio.sleep_ms(0)
        d = self.dev
        if d is not None:
            self.dev = None
            try:
                d.deinit() if hasattr(d, "deinit") else d.close()  # machine.UART / a tty
            except Exception:
                pass


async def serve_line(app, name, st, lc):
    """Wait for a line's first bytes, then hand the line to its
    personality's serve() (app.serve_of) until it returns; every serial-like listener (UART, Bluetooth
    module, BLE) runs its stream through here."""
    while True:
        try:
            first = b""
            while not first:
                first = await read(st, 1000)
            fn = app.serve_of(name)
            await fn(app, name, st, lc, first)
            return
        except asyncio.CancelledError:
            raise
        except MemoryError as e:  # a heap too small at this peak: as TCP drops one client,
            fn = None  # the line drops this session and serves the next
            gc.collect()
            log.event(name, "out-of-memory", repr(e), "session dropped")
        except Exception as e:  # a bug: say so loudly; the line stays dead until a restart
            log.event(name, "error", repr(e))
            sys.print_exception(e)
            return
