#!/usr/bin/env python3
"""`make run`: the same as `understudy run` (tools/understudy/run.py)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from understudy.cli import entry

if __name__ == "__main__":
    sys.argv[1:1] = ["run"]
    entry()
