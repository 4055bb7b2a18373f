"""Fake `network`: a station that connects on its `attempts`-th connect()
(None: never), a poll after the attempt starts.  With FAKE_NO_NETWORK set
in the environment it is absent, as on a plain Pico (no Wi-Fi chip)."""
import os

if os.getenv("FAKE_NO_NETWORK"):
    raise ImportError("no module named 'network'")

STA_IF = 0
attempts = 1
names = []


def hostname(name=None):
    if name is not None:
        names.append(name)
    return names[-1] if names else "mpy"


class WLAN:
    """One station interface, as on a board: WLAN(STA_IF) is always the same."""

    _one = None

    def __new__(cls, interface):
        if cls._one is None:
            cls._one = object.__new__(cls)
            cls._one.tries = 0
            cls._one.on = False
            cls._one.up = False
        return cls._one

    def __init__(self, interface):
        pass

    def active(self, on=None):
        if on is not None:
            self.on = on
        return self.on

    def connect(self, ssid, password):
        self.tries += 1
        self.up = attempts is not None and self.tries >= attempts

    def disconnect(self):
        self.up = False

    def isconnected(self):
        return self.up

    def ifconfig(self):
        return ("192.168.4.2", "255.255.255.0", "192.168.4.1", "192.168.4.1")
