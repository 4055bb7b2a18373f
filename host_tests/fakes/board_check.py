"""Boot a board module on the unix port with faked machine/network.

    micropython board_check.py esp32|rp2 up|never
"""
import asyncio
import sys

import machine
import network

from firmware import config

name, mode = sys.argv[1], sys.argv[2]
network.connect_after = {"up": 2, "never": None}[mode]
cfg, problems = config.merge({"wifi": {"ssid": "shop", "password": "secret", "connect_s": 1}})
assert not problems, problems
b = __import__("firmware.board." + name, None, None, ["NAME"])
b.setup(cfg)
b.led(True)
ip = asyncio.run(b.network_up(cfg))
print("board", b.NAME, "host", b.DEFAULT_HOST, "config", b.CONFIG_PATH, "state", b.STATE_DIR)
print("ip", ip, "address", b.address(), "hostname", network.hostname())
print("pins", machine.log[:3])
