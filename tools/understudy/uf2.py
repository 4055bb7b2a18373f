"""MicroPython onto a Raspberry Pi Pico in BOOTSEL mode: `understudy deploy --uf2`.

Held down while plugged in, the Pico's BOOTSEL button makes it a USB drive
named RPI-RP2 (INFO_UF2.TXT on it says "Board-ID: RPI-RP2"); a UF2 file
copied there is written to flash, and the board reboots into it.  The file
is checked first (every 512-byte block a UF2 block, the RP2040's family),
so a wrong download never reaches the board.
"""
import glob
import os
import struct

MAGIC = (0x0A324655, 0x9E5D5157, 0x0AB16F30)  # start 0, start 1, end
FAMILY_ID = 0x00002000  # flag: the last header word is a family
RP2040 = 0xE48BFF56
DRIVE = "RPI-RP2"
# where desktops mount a removable drive (Linux, macOS)
PLACES = ("/media/*/" + DRIVE, "/run/media/*/" + DRIVE, "/media/" + DRIVE, "/mnt/" + DRIVE,
          "/Volumes/" + DRIVE)


class UF2Error(Exception):
    pass


def check(path):
    """(blocks, bytes of flash) of a UF2 file for the RP2040; UF2Error saying
    what is wrong otherwise."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UF2Error("cannot read %s: %s" % (path, e.strerror))
    if not data or len(data) % 512:
        raise UF2Error("%s is not a UF2 file (%d bytes: not whole 512-byte blocks)" % (path, len(data)))
    flash = 0
    for i in range(0, len(data), 512):
        m0, m1, flags, _, size, no, count, family = struct.unpack_from("<8I", data, i)
        (end,) = struct.unpack_from("<I", data, i + 508)
        if (m0, m1, end) != MAGIC:
            raise UF2Error("%s is not a UF2 file (block %d has no UF2 magic)" % (path, i // 512))
        if not flags & FAMILY_ID or family != RP2040:
            raise UF2Error("%s is not for the RP2040 (block %d: family 0x%08x): download the "
                           "RPI_PICO (or RPI_PICO_W) firmware" % (path, i // 512, family))
        if no != i // 512 or count != len(data) // 512:
            raise UF2Error("%s is cut or reordered (block %d says %d of %d)" % (path, i // 512, no, count))
        flash += size
    return len(data) // 512, flash


def payload(path):
    """The bytes a (checked) UF2 file writes to flash, in block order."""
    with open(path, "rb") as f:
        data = f.read()
    return b"".join(data[i + 32:i + 32 + struct.unpack_from("<I", data, i + 16)[0]]
                    for i in range(0, len(data), 512))


def frozen(path):
    """True if the UF2's MicroPython has Understudy frozen in (manifest.py):
    its frozen modules' names are in the image."""
    return b"firmware/app.py\0" in payload(path)


def is_drive(d):
    try:
        with open(os.path.join(d, "INFO_UF2.TXT")) as f:
            return "RPI-RP2" in f.read()
    except OSError:
        return False


def find_drive(given=None):
    """The mounted RPI-RP2 drive: `given`, or the one found where desktops
    mount drives; UF2Error saying how to get one otherwise."""
    if given:
        if not is_drive(given):
            raise UF2Error("%s is not a Pico in BOOTSEL mode (no INFO_UF2.TXT naming RPI-RP2)" % given)
        return given
    found = [d for pat in PLACES for d in glob.glob(pat) if is_drive(d)]
    if not found:
        raise UF2Error("no RPI-RP2 drive is mounted: hold the Pico's BOOTSEL button while you plug "
                       "it in, let the drive mount, or name it with --drive")
    if len(found) > 1:
        raise UF2Error("more than one RPI-RP2 drive (%s): name one with --drive" % ", ".join(found))
    return found[0]


def flash(path, drive, say):
    """Copy the UF2 onto the drive, in 64 KB pieces with progress."""
    total = os.path.getsize(path)
    dest = os.path.join(drive, os.path.basename(path))
    done = 0
    with open(path, "rb") as src, open(dest, "wb") as out:
        while True:
            piece = src.read(65536)
            if not piece:
                break
            out.write(piece)
            done += len(piece)
            say("flashing %s: %d%%" % (os.path.basename(path), 100 * done // total))
        out.flush()
        os.fsync(out.fileno())
    return dest
