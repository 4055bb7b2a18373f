"""Wall clock in Unix seconds on every port (some boards count from 2000)."""
import time

_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
fixed = None  # type: int | None  # seconds; set by the unix board for reproducible receipts


def now():
    return fixed if fixed is not None else int(time.time()) + _OFFSET


def parts(secs):
    """(year, month, day, hour, minute, second) in UTC."""
    return time.gmtime(secs - _OFFSET)[:6]


def stamp(secs):
    y, mo, d, h, mi, s = parts(secs)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, mo, d, h, mi, s)
