"""Fake `machine` for running board modules on the unix port: records pin
writes and how UARTs are opened; a UART reads and writes the pty the launcher
made for the serial listener (UNDERSTUDY_SERIAL), so a register on the other
end of the null modem talks to the board's UART."""
import io
import os

log = []
lines = {}  # UART id -> serial listener name, set by the board check: its pty is used


class Pin:
    IN = 0
    OUT = 1

    def __init__(self, id, mode=-1):
        self.id = id
        self.v = 0
        log.append(("pin", id, mode))

    def value(self, v=None):
        if v is not None:
            self.v = v
            log.append(("set", self.id, v))
        return self.v


class UART(io.IOBase):
    def __init__(self, id, **kw):
        self.id = id
        self.kw = kw
        log.append(("uart", id, kw))
        self.f = None
        spec = os.getenv("UNDERSTUDY_SERIAL")
        path = None
        for item in (spec or "").split():  # "name=firmware side,register side ..."
            name, _, sides = item.partition("=")
            if name == lines.get(id):
                path = sides.partition(",")[0]
        if not path:  # nothing wired: a line that never says anything
            self.f = open("/dev/null", "r+b", buffering=0)
        else:
            import termios

            self.f = open(path, "r+b", buffering=0)
            fd = self.f.fileno()
            termios.setraw(fd)
            a = termios.tcgetattr(fd)
            a[6][6] = a[6][5] = 0  # VMIN, VTIME: reads never block, as a UART's
            termios.tcsetattr(fd, termios.TCSANOW, a)

    def read(self, n=-1):
        return self.f.read(n) if self.f else None

    def readinto(self, buf):
        return self.f.readinto(buf) if self.f else None

    def write(self, b):
        return self.f.write(b) if self.f else len(b)

    def ioctl(self, req, arg):
        if req == 10 and self.f:  # MP_STREAM_GET_FILENO: let poll() watch the pty
            return self.f.fileno()
        return -1

    def deinit(self):
        if self.f:
            self.f.close()


def reset():
    """A hard reset: the process ends; host_tests/fake_board.py powers the board up again."""
    raise SystemExit(0)
