"""Host side of Understudy: launcher, build, journal reader, packaging."""

import os as _os
import re as _re


def _firmware_version():
    here = _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))))
    with open(_os.path.join(here, "firmware", "__init__.py")) as f:
        return _re.search(r'VERSION = "([^"]+)"', f.read()).group(1)


VERSION = _firmware_version()
