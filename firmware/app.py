"""Boot and run: config, board, terminal core, one listener per personality.

Prints `listening <name> <kind> <where>` for each listener, then READY.
A personality's code is imported only when its first client connects, so
one nobody uses costs no RAM.  The config file is watched: listener changes restart only that
listener, everything else applies to the next transaction.
"""
import asyncio
import gc
import time

from firmware import VERSION, drop, log, signature
from firmware.board import load as load_board
from firmware.journal import Journal
from firmware.terminal import Terminal

# (listener name, kind): App.serve_of(name) imports the personality that
# serves it when its first client connects ("tcp", "tls", "ws": serve(app,
# name, stream, peer)) or its line's first bytes arrive ("uart", and the
# Bluetooth listeners, which hand their line to uart: serve(app, name,
# stream, lc, first)).
PERSONALITIES = (
    ("concert-ip", "tcp"),
    ("synqpay", "tcp"),
    ("synqpay-tls", "tls"),
    ("concert-serial", "uart"),
    ("synqpay-serial", "uart"),
    ("p3-tcp", "tcp"),
    ("p3-ws", "ws"),
    ("concert-bt", "bt-spp"),
    ("concert-ble", "ble"),
)
# the web page and control API: its settings are the `web` section
WEB = ("web", "http")


class App:
    def __init__(self, board, cfg):
        self.board = board
        self.cfg = cfg
        jc = cfg["journal"]
        path = board.STATE_DIR + "/journal.bin" if jc["enabled"] else None
        flush = board.JOURNAL_FLUSH or jc["fsync"]
        journal = Journal(path, jc["keep"], jc["recent"], jc["min_free"], flush, jc["max_batch"])
        log.event("journal", "replayed" if path else "off", journal.report or "RAM only, lost at reboot")
        self.term = Terminal(cfg, journal)
        self.term.interactive = cfg["web"]["mode"] == "interactive"
        self.listeners = {}  # name -> (listener, its config)
        self.trace = None  # firmware.trace.Trace once the web listener starts
        self.seen = None  # CRC of the config file last loaded
        self._applying = False  # one apply at a time: the file watcher, PUT /api/config
        self.web_seen = None  # ticks of the last web request while its code is loaded
        self.adapters = {}  # personality -> its adapter object, made at its first use

    def busy_of(self, name):
        """The constant answer a client of listener `name` hears when it is
        refused for want of heap, if its protocol has one: Concert's busy,
        which echoes no field (AE=01 AF=00).  P3 and Synqpay answer a
        request they would have to read; HTTP's 503 is tcp's own."""
        if name == "concert-ip":
            from firmware import adapter, concert

            return adapter(self, concert.Concert).refusal
        return None

    def serve_of(self, name):
        """The serve() of listener `name`, its personality imported now: at
        the first client (or the line's first bytes), so a personality
        nobody uses costs no RAM.  Collected first: code needs contiguous
        blocks, which a busy terminal's garbage may be holding."""
        gc.collect()
        if name == "concert-ip":
            from firmware import concert_ip

            return concert_ip.serve
        if name in ("concert-serial", "concert-bt", "concert-ble"):
            from firmware import concert_serial

            return concert_serial.serve
        if name in ("synqpay", "synqpay-tls"):
            from firmware import synqpay

            return synqpay.serve
        if name == "synqpay-serial":
            from firmware import synqpay_serial

            return synqpay_serial.serve
        if name == "p3-tcp":
            from firmware import p3_tcp

            return p3_tcp.serve
        if name == "p3-ws":
            from firmware import p3_ws

            return p3_ws.serve
        from firmware import web

        return web.serve

    def _lc(self, name, cfg=None):
        cfg = cfg or self.cfg
        return cfg["web"] if name == "web" else cfg["listeners"][name]

    async def start_listener(self, name, kind):
        lc = self._lc(name)
        if not lc["enabled"]:
            return
        try:
            lst = self._listener(name, kind)
            lines = await lst.start(lc)
        except Exception as e:  # port taken, no memory...: the others still start
            log.event(name, "failed", "cannot listen: %r" % e)
            return
        self.listeners[name] = (lst, lc)
        for line in lines:
            print("listening " + line)

    def _listener(self, name, kind):
        if kind == "uart":
            from firmware import uart

            return uart.UARTListener(self, name)
        if kind == "bt-spp":
            from firmware import bt_spp

            return bt_spp.SPPListener(self, name)
        if kind == "ble":
            from firmware import ble

            return ble.BLEListener(self, name)
        from firmware import tcp

        if kind == "http" and self.trace is None:  # the web face shows the trace
            from firmware import trace

            self.trace = trace.Trace(self)
        lst = (tcp.TLSListener if kind == "tls" else tcp.TCPListener)(self, name)
        lst.kind = kind
        return lst

    async def stop_listener(self, name):
        entry = self.listeners.pop(name, None)
        if entry:
            await entry[0].stop()
            log.event(name, "stopped")

    async def apply(self, cfg):
        """Take a new config live; restart only the listeners that changed."""
        while self._applying:  # (asyncio.Lock would cost its module's RAM)
            await asyncio.sleep_ms(20)
        self._applying = True
        try:
            old = self.cfg
            self.cfg = cfg
            self.term.cfg = cfg
            log.frames = cfg["log"]["frames"]
            if cfg["web"]["mode"] != old["web"]["mode"]:
                self.term.interactive = cfg["web"]["mode"] == "interactive"
            for name, kind in PERSONALITIES + (WEB,):
                if self._lc(name, cfg) != self._lc(name, old):
                    await self.stop_listener(name)
                    await self.start_listener(name, kind)
        finally:
            self._applying = False


