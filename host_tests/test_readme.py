"""The README's sessions, run as a reader runs them, so a snippet cannot
drift from the product: every ```console block's `$ ` commands go through
bash, in order, from the checkout, against a terminal started the way `make
run` starts it (tools/run.py, built-in defaults), and what they print must
be what the README shows.

Three things differ on this machine from the reader's, and are mapped: the
ports (other terminals may hold the defaults: the terminal gets free ones
and the commands are pointed at them), the ptys (the README's /dev/pts/N
becomes the one this run printed), and the values a terminal makes at
random (a pairing code, an API key): such a word (6 or more characters
with a digit in it, shown after `CODE` or `API key`) may differ from the
README's, and what it became is used for the README's word in the commands
that follow.  In an expected line `...`
stands for any text; a line of `...` alone for any lines.
"""
import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from conftest import quiet_port
from understudy import paths

ROOT = paths.ROOT
README = os.path.join(ROOT, "README.md")
DEFAULT_PORTS = {"concert-ip": 8888, "p3-tcp": 4245, "p3-ws": 8080, "synqpay": 9000,
                 "synqpay-tls": 9443, "web": 8088}


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def console_steps(text):
    """[(command, [expected lines])] of every ```console block, in order."""
    steps = []
    for block in re.findall(r"```console\n(.*?)```", text, re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            if lines[i].startswith("$ "):
                cmd = lines[i][2:]
                while cmd.endswith("\\") and i + 1 < len(lines):  # continued on the next line
                    i += 1
                    cmd += "\n" + lines[i]
                here = re.search(r"<<'(\w+)'", cmd)
                while here and i + 1 < len(lines):  # a here-document, to its end word
                    i += 1
                    cmd += "\n" + lines[i]
                    if lines[i] == here.group(1):
                        break
                steps.append((cmd, []))
            else:
                steps[-1][1].append(lines[i])
            i += 1
    return steps


def make_run_block(text):
    """The lines of the README's block that shows `make run`'s first run."""
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        if "READY" in block and "setup: " in block:
            return block.splitlines()
    raise AssertionError("the README shows no first `make run`")


# -- matching what a command printed against what the README shows

def _tokens(s):
    return re.findall(r"\w+|\W", s)


def line_matches(want, got, values):
    """Does the printed line `got` read as the README's `want`?  New random
    values found are added to `values` (README word -> this run's)."""
    if "..." in want:
        rx = ".*".join(re.escape(p) for p in want.split("..."))
        return re.fullmatch(rx, got) is not None
    a, b = _tokens(want), _tokens(got)
    if len(a) != len(b):
        return False
    found = {}
    for x, y in zip(a, b):
        if x == y:
            continue
        if (len(x) >= 6 and len(x) == len(y) and re.search(r"\d", x) and re.fullmatch(r"\w+", y)
                and values.get(x, y) == y and found.get(x, y) == y):
            found[x] = y
            continue
        return False
    values.update(found)
    return True


def lines_match(want, got, values):
    """Every README line in order, `...` lines skipping any printed ones; None
    if they match, else why not."""
    i = 0
    for k, w in enumerate(want):
        if w == "...":
            continue
        skipping = k > 0 and want[k - 1] == "..."
        while i < len(got) and not line_matches(w, got[i], values):
            if not skipping:
                return "line %d: the README shows %r, the command printed %r" % (k + 1, w, got[i])
            i += 1
        if i >= len(got):
            return "the README shows %r, which the command did not print" % w
        i += 1
    if i < len(got) and not (want and want[-1] == "..."):
        return "the command printed more than the README shows: %r" % got[i:]
    return None


# -- the terminal, as `make run` starts it

class Running:
    def __init__(self, tmp):
        self.ports = {name: quiet_port() for name in DEFAULT_PORTS}
        cfg = os.path.join(str(tmp), "ports.json")
        with open(cfg, "w") as f:  # nothing but the ports: every other setting is the default
            f.write('{"listeners": {%s}, "web": {"port": %d}}' % (", ".join(
                '"%s": {"port": %d}' % (n, p) for n, p in self.ports.items() if n != "web"),
                self.ports["web"]))
        self.lines = []
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "tools", "run.py"), "--config", cfg,
             "--state-dir", os.path.join(str(tmp), "state")],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.ready.wait(60):
            self.stop()
            raise AssertionError("the terminal did not start:\n" + "\n".join(self.lines))

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.strip() == "READY":
                self.ready.set()
        self.ready.set()

    def serial(self, name):
        for ln in self.lines:
            if ln.startswith("listening %s serial " % name):
                return ln.split()[3]
        raise AssertionError("no %s line" % name)

    def stop(self):
        self.proc.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def running(tmp_path):
    r = Running(tmp_path)
    yield r
    r.stop()
    bad = [ln for ln in r.lines if "Traceback" in ln or "MemoryError" in ln]
    assert not bad, "\n".join(r.lines)


