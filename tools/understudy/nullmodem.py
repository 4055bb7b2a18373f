"""A null-modem cable between two ptys, in pure Python (no socat needed).

The firmware opens `firmware_path`, a register opens `register_path` (with
pyserial, as it would /dev/ttyUSB0); a thread copies bytes both ways.  Like
a real line:

* bytes sent while nobody has the register's end open are lost, not kept
  for whoever opens it next (the firmware's end is held open here, so a
  firmware restart loses nothing and sees no hang-up);
* with `baud`, bytes arrive no sooner than they would on a wire at that
  speed (10 bits a character: start, 7 or 8 data, parity or not, stop),
  one after the other in each direction.  A pty alone delivers at once.
"""
import heapq
import os
import pty
import select
import threading
import time
import tty

_HUP = select.POLLHUP | select.POLLERR


class NullModem:
    def __init__(self, baud=None, probe_s=0.01):
        """probe_s: how often to look whether a register has opened its end
        (its first bytes wait up to that long; a fleet of terminals uses 0.1)."""
        self.char_s = 10.0 / baud if baud else 0.0
        self.probe_s = probe_s
        self.fw_master, self.fw_slave = pty.openpty()
        self.reg_master, reg_slave = pty.openpty()
        for fd in (self.fw_slave, reg_slave):
            tty.setraw(fd)  # no echo, no CR/LF mangling, before anyone opens it
        self.firmware_path = os.ttyname(self.fw_slave)
        self.register_path = os.ttyname(reg_slave)
        os.close(reg_slave)  # nobody has the register's end open yet
        self.lost = 0  # bytes sent to a closed register end
        self._stop = False
        self._thread = threading.Thread(target=self._pump, name="nullmodem", daemon=True)
        self._thread.start()

    def _pump(self):
        fw, reg = self.fw_master, self.reg_master
        peer = {fw: reg, reg: fw}
        free_at = {fw: 0.0, reg: 0.0}  # when the wire towards each end is free
        queue = []  # (delivery time, seq, fd, data)
        seq = 0
        p = select.poll()
        p.register(fw, select.POLLIN)
        reg_open = False
        while not self._stop:
            now = time.monotonic()
            wait = self.probe_s if not reg_open else 0.1
            if queue:
                wait = min(wait, max(0.0, queue[0][0] - now))
                if wait < 0.003:  # poll() rounds to whole ms: sleep precisely instead
                    time.sleep(wait)
                    wait = 0.0
            if not reg_open:  # has a register opened its end?
                probe = select.poll()
                probe.register(reg, select.POLLIN)
                if not any(ev & select.POLLHUP for _, ev in probe.poll(0)):
                    reg_open = True
                    p.register(reg, select.POLLIN)
            for fd, ev in p.poll(int(wait * 1000)):
                data = b""
                if ev & select.POLLIN:
                    try:
                        data = os.read(fd, 4096)
                    except OSError:
                        data = b""
                if data:
                    dst = peer[fd]
                    t = time.monotonic()
                    if self.char_s:
                        t = max(t, free_at[dst]) + len(data) * self.char_s
                        free_at[dst] = t
                    seq += 1
                    heapq.heappush(queue, (t, seq, dst, data))
                elif ev & _HUP and fd == reg:
                    reg_open = False
                    p.unregister(reg)
            now = time.monotonic()
            while queue and queue[0][0] <= now:
                _, _, dst, data = heapq.heappop(queue)
                if dst == reg and not reg_open:
                    self.lost += len(data)
                    continue
                try:
                    os.write(dst, data)
                except OSError:
                    self.lost += len(data)

    def close(self):
        self._stop = True
        self._thread.join(2)
        for fd in (self.fw_master, self.fw_slave, self.reg_master):
            try:
                os.close(fd)
            except OSError:
                pass
