"""The in-process tests (host_tests/mp: the core, the adapters), run inside MicroPython."""
import os
import subprocess

import pytest

from understudy import paths
from understudy.launch import micropython
from understudy.testkit import free_port

MP = os.path.join(os.path.dirname(__file__), "mp")


# test_journal_cuts runs from test_journal.py (a littlefs image, a longer time-out)
MODULES = sorted(f[:-3] for f in os.listdir(MP) if f.startswith("test_") and f.endswith(".py")
                 and f != "test_journal_cuts.py")


@pytest.mark.parametrize("module", MODULES)
def test_core_under_micropython(tmp_path, module):
    env = dict(os.environ, MICROPYPATH="%s:%s:%s:.frozen" % (MP, paths.ROOT, os.path.join(paths.ROOT, "lib")),
               TMPDIR=str(tmp_path), UNDERSTUDY_TEST_PORTS="%d %d" % (free_port(), free_port()))
    r = subprocess.run([micropython(), "-X", "heapsize=1M", os.path.join(MP, "..", "mp_runner.py"),
                        module], env=env, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout
