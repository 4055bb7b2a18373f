"""Understudy: a payment terminal stand-in for MicroPython."""

VERSION = "0.1.0"
