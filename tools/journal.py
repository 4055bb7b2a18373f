#!/usr/bin/env python3
"""Print a terminal's journal as a table: python tools/journal.py [PATH] [--json]."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from understudy.journal import main

if __name__ == "__main__":
    main()
