"""Host side of Understudy: the `understudy` command (ecr, trace, journal,
deploy, run), the launcher, the build, and the pytest plugin.

Works from a checkout (the firmware is the repository's) and installed with
`pip install .` (the firmware travels inside the package, `board_files/`).
"""

import os as _os
import re as _re

_HERE = _os.path.dirname(_os.path.abspath(__file__))
_BUNDLED = _os.path.join(_HERE, "board_files")


def _root():
    """Where the firmware tree is: bundled in an installed package, else the checkout."""
    if _os.path.isfile(_os.path.join(_BUNDLED, "main.py")):
        return _BUNDLED
    return _os.path.dirname(_os.path.dirname(_HERE))


def _firmware_version(root):
    with open(_os.path.join(root, "firmware", "__init__.py")) as f:
        return _re.search(r'VERSION = "([^"]+)"', f.read()).group(1)


ROOT = _root()
INSTALLED = ROOT == _BUNDLED
VERSION = _firmware_version(ROOT)
