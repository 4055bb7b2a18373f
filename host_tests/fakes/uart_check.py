"""Open a board's serial line with machine faked, and print how.

    micropython uart_check.py esp32|rp2 [config overrides as JSON] [listener]
"""
import json
import sys

import machine

from firmware import config

name = sys.argv[3] if len(sys.argv) > 3 else "concert-serial"
cfg, problems = config.merge({"listeners": {name: json.loads(sys.argv[2])}})
assert not problems, problems
b = __import__("firmware.board." + sys.argv[1], None, None, ["NAME"])
dev, where = b.uart(name, cfg["listeners"][name])
u = next(e for e in machine.log if e[0] == "uart")
kw = u[2]
print("where", where, "id", u[1], "baud", kw["baudrate"], "bits", kw["bits"], "parity", kw["parity"],
      "stop", kw["stop"], "tx", kw["tx"].id, "rx", kw["rx"].id, "timeout", kw["timeout"])
