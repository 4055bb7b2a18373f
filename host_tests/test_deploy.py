"""`understudy deploy` against the unix port acting as a board on a serial
port (host_tests/fake_board.py; mpremote with `resume`, as on a real board):
the files land on its flash, it resets and boots the terminal; Wi-Fi that
never comes up and a port with no board are reported as a person needs."""
import json
import os
import subprocess
import sys

import pytest

from fake_board import FakeBoard
from understudy import deploy, paths

TOOLS = os.path.join(paths.ROOT, "tools")


def run(*args, timeout=180):
    env = dict(os.environ, PYTHONPATH=TOOLS)
    return subprocess.run([sys.executable, "-m", "understudy", "deploy", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


LOCAL = ["--set", "listeners.concert-ip.host=127.0.0.1", "--set", "listeners.synqpay.host=127.0.0.1",
         "--set", "listeners.synqpay-tls.host=127.0.0.1", "--set", "listeners.p3-tcp.host=127.0.0.1",
         "--set", "listeners.p3-ws.host=127.0.0.1", "--set", "listeners.concert-serial.enabled=false",
         "--set", "web.host=127.0.0.1",
         "--set", "wifi.connect_s=1", "--set", "wifi.retry_s=1"]


@pytest.mark.parametrize("wifi", ["1", "never"])
def test_deploy_to_a_board(tmp_path, wifi):
    board = FakeBoard(tmp_path / "flash", wifi_attempts=wifi)
    try:
        ports = []
        from understudy.testkit import free_port

        for name in ("concert-ip", "synqpay", "synqpay-tls", "p3-tcp", "p3-ws"):
            ports += ["--set", "listeners.%s.port=%d" % (name, free_port())]
        ports += ["--set", "web.port=%d" % free_port()]
        r = run("--port", board.port, "--ssid", "shop", "--password", "secret", "--wait", "30",
                *LOCAL, *ports)
        flash = tmp_path / "flash"
        assert (flash / "firmware" / "app.mpy").exists() and (flash / "main.py").exists(), r.stdout + r.stderr
        assert (flash / "tls" / "cert.der").exists()
        board_dir = flash / "firmware" / "board"
        assert (board_dir / "mcu.mpy").exists()  # the unix port's own modules stay off its flash
        assert not [f for f in os.listdir(board_dir) if f.startswith("unix")], os.listdir(board_dir)
        assert (board_dir / "esp32.mpy").exists()  # (its sys.platform is linux: both boards' stay)
        # the Bluetooth listeners, off in this config, stay on the PC
        assert not [f for f in ("ble.mpy", "bt_spp.mpy") if (flash / "firmware" / f).exists()]
        assert (flash / "www" / "index.html.gz").exists()  # the web page, as the terminal serves it
        cfg = json.loads((flash / "config.json").read_text())
        assert cfg["wifi"]["ssid"] == "shop"
        assert "compatible" in r.stdout and "understudy 0.1.0 on esp32" in r.stdout, r.stdout + r.stderr
        assert "warning" not in r.stdout  # 256K: room for every personality at once
        assert board.boots == 2  # reset
        if wifi == "1":
            assert r.returncode == 0, r.stdout + r.stderr
            assert "deploy: READY at 192.168.4.2" in r.stdout
        else:
            assert r.returncode == 1
            assert "Wi-Fi did not come up" in r.stdout and "board: wifi down" in r.stdout
        booted = board.text().split("understudy 0.1.0 on esp32")[-1]  # mpremote's own probes before
        assert "Traceback" not in booted and "READY" in booted, booted
    finally:
        board.close()


def test_what_each_board_gets():
    """build.on_board: the unix port's modules never, another board's module
    not, the Bluetooth listeners' when the config enables one or asked."""
    from argparse import Namespace

    from understudy import build

    assert not build.on_board("firmware/board/unix.mpy")
    assert build.on_board("firmware/board/esp32.mpy", "esp32")
    assert not build.on_board("firmware/board/rp2.mpy", "esp32")
    assert build.on_board("firmware/board/rp2.mpy", "linux")  # not a board's: every one kept
    assert build.on_board("firmware/ble.py") and not build.on_board("firmware/ble.mpy", "rp2", False)
    assert build.on_board("firmware/app.mpy", "rp2", False)
    ask = Namespace(bluetooth=False)
    assert not deploy.wants_bluetooth(ask, {"listeners": {"concert-ip": {"enabled": True}}})
    assert deploy.wants_bluetooth(ask, {"listeners": {"concert-ble": {"enabled": True}}})
    assert deploy.wants_bluetooth(Namespace(bluetooth=True), {})


def test_a_board_short_of_heap_for_the_config_is_told_before_it_runs(tmp_path):
    """The probe reads the board's heap; a config whose personalities, used
    at once, need more from .mpy gets a warning that says what to turn off
    or to freeze, and the deployment goes on (a register may never use them
    all at once)."""
    board = FakeBoard(tmp_path / "flash", heap="128K")
    try:
        r = run("--port", board.port, "--no-reset", *LOCAL)
        assert r.returncode == 0, r.stdout + r.stderr
        warning = [ln for ln in r.stdout.splitlines() if "warning" in ln]
        assert len(warning) == 1, r.stdout
        w = warning[0]
        assert "enables Concert, P3, Synqpay and the web page" in w and "about 168 KB" in w, w
        assert "this board has 12" in w and "KB" in w, w  # 128K less the heap's own tables
        assert "on now: concert-ip, p3-tcp, p3-ws, synqpay, synqpay-tls, synqpay-serial;" in w, w
        assert "--frozen" in w and (tmp_path / "flash" / "config.json").exists()
    finally:
        board.close()


def test_the_heap_a_config_needs_on_each_board():
    from understudy.testkit import firmware_config

    def merged(**listeners):
        cfg = {"listeners": {n: {"enabled": on} for n, on in listeners.items()}}
        return firmware_config().merge(cfg)[0]

    every = merged()
    assert deploy.in_use(every) == ["Concert", "P3", "Synqpay", "web"]
    # a Pico W: its TLS link's buffers come out of MicroPython's heap too
    assert "about %d KB" % (168 + deploy.RP2_TLS) in deploy.heap_warning("rp2", 190 * 1024, every)
    assert deploy.heap_warning("rp2", 210 * 1024, every) is None
    assert deploy.heap_warning("esp32", 190 * 1024, every)
    # a plain ESP32 reports its free RAM beyond the heap it keeps for Wi-Fi and TLS
    assert "this board has 109 KB" in deploy.heap_warning("esp32", 180 * 1024, every)
    assert deploy.heap_warning("esp32", 4 << 20, every) is None  # PSRAM
    concert = merged(**{"p3-tcp": False, "p3-ws": False, "synqpay": False, "synqpay-tls": False,
                        "synqpay-serial": False})
    assert deploy.in_use(concert) == ["Concert", "web"]
    assert deploy.heap_warning("esp32", 180 * 1024, concert) is None
    nothing_at_all = merged(**{n: False for _, lns in deploy.PERSONALITIES for n in lns})
    assert deploy.heap_need(deploy.in_use(nothing_at_all)) == min(kb for _, kb in deploy.NEEDS)


def test_what_deploy_counts_is_what_memory_md_tables():
    """NEEDS is the "deploy counts" column of docs/MEMORY.md's "What fits a
    board", row by row: the warning and the measurements it rests on agree."""
    with open(os.path.join(paths.ROOT, "docs", "MEMORY.md")) as f:
        text = f.read().split("## What fits a board", 1)[1].split("\n## ", 1)[0]
    rows = [ln.split("|")[-2].strip() for ln in text.splitlines()
            if ln.startswith("| ") and ln.split("|")[-2].strip().endswith(" KB")]
    assert rows == ["%d KB" % kb for _, kb in deploy.NEEDS], rows


def test_no_board_and_bad_config(tmp_path):
    r = run("--port", str(tmp_path / "ttyUSB9"))
    assert r.returncode == 1 and "no device at" in r.stderr and "plugged in" in r.stderr
    r = run("--port", "/dev/null", "--set", "timeouts.card_s=0")
    assert r.returncode == 1 and "timeouts.card_s: 0 not allowed (1..600)" in r.stderr


def test_mpy_compatibility_rule():
    build = deploy.mpy_header(paths.MPY)
    assert build == (6, 0, 0)  # bytecode only: no sub-version, no arch
    assert deploy.compatible(2822, build) is None  # the unix port here: v6.3, arch x64
    assert deploy.compatible(6 | 3 << 8 | 10 << 10, build) is None  # ESP32, 1.23+: xtensawin
    assert deploy.compatible(6 | 2 << 8 | 4 << 10, build) is None  # RP2040, 1.22: bytecode loads
    assert deploy.compatible(5 | 4 << 10, build) == "it reads .mpy v5, this build is v6"  # 1.18
    assert "older than 1.12" in deploy.compatible(-1, build)
    native = (6, 3, 10)  # an xtensawin build would need the same sub-version and arch
    assert "native code" in deploy.compatible(6 | 3 << 8 | 4 << 10, native)


def test_frozen_deploy_refused_when_the_board_has_no_frozen_firmware(tmp_path):
    """--frozen on a board whose MicroPython lacks the frozen modules: stops
    before touching its flash, and says what to do."""
    board = FakeBoard(tmp_path / "flash")
    try:
        r = run("--port", board.port, "--frozen", "--no-reset", *LOCAL)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "has no Understudy frozen in" in r.stderr and "manifest.py" in r.stderr, r.stderr
        assert not (tmp_path / "flash" / "config.json").exists()
    finally:
        board.close()


FROZEN = os.environ.get("UNDERSTUDY_FROZEN_MICROPYTHON")


@pytest.mark.skipif(not FROZEN, reason="needs a unix-port micropython built with manifest.py "
                    "($UNDERSTUDY_FROZEN_MICROPYTHON)")
def test_frozen_deploy_to_a_board_built_with_the_manifest(tmp_path, monkeypatch):
    """A board whose MicroPython has the firmware frozen in: an old firmware/
    on its flash is removed, only main.py, boot.py, config and TLS are
    copied, and it boots from the frozen modules."""
    monkeypatch.setenv("MICROPYTHON", FROZEN)
    flash = tmp_path / "flash"
    (flash / "firmware").mkdir(parents=True)
    (flash / "firmware" / "app.py").write_text("raise SystemExit('the stale copy ran')\n")
    board = FakeBoard(flash)
    try:
        from understudy.testkit import free_port

        ports = ["--set", "listeners.concert-ip.port=%d" % free_port(),
                 "--set", "listeners.synqpay.enabled=false", "--set", "listeners.synqpay-tls.enabled=false",
                 "--set", "listeners.p3-tcp.enabled=false", "--set", "listeners.p3-ws.enabled=false"]
        r = run("--port", board.port, "--frozen", "--no-tls", "--wait", "30", *LOCAL, *ports)
        assert r.returncode == 0, r.stdout + r.stderr
        assert not (flash / "firmware").exists() and (flash / "main.py").exists()
        booted = board.text().split("understudy 0.1.0 on esp32")[-1]
        assert "Traceback" not in booted and "READY" in booted, booted
    finally:
        board.close()


def _uf2(path, blocks=3, family=0xE48BFF56, flash=b""):
    """A UF2 file the way picotool writes one: 256 bytes of flash a block
    (flash: what they hold, padded with each block's number)."""
    import struct

    data = b""
    for no in range(blocks):
        head = struct.pack("<8I", 0x0A324655, 0x9E5D5157, 0x2000, 0x10000000 + 256 * no, 256, no,
                           blocks, family)
        part = flash[256 * no:256 * no + 256]
        data += head + part + bytes([no]) * (476 - len(part)) + struct.pack("<I", 0x0AB16F30)
    path.write_bytes(data)
    return path


def test_the_pico_tool_runs_a_uf2_with_the_firmware_frozen_in_from_it(tmp_path):
    """`understudy pico --frozen` leaves firmware/ and lib/wire/ off the
    flash (they would shadow the frozen modules), and refuses a UF2 whose
    MicroPython has none frozen in rather than boot it without them."""
    from understudy import build, pico, uf2

    names = b"\0".join([b"firmware/__init__.py", b"firmware/app.py", b"wire/p3.py"]) + b"\0"
    frozen = _uf2(tmp_path / "frozen.uf2", flash=bytes(230) + names)  # firmware/app.py across two blocks
    plain = _uf2(tmp_path / "plain.uf2", flash=bytes(230) + names.replace(b"firmware", b"fermware"))
    assert uf2.frozen(str(frozen)) and not uf2.frozen(str(plain))
    root = build.ensure()
    on = [dst for dst, _ in pico.files(root, frozen=True)]
    assert sorted(on) == ["boot.py", "main.py", "www/index.html.gz"], on
    assert "firmware/app.mpy" in [dst for dst, _ in pico.files(root)]
    r = subprocess.run([sys.executable, "-m", "understudy", "pico", "--frozen", "--uf2", str(plain),
                        "--bootrom", str(plain)], env=dict(os.environ, PYTHONPATH=TOOLS),
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "has no Understudy frozen in" in r.stderr, r.stdout + r.stderr


def test_the_pico_tool_leaves_the_firmware_the_heap_it_is_told(tmp_path):
    """`understudy pico --heap 64K` appends HOLD to boot.py: one block
    holds the rest of the board's heap, as -X heapsize would leave it;
    run here on the unix port with a larger heap, the firmware package
    imported as on a board."""
    from understudy import launch, pico

    assert [pico.size(t) for t in ("65536", "64K", "64k", "1M")] == [65536, 65536, 65536, 1 << 20]
    boot = tmp_path / "boot.py"
    boot.write_bytes(open(os.path.join(paths.ROOT, "boot.py"), "rb").read() + pico.HOLD % 65536)
    show = "import firmware; print(gc.mem_free() + gc.mem_alloc() - len(firmware.held))"
    r = subprocess.run(launch.micropython_cmd() + ["-X", "heapsize=240K", "-c",
                       "exec(open(%r).read()); %s" % (str(boot), show)], capture_output=True, text=True,
                       timeout=60, stdin=subprocess.DEVNULL, env=dict(os.environ, MICROPYPATH=paths.ROOT))
    assert r.returncode == 0, r.stdout + r.stderr
    assert 65536 - 64 <= int(r.stdout) <= 65536 + 64, r.stdout  # (the bytearray's own header)
    r = subprocess.run([sys.executable, "-m", "understudy", "pico", "--heap", "lots", "--uf2", "x",
                        "--bootrom", "x"], env=dict(os.environ, PYTHONPATH=TOOLS),
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "not a size: 'lots' (say 65536, 64K or 1M)" in r.stderr, r.stderr


def _drive(path):
    path.mkdir()
    (path / "INFO_UF2.TXT").write_text("UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n")
    return path


def test_deploy_puts_micropython_on_a_pico_in_bootsel_mode_first(tmp_path):
    drive = _drive(tmp_path / "RPI-RP2")
    firmware = _uf2(tmp_path / "RPI_PICO-v1.28.0.uf2")
    board = FakeBoard(tmp_path / "flash")
    try:
        r = run("--uf2", str(firmware), "--drive", str(drive), "--port", board.port, "--no-reset",
                "--no-tls", *LOCAL)
    finally:
        board.close()
    assert r.returncode == 0, r.stdout + r.stderr
    assert (drive / firmware.name).read_bytes() == firmware.read_bytes()
    out = r.stdout + r.stderr
    assert "3 UF2 blocks, 1 KB for the RP2040's flash; onto %s" % drive in out, out
    assert "flashing RPI_PICO-v1.28.0.uf2: 100%" in out
    assert (tmp_path / "flash" / "firmware" / "app.mpy").exists()  # and then the terminal, as always


def test_a_wrong_uf2_or_no_pico_drive_never_reaches_the_board(tmp_path):
    drive = _drive(tmp_path / "RPI-RP2")
    cases = [(_uf2(tmp_path / "esp.uf2", family=0x1C5F21B0), str(drive), "is not for the RP2040"),
             (tmp_path / "notes.txt", str(drive), "is not a UF2 file"),
             (_uf2(tmp_path / "pico.uf2"), str(tmp_path), "is not a Pico in BOOTSEL mode")]
    (tmp_path / "notes.txt").write_text("hello")
    for firmware, where, said in cases:
        r = run("--uf2", str(firmware), "--drive", where, "--port", "/dev/nonexistent-port")
        assert r.returncode == 1 and said in r.stderr, (said, r.stdout + r.stderr)
        assert sorted(os.listdir(drive)) == ["INFO_UF2.TXT"]  # nothing copied
