"""Fake `network`: a station that connects after `connect_after` polls (None: never)."""

STA_IF = 0
connect_after = 2
names = []


def hostname(name=None):
    if name is not None:
        names.append(name)
    return names[-1] if names else "mpy"


class WLAN:
    def __init__(self, interface):
        self.polls = 0
        self.on = False
        self.ssid = None

    def active(self, on=None):
        if on is not None:
            self.on = on
        return self.on

    def connect(self, ssid, password):
        self.ssid = ssid
        self.polls = 0

    def disconnect(self):
        pass

    def isconnected(self):
        self.polls += 1
        return connect_after is not None and self.polls > connect_after

    def ifconfig(self):
        return ("192.168.4.2", "255.255.255.0", "192.168.4.1", "192.168.4.1")
