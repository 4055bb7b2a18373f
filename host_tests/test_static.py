"""Board readiness without boards: the firmware type-checks against the
published MicroPython stubs of each target board (an API the board lacks, a
wrong machine.UART or network.WLAN signature, a CPython-only module: the
build fails), imports nothing the boards lack, and passes ruff."""
import ast
import glob
import os
import subprocess
import sys

import pytest

from understudy import paths

BOARDS = ("esp32", "rp2")
# present in the stubs' standard library (or in CPython) but not on the boards
NOT_ON_BOARDS = {"typing", "typing_extensions", "abc", "enum", "dataclasses", "logging",
                 "threading", "subprocess", "types", "pathlib", "datetime", "signal", "ctypes"}
CANARY = os.path.join(os.path.dirname(__file__), "static_canary", "wrong_board_code.py")


def board_files():
    """What runs on a board: everything but the unix-port-only modules."""
    files = [os.path.join(paths.ROOT, f) for f in paths.FIRMWARE_FILES]
    for d in paths.FIRMWARE_DIRS:
        files += glob.glob(os.path.join(paths.ROOT, d, "**", "*.py"), recursive=True)
    return sorted(f for f in files if not os.path.basename(f).startswith("unix"))


def mypy(board, files):
    stubs = os.path.join(paths.ROOT, ".venv", "stubs", board)
    if not os.path.isdir(stubs):
        pytest.fail("no %s stubs in .venv/stubs: run `make setup`" % board)
    env = dict(os.environ, MYPYPATH="%s:%s" % (stubs, os.path.join(paths.ROOT, "lib")))
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--custom-typeshed-dir", stubs, "--no-site-packages",
         "--cache-dir", os.path.join(paths.ROOT, ".venv", "mypy-cache", board), *files],
        cwd=paths.ROOT, env=env, capture_output=True, text=True, timeout=300)
    # the stubs have errors of their own; only ours count
    theirs = (stubs, os.path.relpath(stubs, paths.ROOT))
    return [ln for ln in r.stdout.splitlines() if ": error:" in ln and not ln.startswith(theirs)]


@pytest.mark.parametrize("board", BOARDS)
def test_firmware_type_checks_against_the_board_stubs(board):
    errors = mypy(board, board_files())
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("board", BOARDS)
def test_the_check_catches_wrong_board_code(board):
    errors = mypy(board, [CANARY])
    lines = {int(e.split(":")[1]) for e in errors
             if e.startswith((CANARY, os.path.relpath(CANARY, paths.ROOT)))}
    assert {2, 7, 8} <= lines, errors


def test_no_module_the_boards_lack():
    bad = []
    for f in board_files():
        for node in ast.walk(ast.parse(open(f).read(), f)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            bad += ["%s:%d imports %s" % (os.path.relpath(f, paths.ROOT), node.lineno, n)
                    for n in names if n.split(".")[0] in NOT_ON_BOARDS]
    assert not bad, "\n".join(bad)


def test_ruff():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", paths.ROOT],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def firmware_imports():
    """{module: modules it imports}, imports inside functions included, and
    modules named by string ("firmware.x": loaded, drop)."""
    names = {}
    for f in glob.glob(os.path.join(paths.ROOT, "firmware", "**", "*.py"), recursive=True):
        rel = os.path.relpath(f, paths.ROOT)[:-3].replace(os.sep, ".")
        names[rel[:-9] if rel.endswith(".__init__") else rel] = f
    graph = {}
    for mod, f in names.items():
        deps = set()
        for n in ast.walk(ast.parse(open(f).read())):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("firmware"):
                subs = [n.module + "." + a.name for a in n.names if n.module + "." + a.name in names]
                deps.update(subs)
                if len(subs) < len(n.names):  # a name of the package itself
                    deps.add(n.module)
            elif isinstance(n, ast.Import):
                deps.update(a.name for a in n.names)
            elif isinstance(n, ast.Constant) and isinstance(n.value, str):
                deps.add(n.value)
        graph[mod] = sorted(d for d in deps if d in names and d != mod)
    return graph


def cycles(graph):
    """The strongly connected components of more than one module, sorted."""
    order, low, stack, out = {}, {}, [], []

    def visit(v):
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return sorted(out)


def test_no_import_cycle():
    """Imports point down the layers (docs/ARCHITECTURE.md): a rarely used
    half gets its adapter as an argument and never imports it back."""
    assert cycles(firmware_imports()) == []
    assert cycles({"a": ["b"], "b": ["a"], "c": ["a"]}) == [["a", "b"]]  # the check itself
