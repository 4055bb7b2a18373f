"""The codec tests of host_tests/codec, run again inside the MicroPython unix port.

pytest collects host_tests/codec/test_*.py on CPython; this runs the same
functions under `micropython`, so a codec that only works on CPython fails.
"""
import glob
import os
import subprocess

import pytest

from understudy import paths
from understudy.launch import micropython

CODEC = os.path.join(os.path.dirname(__file__), "codec")
MODULES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CODEC, "test_*.py")))


@pytest.mark.parametrize("module", MODULES)
def test_codec_module_under_micropython(module):
    env = dict(os.environ, MICROPYPATH="%s:%s:.frozen" % (CODEC, os.path.join(paths.ROOT, "lib")))
    runner = os.path.join(CODEC, "..", "mp_runner.py")
    r = subprocess.run([micropython(), "-X", "heapsize=2M", runner, module],
                       env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout and "ok " in r.stdout
