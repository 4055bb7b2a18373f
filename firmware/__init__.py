"""Understudy: a payment terminal stand-in for MicroPython."""

VERSION = "0.1.0"


def drop(name):
    """Forget a module imported for a one-off job (boot, replay, a rare
    request) so the garbage collector can take its RAM back."""
    import sys

    sys.modules.pop(name, None)
    i = name.rfind(".")
    if i > 0:
        parent = sys.modules.get(name[:i])
        if parent is not None and hasattr(parent, name[i + 1:]):
            delattr(parent, name[i + 1:])
