# Board code with three mistakes the static check must catch (test_static.py).
import logging  # not on the boards: CPython only

import machine
import network

machine.UART(1, 9600, tx=17, rx=16, bits=7, parity=0, flow_control=True)  # no such keyword
network.WLAN(network.STA_IF).connect("ssid", "password", 5, 6)  # too many arguments
logging.info("unreachable")
