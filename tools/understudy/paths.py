"""Where things are: the firmware tree, its mpy-cross build, the TLS identity.

From a checkout: the repository (build/mpy by `make mpy`, build/tls by
`make tls`, state/ for `make run`).  Installed (`pip install .`): the
firmware bundled in the package; the .mpy build and a TLS identity are made
on first use in a cache directory ($XDG_CACHE_HOME/understudy, else
~/.cache/understudy), and `understudy run` keeps its state in ./state.
"""
import os

from understudy import INSTALLED, ROOT, VERSION

SOURCE = ROOT
# what goes onto a board (and into the mpy build)
FIRMWARE_DIRS = ("lib", "firmware")
FIRMWARE_FILES = ("boot.py", "main.py")
# the web page (one self-contained file); the build and boards keep it gzipped
PAGE = os.path.join("www", "index.html")

if INSTALLED:
    CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                         "understudy", VERSION)
    MPY = os.path.join(CACHE, "mpy")
    _tls = os.path.join(ROOT, "build", "tls")  # the checkout's identity, if it had one
    TLS = _tls if os.path.isfile(os.path.join(_tls, "cert.der")) else os.path.join(CACHE, "tls")
    STATE = os.path.abspath("state")
else:
    MPY = os.path.join(ROOT, "build", "mpy")
    TLS = os.path.join(ROOT, "build", "tls")  # made by tools/understudy/tls.py
    STATE = os.path.join(ROOT, "state")

LIB = os.path.join(ROOT, "lib")
