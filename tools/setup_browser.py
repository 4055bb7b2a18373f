#!/usr/bin/env python3
"""Headless Chromium for the web page's browser test (host_tests/test_web_browser.py),
from Debian's packages: `chromium` and `chromium-driver` (Selenium drives it).

Run by `make test`.  Installs them with apt-get when they are missing and
this is root on a Debian-like system; otherwise says so and carries on (the
browser test then skips, saying why).  Never fails the build.
"""
import os
import shutil
import subprocess
import sys

NEED = {"chromium": "/usr/bin/chromium", "chromium-driver": "/usr/bin/chromedriver"}


def say(msg):
    print("browser: " + msg, flush=True)


def main():
    missing = [pkg for pkg, path in NEED.items() if not os.path.exists(path)]
    if not missing:
        return 0
    if not shutil.which("apt-get"):
        say("no apt-get here: install %s yourself for the browser test (it skips meanwhile)"
            % " and ".join(missing))
        return 0
    if os.geteuid() != 0:
        say("not root: `sudo apt-get install %s` for the browser test (it skips meanwhile)"
            % " ".join(missing))
        return 0
    say("installing %s with apt-get (once)..." % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *missing]):
        r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-5:])
            say("%s failed (the browser test skips):\n%s" % (" ".join(cmd), tail))
            return 0
    say("ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
