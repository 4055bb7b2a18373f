"""The board layer: what differs between a PC (unix port), an ESP32 and a Pico W.

load() returns the module for this platform.  Each provides NAME,
DEFAULT_HOST, CONFIG_PATH, STATE_DIR, TLS_DIR, JOURNAL_FLUSH, setup(cfg),
`async network_up(cfg)`, address(), led(on) and stopped() (after Ctrl-C).
"""
import sys


def load():
    if sys.platform == "esp32":
        from firmware.board import esp32 as b
    elif sys.platform == "rp2":
        from firmware.board import rp2 as b
    else:
        from firmware.board import unix as b
    return b
