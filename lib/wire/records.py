"""The journal's file format: framed, checked records.  Sans-I/O.

A journal file starts with b"USJ" and a version byte, then records:

    0xA5 | length (2 bytes, big-endian) | payload | CRC32 of length+payload (4 bytes, BE)

The payload is a JSON array (the firmware decides what it means).  A record
cut short by a power loss, or damaged, fails its length or CRC check; the
reader (records_reader.py) skips it, counts it, and resyncs on the next
record that checks out.
"""
import json
import struct
from binascii import crc32

MAGIC = b"USJ"
VERSION = 1
SYNC = 0xA5
MAX_PAYLOAD = 1024


def ref_hash(ref):
    """The two bytes the journal's index keeps of a register's reference
    (a 16-bit CRC; 0 means no reference)."""
    return (crc32(ref.encode()) & 0xFFFF) or 1


def header():
    return MAGIC + bytes([VERSION])


def version_of(head):
    """Format version of a file starting with these 4 bytes; None if not a journal."""
    if len(head) < 4 or head[:3] != MAGIC:
        return None
    return head[3]


def pack(fields):
    """The bytes of one record holding the JSON array `fields`."""
    payload = json.dumps(fields).encode()
    n = len(payload)
    if n > MAX_PAYLOAD:
        raise ValueError("journal record too long (%d bytes)" % n)
    head = struct.pack(">BH", SYNC, n)
    return head + payload + struct.pack(">I", crc32(payload, crc32(head[1:])) & 0xFFFFFFFF)
