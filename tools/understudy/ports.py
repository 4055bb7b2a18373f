"""Free TCP ports for terminals started by tests, one slice per pytest-xdist
worker, so that two workers (or a test's own nested pytest run) never race
for one port.
"""
import os
import random
import socket

LOW, HIGH = 20000, 32000  # below Linux's ephemeral range (32768+)
# A pytest run started from inside a test (a suite testing its own parallel
# runs) gives its workers the caller's slice in UNDERSTUDY_PORTS ("LOW-HIGH"),
# so the inner workers split that slice instead of overlapping the outer ones.
RANGE_ENV = "UNDERSTUDY_PORTS"


def worker():
    """(index, count) of this pytest-xdist worker ("gw3" of 8: (3, 8)); (0, 1) outside xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    try:
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        index = int(name[2:]) if name.startswith("gw") else 0
    except ValueError:
        return 0, 1
    return (index, count) if 0 <= index < count else (0, 1)


def port_range():
    """This worker's share of LOW..HIGH (or of UNDERSTUDY_PORTS): each
    pytest-xdist worker draws its ports from its own slice, so two workers
    never race for one port."""
    low, high = LOW, HIGH
    given = os.environ.get(RANGE_ENV)
    if given:
        low, high = (int(x) for x in given.split("-"))
        high += 1
    index, count = worker()
    span = (high - low) // count
    return low + index * span, low + (index + 1) * span - 1


def free_port():
    """A free port of this worker's slice, below Linux's ephemeral range,
    where no outgoing connection can take it between now and the firmware's
    bind."""
    low, high = port_range()
    while True:
        port = random.randint(low, high)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            pass
        finally:
            s.close()


def drawn(names, given):
    """Of the listeners `names` ("web" included), those whose port the
    caller's config `given` leaves to free_port(): a terminal may move them."""
    given = given or {}
    out = []
    for name in names:
        lc = given.get("web") if name == "web" else given.get("listeners", {}).get(name)
        if "port" not in (lc or {}):
            out.append(name)
    return out
