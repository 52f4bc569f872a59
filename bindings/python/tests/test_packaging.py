"""Packaging: the versions agree, and a package with the library inside it (as the wheel ships it) loads that
copy. The wheel itself is built, installed into a fresh venv and run by the ctest python_wheel
(bindings/python/check_wheel.sh)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dsa_indexer

PACKAGE_SOURCE = Path(__file__).resolve().parents[1] / "dsa_indexer"
REPOSITORY = Path(__file__).resolve().parents[3]


def header_version():
    text = (REPOSITORY / "include" / "dsa_indexer.h").read_text()
    return tuple(int(re.search(rf"#define DSA_VERSION_{part} (\d+)", text).group(1))
                 for part in ("MAJOR", "MINOR", "PATCH"))


def test_versions_agree():
    pyproject = (REPOSITORY / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert version == "%d.%d.%d" % header_version() == dsa_indexer.__version__
    assert dsa_indexer.HEADER_VERSION == header_version()


def test_library_inside_the_package_is_found_first(tmp_path):
    installed = tmp_path / "site" / "dsa_indexer"
    shutil.copytree(PACKAGE_SOURCE, installed, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(dsa_indexer.library_path(), installed / "libdsa_indexer.so.0")
    env = dict(os.environ, PYTHONPATH=str(installed.parent), LD_LIBRARY_PATH="", PYTHONDONTWRITEBYTECODE="1")
    env.pop(dsa_indexer.LIBRARY_ENV_VAR, None)
    code = "import dsa_indexer as d; print(d.version(), d.library_path())"
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                            check=True)
    version, path = result.stdout.split(") ")
    assert version + ")" == str(dsa_indexer.version())
    assert Path(path.strip()) == installed / "libdsa_indexer.so.0"
