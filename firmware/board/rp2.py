"""Raspberry Pi Pico W, or a plain Pico: pin "LED" (on the Wi-Fi chip on a
Pico W, GP25 on a Pico).  A plain Pico has no `network` module: the terminal
then runs its serial personalities only, and says so once at boot."""
from firmware.board import mcu
from firmware.board.mcu import CONFIG_PATH, DEFAULT_HOST, JOURNAL_FLUSH, STATE_DIR, TLS_DIR  # noqa: F401

NAME = "rp2"


def setup(cfg):
    mcu.setup(cfg, "LED")


led = mcu.led
stopped = mcu.stopped
power_cut = mcu.power_cut


def _wlan():
    """firmware.board.wlan, or None on a board without Wi-Fi (imported here:
    it imports `network`, which a plain Pico's MicroPython lacks)."""
    try:
        from firmware.board import wlan
    except ImportError:
        return None
    return wlan


async def network_up(cfg):
    w = _wlan()
    if w is None:
        from firmware import log

        log.event("wifi", "none", "this board has no network module; serial personalities only")
        return None
    return await w.up(cfg, led)


def address():
    w = _wlan()
    return w.address() if w is not None else "0.0.0.0"


def uart(name, lc):
    """The serial line of listener `name`: Concert on UART0, GP0 (TX) and
    GP1 (RX); Synqpay on UART1, GP4 (TX) and GP5 (RX); the REPL is on USB.
    A Bluetooth module (concert-bt) on UART1, GP8 (TX) and GP9 (RX): the RP2040
    has two UARTs, so it and synqpay-serial take turns."""
    if name == "synqpay-serial":
        return mcu.uart(lc, 1, 4, 5)
    if name == "concert-bt":
        return mcu.uart(lc, 1, 8, 9)
    return mcu.uart(lc, 0, 0, 1)
