"""`pip install bindings/python` works, and an installed package finds a library placed next to it."""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dsa_indexer

PACKAGE_SOURCE = Path(__file__).resolve().parents[1]


def test_pip_install_then_library_next_to_the_package(tmp_path):
    source = tmp_path / "src"  # a copy, so that the build leaves nothing in the source tree
    shutil.copytree(PACKAGE_SOURCE, source, ignore=shutil.ignore_patterns("tests", "__pycache__", "*.egg-info",
                                                                          "build"))
    target = tmp_path / "site"
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--target", str(target), str(source)]
    if all(importlib.util.find_spec(name) is not None for name in ("setuptools", "wheel")):
        command[4:4] = ["--no-build-isolation", "--no-index"]  # build offline with the setuptools we have
    env = dict(os.environ, PIP_ROOT_USER_ACTION="ignore")
    subprocess.run(command, check=True, env=env)
    installed = target / "dsa_indexer"
    assert (installed / "__init__.py").exists() and (installed / "py.typed").exists()

    shutil.copy(dsa_indexer.library_path(), installed / "libdsa_indexer.so.0")
    env.pop(dsa_indexer.LIBRARY_ENV_VAR, None)
    env["PYTHONPATH"] = str(target)
    env["LD_LIBRARY_PATH"] = ""
    code = "import dsa_indexer as d; print(d.version(), d.library_path())"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                            check=True)
    version, path = result.stdout.split(") ")
    assert version + ")" == str(dsa_indexer.version())
    assert Path(path.strip()) == installed / "libdsa_indexer.so.0"