def swap(text, mapping):
    """Each key of mapping found in text as a whole word or path replaced by
    its value, in one pass: a value may be another key (this run's pty for
    one listener can be the README's for the other)."""
    if not mapping:
        return text
    rx = re.compile(r"(?<![\w/])(%s)(?!\w)" % "|".join(
        re.escape(k) for k in sorted(mapping, key=len, reverse=True)))
    return rx.sub(lambda m: mapping[m.group(1)], text)


def localise(cmd, running, readme_pts, values):
    """The README's command pointed at this run's ports, ptys and values."""
    ports = {str(port): str(running.ports[name]) for name, port in DEFAULT_PORTS.items()}
    cmd = swap(cmd, dict(ports, **readme_pts))
    for shown, real in values.items():
        cmd = re.sub(r"\b%s\b" % re.escape(shown), real, cmd)

    def flags(m):
        proto, rest = m.group(1), m.group(2)
        segment = re.split(r"[;|&]", rest)[0]
        if proto == "concert":
            port = None if "--serial" in segment else running.ports["concert-ip"]
        elif proto == "p3":
            port = running.ports["p3-ws" if "--ws" in segment else "p3-tcp"]
        else:
            port = running.ports["synqpay-tls" if "--tls" in segment else "synqpay"]
        more = " --web %d" % running.ports["web"] + (" --port %d" % port if port else "")
        return "understudy ecr %s%s%s" % (proto, more, rest)

    return re.sub(r"understudy ecr (concert|p3|synqpay)(.*)", flags, cmd)


@pytest.mark.parametrize("page", ["README.md", "docs/SESSIONS.md"])
def test_the_sessions_run_as_shown(running, tmp_path, page):
    text = read(os.path.join(ROOT, page))
    venv_bin = os.path.dirname(sys.executable)
    assert os.path.exists(os.path.join(venv_bin, "understudy")), \
        "the README's `understudy` command is missing: run `make setup`"
    shown = make_run_block(read(README))  # the ptys a reader's `make run` printed
    readme_pts = {}
    for name in ("concert-serial", "synqpay-serial"):
        line = next(ln for ln in shown if ln.startswith("listening %s serial " % name))
        readme_pts[line.split()[3]] = running.serial(name)
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ.get("PATH", ""),
               XDG_CACHE_HOME=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)  # the reader has none
    values = {}
    steps = console_steps(text)
    assert len(steps) >= 4
    for cmd, want in steps:
        real = localise(cmd, running, readme_pts, values)
        r = subprocess.run(["bash", "-c", real], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=90)
        why = lines_match(want, r.stdout.splitlines(), values)
        assert why is None, "%s: command `%s` (run as `%s`): %s" % (page, cmd, real, why)
    # only what the terminal makes at random may differ: a pairing code, an API key
    random = set(re.findall(r"(?:CODE|API key) (\w+)", text))
    wrong = {k: v for k, v in values.items() if k not in random}
    assert not wrong, "%s shows values the terminal does not print (README: this run): %r" % (page, wrong)


