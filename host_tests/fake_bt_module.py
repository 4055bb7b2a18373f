"""A fake HC-05 / HC-06 Bluetooth serial module, on two ptys, for the host tests.

The firmware opens `uart_path` as the module's UART (listeners.concert-bt
.device); a register opens `rfcomm_path` as it would the COM port or
/dev/rfcomm0 that pairing with a real module gives.  Like the module:

* AT commands are taken when the module is in command mode: an HC-05 while
  its KEY pin is high (the file <pins>/gpio<key> the firmware drives), an
  HC-06 while no register is connected; at the speed the module's UART
  runs at (38400 when KEY was high at power-up, as an HC-05's full AT
  mode), read from the firmware's own line settings.  Answers follow the
  modules' firmware (HC-05 2.0: `+NAME:x`, `OK`, `ERROR:(0)`; HC-06 linvor
  1.8: `OKsetname`, `OK9600`);
* in data mode, bytes pass both ways while a register has the rfcomm end
  open (it is "connected"; the STATE pin file is 1), and only when the
  firmware's UART speed is the module's; otherwise they are lost;
* every setting written is counted in `writes` (the module's flash).
"""
import os
import pty
import select
import termios
import threading
import time
import tty

BAUDS = {getattr(termios, "B%d" % b): b for b in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)}
HC06_BAUD = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


class FakeModule:
    def __init__(self, pins, kind="hc05", key=None, state=None, name=None, pin="1234",
                 baud=9600, full_at=False):
        self.kind = kind
        self.pins = pins
        self.key = key
        self.state = state
        self.name = name or ("HC-05" if kind == "hc05" else "linvor")
        self.pin = pin
        self.baud = baud
        self.uart = "%d,0,0" % baud  # HC-05 AT+UART: baud, stop bits - 1, parity
        self.at_baud = 38400 if full_at else None  # KEY high at power-up: full AT mode
        self.writes = []  # (setting, value) written to the module's flash
        self.commands = []  # every AT command received
        self.talk = []  # the AT dialogue as golden lines: "> sent by the firmware", "< answered"
        self.resets = 0
        self.connected = False
        self.log = []
        self.fw_master, fw_slave = pty.openpty()
        self.reg_master, reg_slave = pty.openpty()
        for fd in (fw_slave, reg_slave):
            tty.setraw(fd)
        self.uart_path = os.ttyname(fw_slave)
        self.rfcomm_path = os.ttyname(reg_slave)
        self._probe = fw_slave  # kept open: the firmware's line settings are read on it
        os.close(reg_slave)
        self._buf = b""
        self._stop = False
        self._state(False)
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    # -- what the firmware drives and sees

    def _gpio(self, n):
        try:
            with open(os.path.join(self.pins, "gpio%d" % n)) as f:
                return f.read(1) == "1"
        except OSError:
            return False

    def _state(self, on):
        self.connected = on
        if self.state is not None:
            with open(os.path.join(self.pins, "gpio%d" % self.state), "w") as f:
                f.write("1" if on else "0")

    def line_baud(self):
        return BAUDS.get(termios.tcgetattr(self._probe)[4])

    def command_mode(self):
        if self.kind == "hc06":
            return not self.connected
        return self.key is not None and self._gpio(self.key)

    def module_baud(self):
        if self.kind == "hc05" and self.at_baud and self.command_mode():
            return self.at_baud
        return self.baud

    # -- the pump

    def _pump(self):
        p = select.poll()
        p.register(self.fw_master, select.POLLIN)
        reg_open = False
        last = time.monotonic()
        while not self._stop:
            if not reg_open:
                probe = select.poll()
                probe.register(self.reg_master, select.POLLIN)
                if not any(ev & select.POLLHUP for _, ev in probe.poll(0)):
                    reg_open = True
                    p.register(self.reg_master, select.POLLIN)
                    self._state(True)
            for fd, ev in p.poll(20):
                data = b""
                if ev & select.POLLIN:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        data = b""
                if fd == self.reg_master:
                    if data:
                        if self.line_baud() == self.module_baud() and not self.command_mode():
                            os.write(self.fw_master, data)
                    elif ev & select.POLLHUP:
                        reg_open = False
                        p.unregister(self.reg_master)
                        self._state(False)
                elif data:
                    last = time.monotonic()
                    self._from_firmware(data, reg_open)
            if self.kind == "hc06" and self._buf and time.monotonic() - last > 0.3:
                self._hc06(self._buf)  # linvor firmware ends a command by silence
                self._buf = b""

    def _from_firmware(self, data, reg_open):
        if self.line_baud() != self.module_baud():
            self.log.append(("garbled", data))  # at the wrong speed: noise, dropped
            return
        if not self.command_mode():
            if reg_open:
                os.write(self.reg_master, data)
            return
        self._buf += data
        if self.kind == "hc05":
            while b"\r\n" in self._buf:
                cmd, self._buf = self._buf.split(b"\r\n", 1)
                self._hc05(cmd.decode("latin-1"))

    def _answer(self, text):
        self.talk.append("< " + text.replace("\r\n", "<0d><0a>"))
        os.write(self.fw_master, text.encode())

    def _hc05(self, cmd):
        self.commands.append(cmd)
        self.talk.append("> " + cmd + "<0d><0a>")
        up = cmd.upper()
        if up == "AT":
            return self._answer("OK\r\n")
        if up == "AT+RESET":
            self._answer("OK\r\n")
            self.resets += 1
            if self.key is None or not self._gpio(self.key):
                self.at_baud = None
            threading.Timer(0.2, self._reboot).start()
            return
        for what, attr in (("NAME", "name"), ("PSWD", "pin"), ("UART", "uart")):
            if up == "AT+%s?" % what:
                return self._answer("+%s:%s\r\nOK\r\n" % (what, getattr(self, attr)))
            if up.startswith("AT+%s=" % what):
                value = cmd.split("=", 1)[1]
                setattr(self, attr, value)
                self.writes.append((what, value))
                return self._answer("OK\r\n")
        self._answer("ERROR:(0)\r\n")

    def _reboot(self):
        """After AT+RESET: full AT mode only if KEY is high as it starts."""
        self.baud = int(self.uart.split(",")[0])
        self.at_baud = 38400 if self.key is not None and self._gpio(self.key) else None

    def _hc06(self, raw):
        cmd = raw.decode("latin-1")
        self.commands.append(cmd)
        self.talk.append("> " + cmd)
        if cmd == "AT":
            return self._answer("OK")
        if cmd.startswith("AT+NAME"):
            self.name = cmd[7:]
            self.writes.append(("NAME", self.name))
            return self._answer("OKsetname")
        if cmd.startswith("AT+PIN"):
            self.pin = cmd[6:]
            self.writes.append(("PIN", self.pin))
            return self._answer("OKsetPIN")
        if cmd.startswith("AT+BAUD") and cmd[7:].isdigit():
            b = HC06_BAUD[int(cmd[7:]) - 1]
            self.writes.append(("BAUD", b))
            self._answer("OK%d" % b)
            self.baud = b
            return None
        return None  # linvor says nothing to what it does not know

    def close(self):
        self._stop = True
        self._thread.join(2)
        for fd in (self.fw_master, self._probe, self.reg_master):
            try:
                os.close(fd)
            except OSError:
                pass
