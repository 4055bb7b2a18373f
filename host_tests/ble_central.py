"""The host's side of the fake `bluetooth` module (fakes/bluetooth.py): a BLE
central that finds the terminal's advertisement, connects, exchanges an MTU,
writes the Nordic UART Service's RX in pieces of MTU - 3 bytes and collects
the TX notifications, as a register's BLE stack would.

`port()` gives what the Concert serial clients read and write (pyserial's
read/write/timeout), so the same register code runs over it as over a line.
"""
import socket
import threading
import time

NUS = bytes(reversed(bytes.fromhex("6E400001B5A3F393E0A9E50E24DCCA9E")))


class Central:
    def __init__(self):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port_no = self.srv.getsockname()[1]
        self.sock = None
        self.events = []  # every line the firmware's radio said
        self.rx = bytearray()  # notified bytes not read yet
        self.notifies = []  # (conn, length) of every notification
        self.errors = []
        self.kicked = []
        self.conn = None
        self.mtu = 23
        self.cond = threading.Condition()

    def accept(self, timeout=15):
        self.srv.settimeout(timeout)
        self.sock, _ = self.srv.accept()
        threading.Thread(target=self._pump, args=(self.sock,), daemon=True).start()
        threading.Thread(target=self._again, daemon=True).start()

    def _again(self):
        """A firmware started again (the launcher redraws a port taken at boot,
        a power cut) makes its radio again: the central talks to the new one."""
        while True:
            try:
                self.srv.settimeout(None)
                s, _ = self.srv.accept()
            except OSError:  # closed
                return
            with self.cond:
                self.sock = s
            threading.Thread(target=self._pump, args=(s,), daemon=True).start()

    def _pump(self, sock):
        buf = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._event(line.decode())

    def _event(self, line):
        parts = line.split()
        with self.cond:
            self.events.append(line)
            if parts[0] == "notify":
                conn, data = int(parts[1]), bytes.fromhex(parts[2] if len(parts) > 2 else "")
                self.notifies.append((conn, len(data)))
                if conn == self.conn:
                    self.rx += data
            elif parts[0] == "error":
                self.errors.append(line)
            elif parts[0] == "kick":
                self.kicked.append(int(parts[1]))
                if int(parts[1]) == self.conn:
                    self.conn = None
            self.cond.notify_all()

    def _send(self, line):
        self.sock.sendall((line + "\n").encode())

    def wait(self, pred, timeout=10):
        end = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return True

    def advertisement(self, timeout=10):
        """(advertising data, scan response) of the latest advertisement."""
        assert self.wait(lambda: any(e.startswith("adv ") for e in self.events), timeout), self.events
        last = [e for e in self.events if e.startswith("adv ")][-1].split()
        return bytes.fromhex(last[1]), bytes.fromhex(last[2])

    def advertised(self):
        """Is the terminal advertising now (its latest advertising call)?"""
        with self.cond:
            for e in reversed(self.events):
                if e.startswith("adv") or e.startswith("kick"):
                    return e.startswith("adv ")
            return False

    def connect(self, conn=1, mtu=23):
        self.conn, self.mtu = conn, mtu
        self.rx = bytearray()
        self._send("connect %d" % conn)
        if mtu != 23:
            self._send("mtu %d %d" % (conn, mtu))

    def disconnect(self):
        if self.conn is not None:
            self._send("disconnect %d" % self.conn)
            self.conn = None

    def write(self, data, conn=None):
        """One write of the register's stack per MTU - 3 bytes."""
        conn = self.conn if conn is None else conn
        n = self.mtu - 3
        for i in range(0, len(data), n):
            self._send("write %d %s" % (conn, bytes(data[i:i + n]).hex()))

    def read(self, n=1, timeout=1.0):
        """Up to n notified bytes, after at most timeout seconds (pyserial's read)."""
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.rx) < n:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            out = bytes(self.rx[:n])
            del self.rx[:n]
            return out

    def port(self, timeout=8.0):
        return Port(self, timeout)

    def close(self):
        self.srv.close()
        if self.sock is not None:
            self.sock.close()


class Port:
    """pyserial's face of a connected central: read(n) with .timeout, write, flush."""

    def __init__(self, central, timeout):
        self.c = central
        self.timeout = timeout

    def read(self, n=1):
        return self.c.read(n, self.timeout)

    def write(self, data):
        self.c.write(data)
        return len(data)

    def flush(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
