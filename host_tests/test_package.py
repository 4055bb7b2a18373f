"""mip packaging: package.json is current, and MicroPython's own mip installs
the firmware from it (served over HTTP as GitHub would), which then boots and
takes a payment."""
import functools
import http.server
import os
import socket
import subprocess
import threading

from concert_client import exchange, odoo
from conftest import CLOCK, base_config
from understudy import package, paths
from understudy.launch import Firmware, micropython
from wire import concert_tlv as tlv


def test_package_json_is_current():
    with open(package.PATH) as f:
        assert f.read() == package.render(), "package.json is stale: run `make package`"


def test_mip_installs_a_firmware_that_boots(tmp_path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=paths.ROOT)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    board = tmp_path / "board"
    board.mkdir()
    try:
        url = "http://127.0.0.1:%d/package.json" % server.server_address[1]
        install = "import mip; mip.install(%r, target=%r)" % (url, str(board))
        r = subprocess.run([micropython(), "-c", install],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        server.shutdown()
    assert r.returncode == 0 and "Done" in r.stdout, r.stdout + r.stderr
    installed = sorted(str(p.relative_to(board)) for p in board.rglob("*") if p.is_file())
    assert installed == sorted(u[0] for u in package.contents()["urls"])
    # the unix board module is not shipped: give the installed tree the one from here
    for name in ("unix.py", "unix_flash.py"):
        (board / "firmware" / "board" / name).write_bytes(
            open(os.path.join(paths.ROOT, "firmware", "board", name), "rb").read())
    fw = Firmware(root=str(board), heap="512K", config=base_config(), clock=CLOCK,
                  state_dir=str(tmp_path / "state")).start()
    try:
        assert tlv.decode(exchange(fw.address("concert-ip"), odoo(1250)))["AE"] == "10"
        with socket.create_connection(fw.address("web"), timeout=10) as s:  # the page came too
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert s.recv(12) == b"HTTP/1.1 200"
    finally:
        out = fw.stop()
        fw.cleanup()
    assert "Traceback" not in out
