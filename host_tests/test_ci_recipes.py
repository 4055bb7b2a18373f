"""The CI recipes in docs/ci/ stay true: their commands are the same in both
files, and they run here as written (a fleet of four, the example POS suite
against it, the fleet stopped), except the `pip install` line: `understudy`
comes from this checkout instead of an index."""
import os
import shutil
import stat
import subprocess
import sys

from understudy import paths

CI = os.path.join(paths.ROOT, "docs", "ci")
INSTALL = 'pip install "$UNDERSTUDY" pytest'


def github_commands():
    lines = open(os.path.join(CI, "github-actions.yml")).read().splitlines()
    i = lines.index("      - name: POS suite against a fleet") + 2
    assert lines[i - 1].strip() == "run: |"
    out = []
    while lines[i].startswith("          "):
        out.append(lines[i].strip())
        i += 1
    return out


def gitlab_commands():
    lines = open(os.path.join(CI, "gitlab-ci.yml")).read().splitlines()
    i = lines.index("  script:") + 1
    out = []
    while lines[i].startswith("    - "):
        out.append(lines[i][6:])
        i += 1
    return out


def test_both_recipes_run_the_same_commands():
    assert github_commands() == gitlab_commands()
    assert github_commands()[0] == INSTALL


def test_the_recipe_runs_a_pos_suite_against_a_fleet(tmp_path):
    shim = tmp_path / "bin" / "understudy"
    shim.parent.mkdir()
    shim.write_text('#!/bin/sh\nPYTHONPATH="%s" exec "%s" -m understudy "$@"\n'
                    % (os.path.join(paths.ROOT, "tools"), sys.executable))
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "pos_tests").mkdir()
    shutil.copy(os.path.join(CI, "test_fleet_pos.py"), tmp_path / "pos_tests")
    script = "set -e\n" + "\n".join(c for c in github_commands() if c != INSTALL) + "\n"
    path = [str(shim.parent), os.path.dirname(sys.executable), os.environ["PATH"]]
    env = dict(os.environ, PATH=os.pathsep.join(path))
    r = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=180, stdin=subprocess.DEVNULL)
    log = (tmp_path / "fleet.log").read_text() if (tmp_path / "fleet.log").exists() else ""
    assert r.returncode == 0, r.stdout + r.stderr + log[-3000:]
    assert "4 passed" in r.stdout, r.stdout
    assert log.count("listening concert-ip") == 4 and "UST00004" in log, log[-3000:]
    assert not (tmp_path / "fleet.json").exists()  # the fleet stopped and said so
