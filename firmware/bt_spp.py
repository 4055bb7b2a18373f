"""Concert over classic Bluetooth (SPP), through an HC-05 or HC-06 module on a UART.

The register pairs with the module and opens the serial port it gets (a
COM port, /dev/rfcomm0); the module passes the bytes to the board's UART,
where the Concert serial link (V2 and V3, firmware.concert_serial) runs as
over a wire.  At boot the module's name, PIN and UART speed are brought to
the listener config, written only where they differ from what the module
says (HC-05: AT+NAME? and friends) or, for an HC-06 that cannot be asked,
from what this terminal last wrote to it (a small file in the state dir),
so the module's flash is not rewritten at every boot.

An HC-05 takes AT commands only while its KEY (EN) pin is high: wire it to
a GPIO (`key`).  Its STATE pin (high while a register is connected), if
wired (`state`), is read and logged.  A module that does not answer AT is
one log line; the line is served anyway (a module set up by hand works).
Wiring: docs/BOARDS.md; settings: docs/CONFIG.md.
"""
import asyncio

from firmware import log, uart

HC06_BAUD = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)  # AT+BAUD1..8
_PARITY = {"none": "0", "odd": "1", "even": "2"}  # HC-05 AT+UART's third field
_TRY = (38400, 9600, 115200, 57600, 19200)  # the speeds a module is tried at after the configured one


def module_name(app, lc):
    """The name the module shows: `name`, else Understudy-<terminal_id>."""
    return lc["name"] or "Understudy-" + app.cfg["terminal_id"]


def _pin(board, n, out):
    if n < 0:
        return None
    f = getattr(board, "pin", None)  # the unix port's simulated pins
    if f is not None:
        return f(n, out)
    from machine import Pin

    return Pin(n, Pin.OUT if out else Pin.IN)


