#!/usr/bin/env python3
"""Compile the firmware to .mpy (build/mpy/), as boards run it.  `make mpy`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from understudy.build import build

if __name__ == "__main__":
    build()
