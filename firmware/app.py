"""Boot and run: config, board, terminal core, one listener per personality.

Prints `listening <name> <kind> <where>` for each listener, then READY.
Personalities are imported only when enabled, so a disabled one costs no
RAM.  The config file is watched: listener changes restart only that
listener, everything else applies to the next transaction.
"""
import asyncio
import gc
import sys
from binascii import crc32

from firmware import VERSION, log
from firmware.board import load as load_board
from firmware.terminal import Terminal

# name -> module with make(app, name) returning a listener
PERSONALITIES = (
    ("concert-ip", "firmware.concert_ip"),
    ("p3-tcp", "firmware.p3_tcp"),
    ("p3-ws", "firmware.p3_ws"),
)


class App:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        self.term = Terminal(cfg)
        self.listeners = {}  # name -> (listener, its config)

    async def start_listener(self, name, module):
        lc = self.cfg["listeners"][name]
        if not lc["enabled"]:
            return
        mod = __import__(module, None, None, ["make"])
        lst = mod.make(self, name)
        try:
            lines = await lst.start(lc)
        except OSError as e:
            log.event(name, "failed", "cannot listen: %r" % e)
            return
        self.listeners[name] = (lst, lc)
        for line in lines:
            print("listening " + line)

    async def stop_listener(self, name):
        entry = self.listeners.pop(name, None)
        if entry:
            await entry[0].stop()
            log.event(name, "stopped")

    async def apply(self, cfg):
        """Take a new config live; restart only the listeners that changed."""
        old = self.cfg
        self.cfg = cfg
        self.term.cfg = cfg
        log.frames = cfg["log"]["frames"]
        for name, module in PERSONALITIES:
            if cfg["listeners"][name] != old["listeners"][name]:
                await self.stop_listener(name)
                await self.start_listener(name, module)


def _signature(path):
    """CRC of the file: mtime is too coarse (1 s) and littlefs may lack it."""
    try:
        with open(path, "rb") as f:
            return crc32(f.read())
    except OSError:
        return None


def load_config(path):
    """Read and check the config file, then drop the config module: its tables
    are only needed now, and a board's RAM is better spent elsewhere."""
    from firmware import config

    cfg, problems = config.load(path)
    del sys.modules["firmware.config"]
    del sys.modules["firmware"].config
    for p in problems:
        log.event("config", "problem", p)
    return cfg


async def _watch_config(app, path):
    seen = _signature(path)
    while app.cfg["config_watch_s"]:
        await asyncio.sleep(app.cfg["config_watch_s"])
        now = _signature(path)
        if now == seen:
            continue
        seen = now
        log.event("config", "reloaded", path)
        await app.apply(load_config(path))


async def _main():
    board = load_board()
    gc.collect()
    print("understudy %s on %s, heap %d bytes" % (VERSION, board.NAME, gc.mem_free() + gc.mem_alloc()))
    cfg = load_config(board.CONFIG_PATH)
    log.frames = cfg["log"]["frames"]
    board.setup(cfg)
    app = App(board, cfg)
    await board.network_up(cfg)
    for name, module in PERSONALITIES:
        await app.start_listener(name, module)
    if cfg["log"]["heap"]:
        gc.collect()
        log.event("app", "heap", "alloc=%d" % gc.mem_alloc())
    print("READY")
    board.led(True)
    await _watch_config(app, board.CONFIG_PATH)
    while True:
        await asyncio.sleep(3600)


def main():
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        print("stopped")
