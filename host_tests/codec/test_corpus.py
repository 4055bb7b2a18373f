"""Replay the fuzzing corpus (host_tests/corpus/*.json) through the codecs.

Each file is a list of cases for one target of fuzz_targets: [hex of the
bytes, the outcome expected, why the case is there].  The outcome is what
the target returns ("ok...", "err:<codec error>"); a case may name another
outcome under MicroPython with "mp:<outcome>" after a "|".  Runs under
pytest (CPython) and mp_runner (MicroPython) alike.
"""
import json
import sys
from binascii import unhexlify

import fuzz_targets

_MP = sys.implementation.name == "micropython"


def _dir():
    f = fuzz_targets.__file__
    i = f.rfind("/")
    base = f[:i] if i > 0 else "."
    i = base.rfind("/")
    return (base[:i] if i > 0 else "..") + "/corpus"


def _files():
    import os

    d = _dir()
    return [d + "/" + n for n in sorted(os.listdir(d)) if n.endswith(".json")]


def _want(expect):
    parts = expect.split("|")
    want = parts[0]
    for p in parts[1:]:
        if _MP and p.startswith("mp:"):
            want = p[3:]
    return want


def test_corpus_replays_on_this_interpreter():
    total = 0
    bad = []
    for path in _files():
        with open(path) as f:
            doc = json.loads(f.read())
        fn = fuzz_targets.TARGETS[doc["target"]]
        for case in doc["cases"]:
            data = unhexlify(case[0])
            total += 1
            try:
                got = fn(data)
            except Exception as e:  # a bug: report every one, not just the first
                got = "raised %s %s" % (type(e).__name__, e)
            if got != _want(case[1]):
                bad.append("%s %s: %s, expected %s (%s)" % (doc["target"], case[0][:40], got,
                                                          case[1], case[2]))
    assert total >= 50, total
    assert not bad, "\n".join(bad)


def test_every_target_has_a_corpus():
    have = []
    for path in _files():
        with open(path) as f:
            have.append(json.loads(f.read())["target"])
    for name in fuzz_targets.TARGETS:
        assert name in have, name
