"""Write package.json, the file MicroPython's `mip` reads to install the
firmware from this repository onto a board:

    mpremote mip install --target / github:<owner>/<repo>

It lists every firmware file with its place on the board's flash (relative
URLs: mip fetches them next to package.json).  `make package` rewrites it;
host_tests/test_package.py fails when it is stale.
"""
import json
import os

from understudy import VERSION, paths
from understudy.build import on_board, sources

PATH = os.path.join(paths.ROOT, "package.json")


def contents():
    files = list(paths.FIRMWARE_FILES) + [f for f in sources() if on_board(f)]
    files.append(paths.PAGE)  # the web page, as text (without it `/` is 404 on the board)
    return {
        "urls": [[f, f] for f in files],
        "version": VERSION,
    }


def render():
    return json.dumps(contents(), indent=2) + "\n"


def write():
    with open(PATH, "w") as f:
        f.write(render())
    print("package.json: %d files, version %s" % (len(contents()["urls"]), VERSION))


if __name__ == "__main__":
    write()
