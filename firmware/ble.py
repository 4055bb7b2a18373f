"""Concert over Bluetooth Low Energy: a Nordic UART Service on the board's own radio.

The board advertises the service under the terminal's name (`name`, else
Understudy-<terminal_id>).  One central (the register) at a time: a second
one is disconnected at once.  The register writes the Concert serial link's
bytes to the RX characteristic, in pieces of at most MTU - 3 bytes; they
are appended to one buffer (gatts_set_buffer append mode) and read as a
stream, so a frame split across writes is whole again.  The terminal's
bytes go back as notifications of TX, MTU - 3 bytes each.  The link
(firmware.concert_serial, V2 and V3) runs unchanged over that stream.

A register that disconnects mid-transaction loses nothing: the transaction
runs to its end, its answer finds nobody and is recorded undelivered, and
the register, connected again, asks for it with CD=T.

MicroPython's `bluetooth` module is used directly rather than aioble: the
few calls below cost a fraction of aioble's RAM (docs/MEMORY.md).
"""
import asyncio
import sys

from micropython import const

from firmware import log, uart

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_FLAG_WRITE_NO_RESPONSE = const(0x0004)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
NUS = "6E400001-B5A3-F393-E0A9-E50E24DCCA9E"
_RX = "6E400002-B5A3-F393-E0A9-E50E24DCCA9E"  # the register writes
_TX = "6E400003-B5A3-F393-E0A9-E50E24DCCA9E"  # the terminal notifies
_NOTIFY_TRIES = 50  # 20 ms apart: a stack whose queue stays full for 1 s drops the rest
# A board's stack calls _irq from the scheduler, between any two bytecodes of
# the loop: only a ThreadSafeFlag may be set there.  The unix port polls a
# ThreadSafeFlag beside its sockets on a 1 ms sweep that crashed the process
# (SIGSEGV) in 2 of 6 runs of test_ble.py; its only `bluetooth` is the test
# fake, which calls _irq from a task, so a plain Event is safe and exact there.
_Flag = asyncio.Event if sys.platform == "linux" else asyncio.ThreadSafeFlag


def advert(name):
    """(advertising data, scan response): flags and the service's 128-bit
    UUID; the complete local name in the scan response (31 bytes each)."""
    from binascii import unhexlify

    u = bytes(reversed(unhexlify(NUS.replace("-", ""))))  # little-endian on the air
    adv = b"\x02\x01\x06" + bytes((len(u) + 1, 0x07)) + u
    n = name.encode()
    return adv, bytes((len(n) + 1, 0x09)) + n


class BLEListener:
    kind = "ble"

    def __init__(self, app, name):
        self.app = app
        self.name = name
        self.ble = None
        self.conn = None  # the connected central's handle
        self.mtu = 23
        self.flag = _Flag()
        self.pend = b""  # received, not read yet
        self.out = bytearray()  # to notify
        self.task = None
        self.adv = (b"", b"")  # advertising data, scan response

    async def start(self, lc):
        try:
            import bluetooth
        except ImportError:
            raise OSError("this board's MicroPython has no bluetooth module")
        name = lc["name"] or "Understudy-" + self.app.cfg["terminal_id"]
        ble = self.ble = bluetooth.BLE()
        ble.active(True)
        ble.config(gap_name=name)
        ble.irq(self._irq)
        rx = (bluetooth.UUID(_RX), _FLAG_WRITE | _FLAG_WRITE_NO_RESPONSE)
        tx = (bluetooth.UUID(_TX), _FLAG_NOTIFY)
        ((self.tx, self.rx),) = ble.gatts_register_services(((bluetooth.UUID(NUS), (tx, rx)),))
        ble.gatts_set_buffer(self.rx, lc["rx_buffer"], True)
        self.adv = advert(name)
        self.adv_us = lc["adv_ms"] * 1000
        self._advertise()
        self.task = asyncio.create_task(uart.serve_line(self.app, self.name, self, lc))
        return ["%s %s %s nus" % (self.name, self.kind, name)]

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        await asyncio.sleep_ms(0)
        ble = self.ble
        if ble is not None:
            self.ble = None
            try:
                if self.conn is not None:
                    ble.gap_disconnect(self.conn)
                ble.gap_advertise(None)
                ble.irq(None)
                ble.active(False)
            except Exception:
                pass
        self.conn = None

    def _advertise(self):
        ble = self.ble
        if ble is not None:
            ble.gap_advertise(self.adv_us, adv_data=self.adv[0], resp_data=self.adv[1])

    def _irq(self, event, data):
        """The stack's events (scheduled, not a hard IRQ): keep it short."""
        ble = self.ble
        if ble is None:
            return
        if event == _IRQ_GATTS_WRITE:
            if data[0] == self.conn and data[1] == self.rx:
                self.flag.set()
        elif event == _IRQ_CENTRAL_CONNECT:
            if self.conn is not None:  # one register at a time
                ble.gap_disconnect(data[0])
                log.event(self.name, "refused", "a second central while one is connected")
                return
            self.conn, self.mtu, self.pend = data[0], 23, b""
            ble.gatts_read(self.rx)  # nothing from before
            log.event(self.name, "connected", "central %d" % data[0])
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] != self.conn:
                return
            self.conn = None
            self.pend = b""
            self.out = bytearray()
            log.event(self.name, "disconnected", "central %d; advertising again" % data[0])
            self._advertise()
            self.flag.set()
        elif event == _IRQ_MTU_EXCHANGED:
            if data[0] == self.conn:
                self.mtu = data[1]
                log.event(self.name, "mtu", data[1])

    # -- the stream concert_serial reads and writes (as a UART's)

    async def read(self, n):
        while True:
            if not self.pend and self.conn is not None and self.ble is not None:
                self.pend = self.ble.gatts_read(self.rx)
            if self.pend:
                data, self.pend = self.pend[:n], self.pend[n:]
                return data
            await self.flag.wait()
            self.flag.clear()  # an Event stays set (a ThreadSafeFlag clears itself)

    def write(self, data):
        if self.conn is not None:  # with nobody connected the bytes are lost, as on a line
            self.out += data

    async def drain(self):
        i = 0
        while i < len(self.out):
            conn = self.conn
            if conn is None or self.ble is None:
                break
            n = self.mtu - 3
            for _ in range(_NOTIFY_TRIES):
                try:
                    self.ble.gatts_notify(conn, self.tx, self.out[i:i + n])
                    break
                except OSError:  # the stack's queue is full: let it send
                    await asyncio.sleep_ms(20)
            else:
                log.event(self.name, "notify", "the stack took nothing for 1 s; %d bytes dropped"
                          % (len(self.out) - i))
                break
            i += n
        self.out = bytearray()
