"""Understudy: a payment terminal stand-in for MicroPython."""

VERSION = "0.1.0"


def borrow(name):
    """(was it loaded already, the module): import a rarely used module for
    one job; give it back with drop(name, had)."""
    import sys

    return name in sys.modules, __import__(name, None, None, ["_"])


def drop(name, had=False):
    """Forget a module imported for a one-off job (boot, replay, a rare
    request), unless it was loaded before (had), so the garbage collector
    can take its RAM back; the next use reads it from flash again."""
    import sys

    if had or sys.modules.pop(name, None) is None:
        return
    i = name.rfind(".")
    if i > 0:
        parent = sys.modules.get(name[:i])
        if parent is not None and hasattr(parent, name[i + 1:]):
            delattr(parent, name[i + 1:])
