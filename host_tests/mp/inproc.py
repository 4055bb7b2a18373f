"""An app for in-process tests under MicroPython: the real core (Terminal,
a journal in RAM), a config merged as the firmware merges it, no listeners
and no board but a state directory.  A personality's adapter is made on it
with firmware.adapter(app, cls), and fed requests without a socket."""
import asyncio
import os

from firmware import config
from firmware.terminal import Terminal


class Board:
    STATE_DIR = os.getenv("TMPDIR") or "/tmp"
    TLS_DIR = STATE_DIR
    NAME = "in-process"


class App:
    def __init__(self, **over):
        cfg, problems = config.merge(over)
        assert not problems, problems
        self.cfg = cfg
        self.board = Board()
        self.term = Terminal(cfg)
        self.adapters = {}
        self.listeners = {}
        self.trace = None
        self.seen = None
        self.web_seen = None


def run(coro, ms=5000):
    """The result of coroutine `coro`, run on a fresh loop within ms."""
    return asyncio.run(asyncio.wait_for_ms(coro, ms))


class Arrived:
    """A non-blocking socket with `data` arrived and unread: readinto()
    takes it at once, then None (nothing more now)."""

    def __init__(self, data):
        self.data = data

    def readinto(self, buf):
        n = min(len(buf), len(self.data))
        buf[:n] = self.data[:n]
        self.data = self.data[n:]
        return n or None
