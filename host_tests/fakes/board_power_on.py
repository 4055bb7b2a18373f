"""What a board does at power-on, for host_tests/fake_board.py: boot.py and
main.py from the flash (the current directory), the firmware booting as an
ESP32 with machine and network faked (FAKE_WIFI: the connect() call that
succeeds, or "never"); then the REPL (micropython -i)."""
import os


def _exists(f):
    try:
        os.stat(f)
        return True
    except OSError:
        return False


def _importable(name):  # from the flash, or frozen into the interpreter
    try:
        __import__(name)
        return True
    except ImportError:
        return False


if _exists("boot.py"):
    exec(open("boot.py").read())
if _exists("main.py") and _importable("firmware"):
    import network

    import firmware.board
    from firmware.board import esp32

    w = os.getenv("FAKE_WIFI") or "1"
    network.attempts = None if w == "never" else int(w)
    esp32.CONFIG_PATH = "config.json"  # the flash's root is the current directory
    esp32.STATE_DIR = "state"
    esp32.TLS_DIR = "tls"
    firmware.board.load = lambda: esp32
    exec(open("main.py").read())
