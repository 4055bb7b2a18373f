"""Shared fixtures: the firmware under test, started in the MicroPython unix port.

Every end-to-end test runs twice: against the .py sources and against the
mpy-cross build that boards run.  Teardown fails a test whose firmware
printed a Traceback or a MemoryError, or died.
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (os.path.join(ROOT, "tools"), os.path.join(ROOT, "lib"), os.path.join(HERE, "codec"), HERE):
    if p not in sys.path:
        sys.path.insert(0, p)

from understudy import paths  # noqa: E402
from understudy.launch import Firmware  # noqa: E402
# ports below the ephemeral range (no outgoing connection takes one before
# the firmware binds it), and the config merge, as the test kit has them
from understudy.ports import drawn  # noqa: E402
from understudy.ports import free_port as quiet_port  # noqa: E402
from understudy.testkit import TCP, merge  # noqa: E402

TCP_NAMES = TCP + ("web",)  # the listeners base_config() draws ports for

collect_ignore = ["mp", "fakes"]  # MicroPython-only code, run by the tests that need it

CLOCK = 1795000000  # 2026-11-18 11:06:40 UTC: receipts in golden files do not move
SOURCE_HEAP = "512K"  # compiling .py on the fly needs room; boards run .mpy
MPY_HEAP = "256K"  # the board budget (README, docs/MEMORY.md)


def base_config():
    """Fast time-outs so unhappy paths take seconds, not minutes."""
    return {
        "listeners": {"concert-ip": {"port": quiet_port()}, "p3-tcp": {"port": quiet_port()},
                      "p3-ws": {"port": quiet_port()},
                      "synqpay": {"port": quiet_port()}, "synqpay-tls": {"port": quiet_port()},
                      "concert-serial": {"reply_ms": 1000, "byte_ms": 500},
                      "synqpay-serial": {}},  # every listener named: tests switch them off by name
        "timeouts": {"card_s": 2, "pin_s": 2, "auth_s": 5, "request_ms": 2000, "gap_ms": 100},
        "web": {"port": quiet_port()},
        "config_watch_s": 1,
    }


@pytest.fixture(params=["mpy", "src"])
def fw_root(request):
    if request.param == "mpy" and not os.path.exists(os.path.join(paths.MPY, "main.py")):
        pytest.fail("build/mpy missing: run `make mpy` (make test does)")
    return request.param


@pytest.fixture
def firmware(fw_root, tmp_path):
    """start(config=None, heap=None, state_dir=None) -> a running Firmware."""
    started = []

    def start(config=None, heap=None, state_dir=None, clock=CLOCK, flash=None, path=(), env=None):
        """A running firmware; the same state_dir again is the same board rebooted.
        path: directories imported from first (fake modules); env: more environment."""
        cfg = merge(base_config(), config or {})
        root = paths.MPY if fw_root == "mpy" else paths.SOURCE
        heap = heap or (MPY_HEAP if fw_root == "mpy" else SOURCE_HEAP)
        fw = Firmware(root=root, heap=heap, config=cfg,
                      state_dir=state_dir or str(tmp_path / ("state%d" % len(started))),
                      clock=clock, flash=flash, path=path, env=env, movable=drawn(TCP_NAMES, config))
        started.append(fw)
        return fw.start()

    yield start
    errors = []
    for fw in started:
        status = fw.proc.poll() if fw.proc is not None else None
        died = status not in (None, 0) and not fw.killed
        fw.stop()
        if fw.problems():
            errors.append("firmware printed:\n" + fw.output())
        elif died:
            errors.append("firmware died (exit status %s):\n%s" % (status, fw.output()))
        fw.cleanup()
    assert not errors, "\n".join(errors)


# The loopback test kit's `terminal` fixture (what `pip install .` registers as
# a pytest plugin), for host_tests/test_pos_example.py and test_testkit.py.
from understudy.pytest_plugin import terminal, understudy_config  # noqa: E402, F401
from understudy.pytest_plugin import pytest_addoption as _understudy_options  # noqa: E402
from understudy.pytest_plugin import pytest_configure  # noqa: E402, F401


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true",
                     help="rewrite golden transcripts with what the firmware answers now")
    _understudy_options(parser)
