"""Fake `machine` for running board modules on the unix port: records pin writes."""

log = []


class Pin:
    IN = 0
    OUT = 1

    def __init__(self, id, mode=-1):
        self.id = id
        self.v = 0
        log.append(("pin", id, mode))

    def value(self, v=None):
        if v is not None:
            self.v = v
            log.append(("set", self.id, v))
        return self.v


class UART:
    """Records how it was opened; reads nothing."""

    def __init__(self, id, **kw):
        self.id = id
        self.kw = kw
        log.append(("uart", id, kw))

    def read(self, n=-1):
        return None

    def write(self, b):
        return len(b)
