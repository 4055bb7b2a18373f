"""Where the firmware lives: the source tree, and its mpy-cross build."""
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE = ROOT
MPY = os.path.join(ROOT, "build", "mpy")
STATE = os.path.join(ROOT, "state")
TLS = os.path.join(ROOT, "build", "tls")  # made by tools/understudy/tls.py
# what goes onto a board (and into the mpy build)
FIRMWARE_DIRS = ("lib", "firmware")
FIRMWARE_FILES = ("boot.py", "main.py")