def test_the_readme_shows_what_make_run_prints(running):
    shown = make_run_block(read(README))
    first = next(i for i, ln in enumerate(shown) if ln.startswith("understudy "))
    # the setup lines (a first run only): each is one the setup, build or TLS code prints
    formats = ["setup: " + f for f in re.findall(r'say\("([^"]*)"', read(os.path.join(ROOT, "tools",
                                                                                    "setup_env.py")))]
    for name in ("build.py", "tls.py"):
        source = read(os.path.join(ROOT, "tools", "understudy", name))
        formats += re.findall(r'"((?:mpy|tls): [^"]*)"', source)
    rxs = [re.sub(r"%[sd]", ".+", re.escape(f)) for f in formats]
    for ln in shown[:first]:
        assert any(re.fullmatch(rx, ln) for rx in rxs), "no code prints the README's %r" % ln
    # the terminal's own lines: ports and ptys mapped, the config line checked apart
    # (with nothing but the defaults this run would hold the default ports; test_newcomer.py
    # checks the built-in defaults line)
    want, got = [], []
    back = {str(p): str(DEFAULT_PORTS[n]) for n, p in running.ports.items()}
    pts = {running.serial(n): next(ln for ln in shown if ln.startswith("listening %s serial " % n)).split()[3]
           for n in ("concert-serial", "synqpay-serial")}
    for ln in running.lines[:running.lines.index("READY") + 1]:
        if not ln.startswith("config "):
            got.append(swap(ln, dict(back, **pts)))
    want = [ln for ln in shown[first:] if not ln.startswith("config ")]
    assert [ln for ln in shown[first:] if ln.startswith("config ")] == [
        "config built-in defaults (no file .../state/config.json)"]
    why = lines_match(want, got, {})
    assert why is None, why


def test_one_source_heap_figure():
    """`--source` needs 512K: the tests run the sources with it, and the
    launcher's help and the config page say so."""
    from conftest import SOURCE_HEAP

    assert SOURCE_HEAP == "512K"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "run.py"), "--help"],
                       capture_output=True, text=True, timeout=30)
    helptext = " ".join(r.stdout.split())
    assert "--source" in helptext and "needs --heap 512K" in helptext
    assert not re.search(r"\b(?!512K)\d+K\b[^.]*compiling", helptext)
    config = " ".join(read(os.path.join(ROOT, "docs", "CONFIG.md")).split())
    assert "`--source`: run the `.py` files instead of the `.mpy` build; this needs `--heap 512K`" in config
    for name in ("README.md", "docs/TOOLS.md", "docs/TESTING.md", "docs/BOARDS.md"):
        for m in re.finditer(r"--source[^.]*?(\d+K)", " ".join(read(os.path.join(ROOT, name)).split())):
            assert m.group(1) == "512K", (name, m.group(0))


def test_the_board_install_by_hand_copies_what_deploy_copies():
    boards = read(os.path.join(ROOT, "docs", "BOARDS.md"))
    line = next(ln for ln in boards.splitlines() if "mpremote connect" in ln and "build/mpy/lib" in ln)
    for part in ("build/mpy/lib :lib", "build/mpy/firmware :firmware", "build/mpy/boot.py :boot.py",
                 "build/mpy/main.py :main.py", "fs cp -r build/mpy/www :www"):
        assert part in line, part
    deploy = read(os.path.join(ROOT, "tools", "understudy", "deploy.py"))
    assert 'paths.PAGE + ".gz"' in deploy  # what deploy copies: the gzipped page, under www/


def test_the_fixture_section_says_to_install_pytest():
    testing = " ".join(read(os.path.join(ROOT, "docs", "TESTING.md")).split())
    assert re.search(r"pip install (\S+ )?pytest\b", testing), "the fixture needs pytest: say to install it"


def test_the_synqpay_frame_diagram_gives_the_length_width():
    sessions = " ".join(read(os.path.join(ROOT, "docs", "SESSIONS.md")).split())
    assert "a 4-byte big-endian length" in sessions
    for block in re.findall(r"```\n(.*?)```", read(os.path.join(ROOT, "docs", "SESSIONS.md")), re.S):
        if "register → 02 01" in block:
            assert "<len:4>" in block and "<len>" not in block


def test_the_readme_is_a_landing_page():
    text = read(README)
    assert len(text.splitlines()) < 300
    for word in ("personality", "ECR", "CD=T", "E/E+", "7E1", "AE/AF", "OTP", "settlement"):
        assert re.search(r"^\| [^|]*%s" % re.escape(word), text, re.M), "%s is not in the glossary" % word
    for page in re.findall(r"\]\((docs/[^)#]+)", text):
        assert os.path.exists(os.path.join(ROOT, page)), page
    assert text.count(".venv/bin/understudy") >= 1 and 'export PATH="$PWD/.venv/bin:$PATH"' in text
