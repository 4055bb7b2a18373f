"""What the microcontroller boards (ESP32, RP2040) share: the status LED on
a pin and machine.UART.  The board module names its defaults; the config's
board.led and a listener's id, tx and rx override them where not -1."""
from machine import UART, Pin

# the flash's layout and the network's defaults, the same on both
DEFAULT_HOST = "0.0.0.0"
JOURNAL_FLUSH = True  # littlefs commits a record on flush
CONFIG_PATH = "/config.json"
STATE_DIR = "/state"
TLS_DIR = "/tls"  # cert.der, key.der
_PARITY = {"none": None, "even": 0, "odd": 1}
_led = None  # (Pin, active low)


def setup(cfg, default_led):
    global _led
    b = cfg["board"]
    try:
        _led = (Pin(default_led if b["led"] < 0 else b["led"], Pin.OUT), b["led_active_low"])
    except Exception:  # a pin this board lacks: no LED rather than no terminal
        _led = None


def led(on):
    if _led is not None:
        _led[0].value(1 if bool(on) != _led[1] else 0)


def stopped():
    pass


def uart(lc, uid, tx, rx):
    uid = uid if lc["id"] < 0 else lc["id"]
    tx = tx if lc["tx"] < 0 else lc["tx"]
    rx = rx if lc["rx"] < 0 else lc["rx"]
    u = UART(uid, baudrate=lc["baud"], bits=lc["bits"], parity=_PARITY[lc["parity"]],
             stop=lc["stop"], tx=Pin(tx), rx=Pin(rx), timeout=0, rxbuf=1024)
    return u, "uart%d:tx%d:rx%d" % (uid, tx, rx)


def power_cut(ms):
    """The power_cut outcome: off for ms, then a real reset (the journal
    replays at boot as after any power loss)."""
    import machine
    import time

    time.sleep_ms(ms)  # nothing runs while the power is off
    machine.reset()
