#!/usr/bin/env python3
"""Print a terminal's journal as a table: the same as `understudy journal [PATH] [--json]`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from understudy.cli import entry

if __name__ == "__main__":
    sys.argv[1:1] = ["journal"]
    entry()
