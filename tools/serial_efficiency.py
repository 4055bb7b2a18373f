#!/usr/bin/env python3
"""Concert serial link efficiency (understudy.bench_serial): wire time of the
bytes / whole transaction, turn by turn, at a real line speed.

    .venv/bin/python tools/serial_efficiency.py [--baud 9600] [-n 30] [--frames]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from understudy import bench_serial

if __name__ == "__main__":
    bench_serial.main()
