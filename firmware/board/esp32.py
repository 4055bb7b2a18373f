"""ESP32 dev boards (DevKitC and friends): LED on GPIO2 unless board.led says otherwise."""
from firmware.board import mcu, wlan
from firmware.board.mcu import CONFIG_PATH, DEFAULT_HOST, JOURNAL_FLUSH, STATE_DIR, TLS_DIR  # noqa: F401

NAME = "esp32"


def setup(cfg):
    mcu.setup(cfg, 2)


led = mcu.led
stopped = mcu.stopped
power_cut = mcu.power_cut


async def network_up(cfg):
    return await wlan.up(cfg, led)


address = wlan.address


def uart(name, lc):
    """The serial line of listener `name`.  UART0 is the REPL: Concert on
    UART2, GPIO17 (TX) and GPIO16 (RX); Synqpay on UART1, GPIO4 (TX) and
    GPIO5 (RX) (UART1's own pins are the flash's): free on DevKitC boards.
    A Bluetooth module (concert-bt) on UART1 too, GPIO25 (TX) and GPIO26 (RX):
    the ESP32 has no fourth UART, so it and synqpay-serial take turns."""
    if name == "synqpay-serial":
        return mcu.uart(lc, 1, 4, 5)
    if name == "concert-bt":
        return mcu.uart(lc, 1, 25, 26)
    return mcu.uart(lc, 2, 17, 16)
