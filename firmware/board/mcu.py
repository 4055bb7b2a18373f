"""machine.UART for boards that have one (ESP32, RP2040): the listener
config's id, pins, baud, bits, parity and stop bits, with the board's
defaults where the config says -1."""
from machine import UART, Pin

_PARITY = {"none": None, "even": 0, "odd": 1}


def open(lc, uid, tx, rx):
    uid = uid if lc["id"] < 0 else lc["id"]
    tx = tx if lc["tx"] < 0 else lc["tx"]
    rx = rx if lc["rx"] < 0 else lc["rx"]
    u = UART(uid, baudrate=lc["baud"], bits=lc["bits"], parity=_PARITY[lc["parity"]],
             stop=lc["stop"], tx=Pin(tx), rx=Pin(rx), timeout=0, rxbuf=1024)
    return u, "uart%d:tx%d:rx%d" % (uid, tx, rx)
