"""A board's flash on a PC: littlefs in an image file, mounted at /flash.

UNDERSTUDY_FLASH="<image path>:<size in KB>" makes the unix port keep its
state (journal, keys) in littlefs, as ESP32 and Pico W boards do, instead of
in a host directory: flash-full behaviour and littlefs's own power-loss
handling then show up on a PC.  The image survives restarts; a new one is
formatted.
"""
import os
import vfs

BLOCK = 512
wear = [0, 0]  # bytes programmed, program operations: printed at exit


class FileBlocks:
    """Block device over a file, with the extended (offset) interface."""

    def __init__(self, path, nblocks):
        self.n = nblocks
        try:
            self.f = open(path, "r+b")
        except OSError:
            self.f = open(path, "w+b")
            for _ in range(nblocks):
                self.f.write(b"\xff" * BLOCK)
            self.f.flush()

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * BLOCK + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=0):
        self.f.seek(block * BLOCK + off)
        self.f.write(buf)
        self.f.flush()
        wear[0] += len(buf)
        wear[1] += 1

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.n
        if op == 5:  # block size
            return BLOCK
        return 0  # init, deinit, sync, erase: nothing to do on a file


def report():
    """Printed at a clean stop, allocating nothing: a Ctrl-C that lands while
    the garbage collector runs a littlefs file's finaliser (which calls our
    Python block device) can leave the unix port's heap locked, and then any
    allocation fails (from sys.atexit, which nothing catches, that was a
    "FATAL: uncaught NLR")."""
    try:
        print("flash wear", wear[0], "bytes in", wear[1], "programs")
    except MemoryError:
        pass


def mount(spec):
    """Mount the image described by spec; returns the state dir on it."""
    path, kb = spec.rsplit(":", 1)
    dev = FileBlocks(path, int(kb) * 1024 // BLOCK)
    try:
        fs = vfs.VfsLfs2(dev)
    except OSError:
        vfs.VfsLfs2.mkfs(dev)
        fs = vfs.VfsLfs2(dev)
    vfs.mount(fs, "/flash")
    try:
        os.mkdir("/flash/state")
    except OSError:
        pass
    return "/flash/state"
