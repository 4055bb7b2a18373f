"""pytest plugin: the `terminal` fixture (installed with `pip install .`).

    def test_my_register(terminal):
        terminal.control.queue("decline")
        assert my_register.pay(terminal.concert, 1250) == "declined"

Each test gets its own terminal: the firmware in the MicroPython unix port,
free ports, a fresh state dir; it is stopped afterwards and the test fails
if the terminal printed a Traceback or a MemoryError, or died.  Settings:
override the `understudy_config` fixture, or mark a test
`@pytest.mark.understudy(config={...})`.
"""
import pytest

from understudy.testkit import Terminal


def pytest_addoption(parser):
    g = parser.getgroup("understudy", "Understudy terminal (the `terminal` fixture)")
    g.addoption("--understudy-heap", default="256K",
                help="MicroPython heap of the terminal (default 256K, the board budget)")
    g.addoption("--understudy-log", action="store_true", help="print the terminal's log live")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "understudy(config): settings for this test's terminal (merged over the defaults)")


@pytest.fixture
def understudy_config():
    """Settings for every `terminal` in scope (the README's configuration
    keys); override this fixture in a conftest.py."""
    return {}


@pytest.fixture
def terminal(request, understudy_config, tmp_path):
    """A running terminal: .concert, .concert_serial, .p3_tcp, .p3_ws,
    .synqpay, .synqpay_tls (+ .synqpay_key, .tls_ca), .control."""
    from understudy.testkit import merge

    cfg = understudy_config
    marker = request.node.get_closest_marker("understudy")
    if marker is not None:
        cfg = merge(cfg, marker.kwargs.get("config") or {})
    t = Terminal(cfg, state_dir=tmp_path / "understudy", heap=request.config.getoption("understudy_heap"),
                 echo=request.config.getoption("understudy_log"))
    t.start()
    try:
        yield t
    finally:
        bad = t.stop()
        if bad:
            pytest.fail("the terminal printed:\n" + t.output(), pytrace=False)
