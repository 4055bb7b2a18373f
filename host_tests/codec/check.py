"""Tiny helpers usable by codec tests on CPython and on MicroPython alike."""


def raises(exc, fn, *args):
    """Call fn(*args); return the exception, failing unless it is `exc`."""
    try:
        fn(*args)
    except exc as e:
        return e
    raise AssertionError("%s did not raise %s" % (fn, exc.__name__))
