"""A board on a serial port, made of the MicroPython unix port: what
`understudy deploy` and mpremote talk to in host_tests.

The host opens `port` (a pty, as it would /dev/ttyUSB0).  Behind it runs
`micropython` in a directory that plays the board's flash, on a pty of its
own, and a thread carries the bytes (pure Python, no socat).  Like a board:

* power-on runs boot.py and main.py from the flash (the firmware, booting as
  an ESP32 with machine and network faked: Wi-Fi comes up or not, as
  `wifi_attempts` says), then the REPL; mpremote's raw REPL works;
* Ctrl-C from the host interrupts what runs (the unix port does not read its
  stdin while it runs code, so the bridge turns it into SIGINT until the
  REPL prompt shows);
* machine.reset() ends the process and the board powers up again.
"""
import os
import pty
import select
import signal
import subprocess
import threading
import tty

from understudy.launch import micropython

FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakes")


class FakeBoard:
    def __init__(self, flash, wifi_attempts="1", heap="256K"):
        self.flash = str(flash)
        self.heap = heap
        os.makedirs(self.flash, exist_ok=True)
        self.wifi = wifi_attempts
        self.host_master, host_slave = pty.openpty()
        tty.setraw(host_slave)
        self.port = os.ttyname(host_slave)
        self._keep = host_slave  # held open: the port exists while the board does
        self.boots = 0
        self.output = bytearray()  # everything the board printed
        self.proc = None
        self._stop = False
        self._power_on()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _power_on(self):
        master, slave = pty.openpty()
        tty.setraw(slave)
        env = dict(os.environ, MICROPYPATH=":".join([FAKES, self.flash, self.flash + "/lib", ".frozen"]),
                   FAKE_WIFI=str(self.wifi))
        self.proc = subprocess.Popen([micropython(), "-X", "heapsize=" + self.heap, "-i",
                                      os.path.join(FAKES, "board_power_on.py")],
                                     cwd=self.flash, env=env, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.child = master
        self.running = True  # until the REPL prompt: Ctrl-C becomes SIGINT
        self.boots += 1

    def _pump(self):
        while not self._stop:
            r, _, _ = select.select([self.host_master, self.child], [], [], 0.05)
            if self.host_master in r:
                data = os.read(self.host_master, 4096)
                if self.running and b"\x03" in data and self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGINT)
                try:
                    os.write(self.child, data)
                except OSError:
                    pass
            if self.child in r:
                try:
                    data = os.read(self.child, 4096)
                except OSError:  # the process ended: the pty is gone
                    data = b""
                if data:
                    self.output += data
                    if b">>> " in data or b"raw REPL" in data:
                        self.running = False
                    os.write(self.host_master, data)
            if self.proc.poll() is not None and not self._stop:  # machine.reset()
                try:
                    os.close(self.child)
                except OSError:
                    pass
                self._power_on()

    def text(self):
        return self.output.decode("utf-8", "replace")

    def close(self):
        self._stop = True
        self._thread.join(2)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.child, self.host_master, self._keep):
            try:
                os.close(fd)
            except OSError:
                pass
