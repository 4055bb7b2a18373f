"""Boot the whole firmware as an ESP32 or a Pico W on the unix port, with
machine and network faked (host_tests/test_board.py).

    micropython board_check.py esp32|rp2 ATTEMPTS|never STATE_DIR CONFIG
ATTEMPTS: Wi-Fi connects on that connect() call; never: it does not;
absent: the board has no `network` module (a plain Pico; FAKE_NO_NETWORK set).
"""
import sys

import machine

import firmware.board

name, attempts, state, config = sys.argv[1:5]
if attempts != "absent":
    import network

    network.attempts = None if attempts == "never" else int(attempts)
# which board UART is which listener's (firmware/board/esp32.py, rp2.py)
machine.lines = {2: "concert-serial", 1: "synqpay-serial"} if name == "esp32" else \
    {0: "concert-serial", 1: "synqpay-serial"}
b = __import__("firmware.board." + name, None, None, ["NAME"])
b.STATE_DIR = state
b.CONFIG_PATH = config
firmware.board.load = lambda: b
_setup = b.setup


def setup(cfg):  # and the launcher's stop (its stdin closed), as on a PC
    from firmware.board import unix

    _setup(cfg)
    unix.setup(cfg)


b.setup = setup

from firmware import app  # noqa: E402

app.main()
print("pins", machine.log[:3])  # after Ctrl-C: what the status LED was told
