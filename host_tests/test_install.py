"""`pip install .` outside the checkout: the command and the pytest plugin
work in a fresh venv, with the firmware that travels inside the package.

The wheel is built from a copy of what pyproject.toml names (so the checkout
stays clean and nothing else is needed), installed with its pinned
dependencies (pip's cache makes this a few seconds), and used from a
directory that knows nothing of this repository: the POS example of
docs/TESTING.md runs there through the plugin's entry point, with no
conftest.py.
"""
import os
import shutil
import subprocess
import sys

from understudy import paths

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, cwd, env=None, timeout=300):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, "%s\n%s%s" % (" ".join(cmd), r.stdout[-3000:], r.stderr[-3000:])
    return r.stdout


def test_pip_install_gives_the_command_and_the_plugin(tmp_path):
    src = tmp_path / "src"
    for d in ("lib", "firmware", "www", "tools/understudy"):
        shutil.copytree(os.path.join(paths.ROOT, d), src / d,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for f in ("pyproject.toml", "README.md", "boot.py", "main.py"):
        shutil.copy(os.path.join(paths.ROOT, f), src / f)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)], tmp_path)
    wheel = [p for p in os.listdir(tmp_path) if p.endswith(".whl")]
    assert len(wheel) == 1, wheel
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
    py = str(venv / "bin" / "python")
    pins = [ln.strip() for ln in open(os.path.join(paths.ROOT, "requirements.txt"))
            if ln.startswith(("pytest==", "pytest-timeout=="))]
    run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--disable-pip-version-check",
         str(tmp_path / wheel[0])] + pins, tmp_path)

    elsewhere = tmp_path / "my-pos"
    elsewhere.mkdir()
    env = {"PATH": str(venv / "bin") + os.pathsep + os.environ["PATH"], "HOME": str(tmp_path),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    assert run(["understudy", "--version"], elsewhere, env).strip() == "understudy 0.1.0"
    assert "usage: understudy ecr" in run([py, "-m", "understudy", "ecr", "--help"], elsewhere, env)
    where = run([py, "-c", "import understudy; print(understudy.ROOT, understudy.INSTALLED)"], elsewhere, env)
    assert where.split()[1] == "True" and not where.startswith(paths.ROOT), where
    shutil.copy(os.path.join(HERE, "test_pos_example.py"), elsewhere / "test_pos_example.py")
    out = run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_pos_example.py"], elsewhere, env)
    assert "1 passed" in out, out
    assert os.path.exists(tmp_path / "cache" / "understudy" / "0.1.0" / "mpy" / "main.py")
