"""`understudy ecr concert --ble NAME`: the register's end of a Nordic UART
Service link (Bluetooth Low Energy), as Understudy's `concert-ble` listener
offers it, through bleak.

bleak (a well-kept, cross-platform BLE library: BlueZ on Linux, CoreBluetooth
on macOS, WinRT on Windows) is an optional extra, `pip install
'understudy[ble]'`: the core install needs no Bluetooth stack.  Its asyncio
loop runs in a thread; connect() returns an object with pyserial's read(1),
write, flush and close, which ecr.concert.Line drives as it drives a serial
line.  Writes go to RX in pieces of MTU - 3 bytes without response; TX
notifications are queued for read().

Not tested here (no BLE adapter on the build machine): the firmware side is
tested against a fake `bluetooth` module, with a central played by the test
over the same link code (host_tests/test_ble.py).
"""
import asyncio
import threading
import time

from understudy.ecr import NoAnswer, Usage, progress

NUS = "6e400001-b5a3-f393-e0a9-e50e24dcca9e"
RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"  # written by the register
TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"  # notified by the terminal


def connect(name, timeout):
    try:
        import bleak
    except ImportError:
        raise Usage("--ble needs the bleak library: pip install 'understudy[ble]' (or pip install bleak)")
    return Link(bleak, name, timeout)


class Link:
    def __init__(self, bleak, name, timeout):
        self.bleak = bleak
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = None
        try:
            self._call(self._open(name, timeout), timeout + 10)
        except NoAnswer:
            self.close()
            raise
        except Exception as e:  # bleak's BleakError, the OS's: no adapter, refused...
            self.close()
            raise NoAnswer("cannot connect to %s over BLE: %s" % (name, e))
        self.timeout = 0.05

    def _call(self, coro, timeout):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _open(self, name, timeout):
        dev = await self.bleak.BleakScanner.find_device_by_name(name, timeout=timeout)
        if dev is None:
            raise NoAnswer("no BLE device named %s advertised within %g s: is concert-ble "
                           "enabled, and the board in range?" % (name, timeout))
        self.client = self.bleak.BleakClient(dev, timeout=timeout)
        await self.client.connect()
        if self.client.services.get_service(NUS) is None:
            raise NoAnswer("%s has no Nordic UART Service" % name)
        await self.client.start_notify(TX, self._notified)
        progress("connected to %s over BLE, MTU %d" % (name, self.client.mtu_size))

    def _notified(self, _char, data):
        with self.cond:
            self.buf += data
            self.cond.notify_all()

    async def _write(self, data):
        n = max(20, self.client.mtu_size - 3)
        for i in range(0, len(data), n):
            await self.client.write_gatt_char(RX, data[i:i + n], response=False)

    def write(self, data):
        try:
            self._call(self._write(bytes(data)), 10)
        except Exception as e:
            raise NoAnswer("the BLE link failed while writing: %s" % e)
        return len(data)

    def flush(self):
        pass

    def read(self, n=1):
        end = time.monotonic() + self.timeout
        with self.cond:
            while len(self.buf) < n:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out

    def close(self):
        try:
            if self.client is not None:
                self._call(self.client.disconnect(), 10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(2)