def load_config(path, running=None):
    """Read and check the config file, then drop the config module: its tables
    are only needed now, and a board's RAM is better spent elsewhere."""
    from firmware import config

    cfg, problems = config.load(path, running)
    drop("firmware.config")
    for p in problems:
        log.event("config", "problem", p)
    return cfg


async def _tend(app, path):
    """Every few seconds (config_watch_s, else 2): reload the config when
    its file changed (app.seen: the CRC of the one loaded; PUT /api/config
    writes the file and sets it; config_watch_s 0: never), and rest the
    web face nobody uses.  A tick that finds no room (MemoryError) is
    tried again at the next one: it must not end the terminal."""
    while True:
        await asyncio.sleep(app.cfg["config_watch_s"] or 2)
        try:
            _rest_web(app)
            if not app.cfg["config_watch_s"]:
                continue
            now = signature(path)
            if now == app.seen:
                continue
            cfg = load_config(path, app.cfg)
            app.seen = now
            log.event("config", "reloaded", path)
            if cfg is not app.cfg:
                await app.apply(cfg)
        except MemoryError:
            drop("firmware.config")
            gc.collect()
            log.event("config", "deferred", "no room to read %s now" % path)


def _rest_web(app):
    """Nobody has used the page or the control API for web.idle_s: their
    code (imported again by the next request) and the trace's lines go,
    about 20 KB of a 32-bit board's heap (docs/MEMORY.md)."""
    idle = app.cfg["web"]["idle_s"]
    entry = app.listeners.get("web")
    if not idle or entry is None or app.web_seen is None:
        return
    lst = entry[0]
    if lst.clients or time.ticks_diff(time.ticks_ms(), app.web_seen) < idle * 1000:
        return
    app.web_seen = None
    lst.handler = None
    from firmware import web  # (loaded: it answered the last request)

    app.adapters.pop(web.Web, None)  # its state goes with its code
    del web
    app.trace.rest()
    for name in ("firmware.web", "wire.http", "firmware.receipt"):  # what it brought (those who
        drop(name)  # imported one too keep theirs)
    gc.collect()
    log.event("web", "rested", "nobody for %d s: page code and trace let go" % idle)


async def _main():
    board = load_board()
    gc.collect()
    print("understudy %s on %s, heap %d bytes" % (VERSION, board.NAME, gc.mem_free() + gc.mem_alloc()))
    seen = signature(board.CONFIG_PATH)  # now: a change after READY must be seen
    # which file: PUT /api/config writes there too, and the next boot reads it
    if seen is None:
        log.event("config", "built-in defaults", "(no file %s)" % board.CONFIG_PATH)
    else:
        log.event("config", "read", board.CONFIG_PATH)
    cfg = load_config(board.CONFIG_PATH)
    log.frames = cfg["log"]["frames"]
    board.setup(cfg)
    global _app
    app = _app = App(board, cfg)
    app.seen = seen
    await board.network_up(cfg)
    for name, kind in PERSONALITIES + (WEB,):
        await app.start_listener(name, kind)
    if cfg["log"]["heap"]:
        gc.collect()
        log.event("app", "heap", "alloc=%d" % gc.mem_alloc())
    print("READY")
    board.led(True)
    await _tend(app, board.CONFIG_PATH)


_app = None


def _orphan(loop, context):
    """A task failed after whoever awaited it had gone (a time-out that won
    the race, a connection already closed): one line, not a traceback.  No
    room for it: none (raised here, it would end asyncio.run: the terminal)."""
    try:
        log.event("app", "orphan", repr(context.get("exception")))
    except MemoryError:
        pass


def main():
    asyncio.get_event_loop().set_exception_handler(_orphan)
    try:
        asyncio.run(_main())
    except KeyboardInterrupt:
        if _app is not None:
            _app.term.journal.close()  # littlefs commits what it caches
            if _app.cfg["log"]["heap"]:  # fragmentation: the largest free block
                import micropython

                gc.collect()
                micropython.mem_info()
            _app.board.stopped()
        print("stopped")
