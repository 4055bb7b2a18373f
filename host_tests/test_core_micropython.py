"""The terminal core's own tests (host_tests/mp), run inside MicroPython."""
import os
import subprocess

import pytest

from understudy import paths
from understudy.launch import micropython
from understudy.testkit import free_port

MP = os.path.join(os.path.dirname(__file__), "mp")


@pytest.mark.parametrize("module", ["test_terminal", "test_short_heap"])
def test_core_under_micropython(tmp_path, module):
    env = dict(os.environ, MICROPYPATH="%s:%s:%s:.frozen" % (MP, paths.ROOT, os.path.join(paths.ROOT, "lib")),
               TMPDIR=str(tmp_path), UNDERSTUDY_TEST_PORTS="%d %d" % (free_port(), free_port()))
    r = subprocess.run([micropython(), "-X", "heapsize=1M", os.path.join(MP, "..", "mp_runner.py"),
                        module], env=env, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout
