"""Ports for terminals under test: a port another program takes between
the draw and the firmware's bind (two suites on one host) is drawn again;
a port the test chose itself is never moved."""
import socket

from conftest import TCP_NAMES, base_config
from understudy import paths
from understudy.launch import Firmware
from understudy.ports import drawn, free_port


def _held():
    s = socket.socket()
    s.bind(("127.0.0.1", free_port()))
    s.listen(1)
    return s


def _start(cfg, movable):
    return Firmware(root=paths.MPY, heap="256K", config=cfg, movable=movable).start()


def test_a_drawn_port_taken_at_start_is_drawn_again():
    held = _held()
    cfg = base_config()
    cfg["listeners"]["p3-tcp"]["port"] = held.getsockname()[1]  # as if taken after the draw
    fw = _start(cfg, TCP_NAMES)
    try:
        host, port = fw.address("p3-tcp")
        assert port != held.getsockname()[1]
        assert fw.address("concert-ip")[1] == cfg["listeners"]["concert-ip"]["port"]  # the others stay
        # the first boot's lines stay (a journal it replayed says so only then)
        out = fw.output()
        assert out.count("journal replayed") == 2 and "(launcher) p3-tcp taken" in out, out
        with socket.create_connection((host, port), timeout=5):
            pass
    finally:
        fw.cleanup()
        held.close()


def test_a_port_the_test_chose_stays_and_fails_loudly():
    held = _held()
    cfg = base_config()
    cfg["listeners"]["p3-tcp"]["port"] = held.getsockname()[1]
    fw = _start(cfg, drawn(TCP_NAMES, {"listeners": {"p3-tcp": {"port": 1}}}))
    try:
        assert "p3-tcp" not in fw.listeners
        assert "p3-tcp failed cannot listen: OSError(98" in fw.output()
    finally:
        fw.cleanup()
        held.close()


def test_a_bench_terminal_whose_drawn_port_is_taken_starts_on_another(monkeypatch):
    """bench.start() (the mixed soak of test_performance, load.py, make
    bench) draws every port too: one taken before the bind is drawn again
    rather than failing the run (seen: "p3-tcp failed cannot listen:
    OSError(98,)" in a clean-clone make test beside other suites)."""
    from understudy import bench

    held = _held()
    taken = held.getsockname()[1]
    draws = []

    def draw():
        draws.append(1)
        return taken if len(draws) == 1 else free_port()

    monkeypatch.setattr(bench, "free_port", draw)
    fw = bench.start({}, root=paths.MPY)
    try:
        first = bench.TCP[0]
        assert fw.address(first)[1] != taken and "(launcher) %s taken" % first in fw.output()
    finally:
        fw.stop()
        fw.cleanup()
        held.close()

