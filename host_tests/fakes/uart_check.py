"""Open a board's serial line with machine faked, and print how.

    micropython uart_check.py esp32|rp2 [config overrides as JSON]
"""
import json
import sys

import machine

from firmware import config

cfg, problems = config.merge({"listeners": {"concert-serial": json.loads(sys.argv[2])}})
assert not problems, problems
b = __import__("firmware.board." + sys.argv[1], None, None, ["NAME"])
dev, where = b.uart("concert-serial", cfg["listeners"]["concert-serial"])
u = next(e for e in machine.log if e[0] == "uart")
kw = u[2]
print("where", where, "id", u[1], "baud", kw["baudrate"], "bits", kw["bits"], "parity", kw["parity"],
      "stop", kw["stop"], "tx", kw["tx"].id, "rx", kw["rx"].id, "timeout", kw["timeout"])