class SPPListener:
    kind = "bt-spp"

    def __init__(self, app, name):
        self.app = app
        self.name = name
        self.dev = None
        self.st = None
        self.task = None
        self.watch = None
        self.key = None
        self.hc06 = False

    async def start(self, lc):
        self.key = _pin(self.app.board, lc["key"], True)
        if self.key is not None:
            self.key.value(0)
        where = self._open(lc, lc["baud"])
        self.task = asyncio.create_task(self._run(lc))
        return ["%s %s %s %d %s" % (self.name, self.kind, where, lc["baud"], lc["module"])]

    def _open(self, lc, baud):
        """(Re)open the UART at this speed, 8 data bits (a module's UART has 8)."""
        self._close()
        c = dict(lc)
        c["baud"] = baud
        c["bits"] = 8
        dev, where = self.app.board.uart(self.name, c)
        self.dev = dev
        self.st = asyncio.StreamReader(dev)
        return where

    def _close(self):
        d = self.dev
        self.dev = self.st = None
        if d is not None:
            try:
                d.deinit() if hasattr(d, "deinit") else d.close()  # machine.UART / a tty
            except Exception:
                pass

    async def stop(self):
        for t in (self.task, self.watch):
            if t is not None:
                t.cancel()
        self.task = self.watch = None
        await asyncio.sleep_ms(0)
        self._close()
        if self.key is not None:
            self.key.value(0)

    async def _run(self, lc):
        try:
            await self._setup(lc)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a module that answers nonsense: say so, serve the line
            log.event(self.name, "module", "setup failed: %r; serving the line as it is" % e)
            if self.key is not None:
                self.key.value(0)
            self._open(lc, lc["baud"])
        st = _pin(self.app.board, lc["state"], False)
        if st is not None:
            self.watch = asyncio.create_task(self._state(st))
        log.event(self.name, "ready", "%s %s, Concert on the line at %d" % (
            lc["module"], module_name(self.app, lc), lc["baud"]))
        await uart.serve_line(self.app, self.name, self.st, lc)

    async def _state(self, pin):
        """The module's STATE pin: high while a register is connected."""
        was = None
        while True:
            v = pin.value()
            if v != was:
                if was is not None or v:
                    log.event(self.name, "connected" if v else "disconnected",
                              "(the module's state pin)")
                was = v
            await asyncio.sleep_ms(250)

    # -- AT commands

    async def _say(self, cmd, ms):
        """Send one AT command (str); the module's answer as text, "" if
        silent within ms.  An HC-05 ends its answer with OK or ERROR and a
        line end; an HC-06's ("OKsetname") ends when it falls silent."""
        st = self.st
        if st is None:
            return ""
        while await uart.read(st, 0):  # what came before is not the answer
            pass
        st.write(cmd.encode())
        await st.drain()
        got = b""
        while True:
            data = await uart.read(st, ms if not got else 150)
            if not data:
                break
            got += data
            if not self.hc06 and (got.endswith(b"OK\r\n") or got.endswith(b")\r\n")):
                break
        return got.decode() if got else ""

    async def _setup(self, lc):
        self.hc06 = lc["module"] == "hc06"
        eol = "" if self.hc06 else "\r\n"
        key = self.key
        if key is not None:
            key.value(1)
            await asyncio.sleep_ms(100)
        found = None
        tried = [lc["baud"]] + [b for b in _TRY if b != lc["baud"]]
        for baud in tried:
            self._open(lc, baud)
            if "OK" in await self._say("AT" + eol, lc["at_ms"]):
                found = baud
                break
        if found is None:
            self._open(lc, lc["baud"])
            if key is not None:
                key.value(0)
            why = "check its power, TX to the board's RX and RX to TX"
            if not self.hc06:
                pin = "GPIO %d" % lc["key"] if lc["key"] >= 0 else "none set"
                why += (", and that KEY/EN is wired to the key pin (%s): an HC-05 takes AT "
                        "commands only with KEY high") % pin
            log.event(self.name, "module", "no answer to AT at %s baud: %s; settings left as they are, "
                      "serving the line" % ("/".join([str(b) for b in tried]), why))
            return
        wrote = await (self._hc06(lc, found) if self.hc06 else self._hc05(lc))
        if self.hc06:
            if found != lc["baud"]:
                self._open(lc, lc["baud"])
        else:
            if wrote or found != lc["baud"]:  # a change, or full AT mode: start again as told
                await self._say("AT+RESET\r\n", lc["at_ms"])
            if key is not None:
                key.value(0)
            if wrote or found != lc["baud"]:
                await asyncio.sleep_ms(1000)  # the module restarts in data mode
            self._open(lc, lc["baud"])
        log.event(self.name, "module", "%s answered at %d baud; %s" % (
            lc["module"], found, "set " + ", ".join(wrote) if wrote else "nothing to change"))

    async def _hc05(self, lc):
        """Read name, PIN, UART; write what differs.  Returns what was written."""
        want = {"NAME": module_name(self.app, lc), "PSWD": lc["pin"],
                "UART": "%d,%d,%s" % (lc["baud"], lc["stop"] - 1, _PARITY[lc["parity"]])}
        wrote = []
        for what in ("NAME", "PSWD", "UART"):
            got = _value(await self._say("AT+%s?\r\n" % what, lc["at_ms"]))
            if got == want[what]:
                continue
            ans = await self._say("AT+%s=%s\r\n" % (what, want[what]), lc["at_ms"])
            if "OK" not in ans:
                raise OSError("AT+%s= answered %r" % (what, ans.strip()))
            wrote.append({"NAME": "name", "PSWD": "PIN", "UART": "UART"}[what])
        return wrote

    async def _hc06(self, lc, found):
        """An HC-06 cannot be asked: compare with what was last written to it."""
        path = self.app.board.STATE_DIR + "/" + self.name + ".at"
        want = [module_name(self.app, lc), lc["pin"], str(lc["baud"])]
        try:
            with open(path) as f:  # noqa: ASYNC230  (a few bytes of flash, at boot)
                had = f.read().split("\n")
        except OSError:
            had = []
        if found != lc["baud"]:  # the speed it answered at is the truth
            had = had[:2] + [str(found)]
        cmds = ("AT+NAME", "AT+PIN", "AT+BAUD")
        names = ("name", "PIN", "UART")
        wrote = []
        for i in range(3):
            if i < len(had) and had[i] == want[i]:
                continue
            arg = str(HC06_BAUD.index(lc["baud"]) + 1) if i == 2 else want[i]
            ans = await self._say(cmds[i] + arg, lc["at_ms"])
            if "OK" not in ans:
                raise OSError("%s answered %r" % (cmds[i], ans.strip()))
            wrote.append(names[i])
        if wrote:
            with open(path, "w") as f:  # noqa: ASYNC230
                f.write("\n".join(want))
        return wrote


def _value(ans):
    """`+NAME:HC-05`, `+PSWD:1234`, `+PIN:"1234"`, `+UART:9600,0,0` -> the value."""
    for ln in ans.split("\r\n"):
        if ln[:1] == "+" and ":" in ln:
            return ln.split(":", 1)[1].strip().strip('"')
    return None
