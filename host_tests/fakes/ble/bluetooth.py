"""Fake `bluetooth` for the unix port, driven from a host test over TCP.

It has the calls firmware/ble.py makes (MicroPython's BLE API) and plays a
central's part as the host test says, one text line per event on the TCP
connection to 127.0.0.1:$UNDERSTUDY_FAKE_BLE, made when the radio is
switched on:

    host -> firmware     connect C | mtu C N | write C HEX | disconnect C
    firmware -> host     up | adv HEX HEX | notify C HEX | kick C | down | error TEXT

A write goes into the characteristic's buffer as the stack's would (append
mode: added, up to the buffer's size; else replaced), then the IRQ handler
hears _IRQ_GATTS_WRITE.  A notification longer than the connection's MTU
- 3 is reported as an error (a real stack would cut it).
"""
import asyncio
import os
import socket

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010


class UUID:
    def __init__(self, value):
        self.s = value

    def __eq__(self, other):
        return isinstance(other, UUID) and other.s == self.s


_ble = None


def BLE():
    global _ble
    if _ble is None:
        _ble = _BLE()
    return _ble


class _BLE:
    def __init__(self):
        self.on = False
        self.handler = None
        self.values = {}  # handle -> bytes
        self.append = {}  # handle -> (size, append)
        self.mtu = {}  # conn -> mtu
        self.sock = None
        self.task = None
        self.names = {}

    def _say(self, line):
        if self.sock is not None:
            self.sock.write((line + "\n").encode())

    def active(self, on=None):
        if on is None:
            return self.on
        if on and not self.on:
            s = socket.socket()
            s.connect(socket.getaddrinfo("127.0.0.1", int(os.getenv("UNDERSTUDY_FAKE_BLE")))[0][-1])
            s.setblocking(False)
            self.sock = s
            self.task = asyncio.create_task(self._pump(s))
            self._say("up")
        elif not on and self.on:
            self._say("down")
            self.task.cancel()
            self.sock.close()
            self.sock = None
            self.values = {}
            self.append = {}
        self.on = bool(on)
        return self.on

    def config(self, *names, **kw):
        self.names.update(kw)
        if names:
            return self.names.get(names[0])

    def irq(self, handler):
        self.handler = handler

    def gatts_register_services(self, services):
        out = []
        h = 0
        for _uuid, chars in services:
            hs = []
            for _c in chars:
                h += 2
                self.values[h] = b""
                hs.append(h)
            out.append(tuple(hs))
        return tuple(out)

    def gatts_set_buffer(self, handle, size, append=False):
        self.append[handle] = (size, append)

    def gatts_read(self, handle):
        v = self.values.get(handle, b"")
        if self.append.get(handle, (0, False))[1]:
            self.values[handle] = b""  # append mode: a read clears it
        return v

    def gatts_write(self, handle, data):
        self.values[handle] = bytes(data)

    def gatts_notify(self, conn, handle, data=None):
        data = self.values.get(handle, b"") if data is None else bytes(data)
        if conn not in self.mtu:
            raise OSError(107)  # not connected
        if len(data) > self.mtu[conn] - 3:
            self._say("error notify of %d bytes, MTU %d" % (len(data), self.mtu[conn]))
        self._say("notify %d %s" % (conn, data.hex()))

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        if interval_us is None:
            self._say("adv-off")
        else:
            self._say("adv %s %s" % (bytes(adv_data or b"").hex(), bytes(resp_data or b"").hex()))

    def gap_disconnect(self, conn):
        if conn in self.mtu:
            self._say("kick %d" % conn)
            self._gone(conn)
        return True

    def _gone(self, conn):
        del self.mtu[conn]
        if self.handler:
            self.handler(2, (conn, 0, b"\x00" * 6))

    async def _pump(self, s):
        st = asyncio.StreamReader(s)
        while True:
            line = await st.readline()
            if not line:
                return
            parts = line.decode().split()
            what, conn = parts[0], int(parts[1])
            rest = parts[2] if len(parts) > 2 else ""
            h = self.handler
            if what == "connect":
                self.mtu[conn] = 23
                if h:
                    h(1, (conn, 0, b"\x00" * 6))
            elif what == "mtu":
                self.mtu[conn] = int(rest)
                if h:
                    h(21, (conn, self.mtu[conn]))
            elif what == "write":
                data = bytes.fromhex(rest)
                for handle, (size, append) in self.append.items():
                    v = (self.values.get(handle, b"") + data) if append else data
                    self.values[handle] = v[:size]
                    if h:
                        h(3, (conn, handle))
            elif what == "disconnect":
                if conn in self.mtu:
                    self._gone(conn)
