"""The POS example of docs/TESTING.md under pytest-xdist: `pytest -n 4`
runs four copies of it, and four terminals (own ports, state dirs, ptys,
processes) serve the four workers, with no configuration."""
import json
import os
import re
import subprocess
import sys

from understudy import paths, testkit

CONFTEST = '''
import json, os
import pytest

@pytest.fixture(autouse=True)
def record(request):
    yield
    t = request.node.funcargs.get("terminal")
    if t is not None:
        with open(os.environ["RECORD"], "a") as f:
            f.write(json.dumps({"worker": os.environ.get("PYTEST_XDIST_WORKER"), "pid": t.fw.proc.pid,
                                "concert": t.concert[1], "web": t.web, "serial": t.concert_serial,
                                "state": t.state_dir}) + "\\n")
'''


def test_four_workers_get_four_terminals(tmp_path):
    doc = open(os.path.join(paths.ROOT, "docs", "TESTING.md")).read()
    example = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert "def test_register_recovers_a_lost_answer(terminal)" in example
    for i in range(4):
        (tmp_path / ("test_pos_%d.py" % i)).write_text(example)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    record = tmp_path / "record.jsonl"
    low, high = testkit.port_range()  # this worker's slice: the inner workers split it
    env = dict(os.environ, RECORD=str(record), PYTHONPATH=os.path.join(paths.ROOT, "tools"),
               UNDERSTUDY_PORTS="%d-%d" % (low, high))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "4", "-p", "no:cacheprovider",
                        "-p", "understudy.pytest_plugin", "--rootdir", str(tmp_path), str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "4 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    runs = [json.loads(ln) for ln in record.read_text().splitlines()]
    assert sorted(x["worker"] for x in runs) == ["gw0", "gw1", "gw2", "gw3"]
    for key in ("pid", "concert", "web", "serial", "state"):
        assert len({x[key] for x in runs}) == 4, (key, runs)
    span = (high + 1 - low) // 4
    for x in runs:  # each worker's ports from its own quarter of this worker's slice
        n = int(x["worker"][2:])
        assert low + span * n <= x["concert"] < low + span * (n + 1), x
