"""The unix port on a PC: loopback networking, files in the state dir.

Set by the host launcher (tools/run.py) through the environment:
UNDERSTUDY_CONFIG (config file), UNDERSTUDY_STATE (state dir: journal and
other "flash" files), UNDERSTUDY_FLASH ("<image>:<KB>": keep the state in a
littlefs image instead, like a board; see unix_flash.py), UNDERSTUDY_TLS
(where cert.der and key.der are), UNDERSTUDY_CLOCK (freeze the clock at these
Unix seconds, for reproducible receipts in tests).
"""
import os

from firmware import clock

NAME = "unix"
DEFAULT_HOST = "127.0.0.1"
CONFIG_PATH = os.getenv("UNDERSTUDY_CONFIG") or "config.json"
STATE_DIR = os.getenv("UNDERSTUDY_STATE") or "state"
if os.getenv("UNDERSTUDY_FLASH"):
    from firmware.board import unix_flash

    STATE_DIR = unix_flash.mount(os.getenv("UNDERSTUDY_FLASH"))
TLS_DIR = os.getenv("UNDERSTUDY_TLS") or "build/tls"

_c = os.getenv("UNDERSTUDY_CLOCK")
if _c:
    clock.fixed = int(_c)


async def network_up(cfg):
    return DEFAULT_HOST


def address():
    return DEFAULT_HOST


def led(on):
    pass


def setup(cfg):
    pass
