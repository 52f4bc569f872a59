"""Finding the library, checking its version, and the list of entry points."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import dsa_indexer
from dsa_indexer import _library

REPO = Path(__file__).resolve().parents[3]


def test_version_matches_the_header_this_package_mirrors():
    major, minor, _ = dsa_indexer.version()
    assert (major, minor) >= dsa_indexer.HEADER_VERSION[:2] and major == dsa_indexer.HEADER_VERSION[0]
    assert dsa_indexer.__version__ == "%d.%d.%d" % dsa_indexer.HEADER_VERSION


def test_library_comes_from_the_environment_variable():
    expected = os.environ.get(dsa_indexer.LIBRARY_ENV_VAR)
    if not expected:
        pytest.skip(f"{dsa_indexer.LIBRARY_ENV_VAR} is not set")
    assert dsa_indexer.library_path() == expected


def test_check_version_accepts_same_major_and_newer_minor_only():
    assert dsa_indexer.HEADER_VERSION[:2] == (0, 2)  # the package mirrors the 0.2 structs
    _library.check_version(200)      # 0.2.0: ours
    _library.check_version(207)      # 0.2.7: a patch release
    _library.check_version(301)      # 0.3.1: newer minor, same ABI (structs only grow, struct_size tells)
    with pytest.raises(dsa_indexer.LibraryVersionError, match="1.2.0"):
        _library.check_version(10200)  # another major: another ABI
    with pytest.raises(dsa_indexer.LibraryVersionError, match="0.1.0"):
        _library.check_version(100)  # 0.1.x: older than the structs we mirror (it would refuse our sizes)
    with pytest.raises(dsa_indexer.LibraryVersionError):
        _library.check_version(5)    # 0.0.5


def test_a_missing_file_is_a_clear_error():
    with pytest.raises(dsa_indexer.LibraryNotFoundError, match="no-such-lib"):
        dsa_indexer.load_library("/nonexistent/no-such-lib.so")
    assert dsa_indexer.version()  # the library loaded before is still in use


def test_a_wrong_environment_variable_is_not_silently_ignored():
    env = dict(os.environ, DSA_INDEXER_LIBRARY="/nonexistent/libdsa_indexer.so")
    code = ("import dsa_indexer\n"
            "try:\n    dsa_indexer.version()\nexcept dsa_indexer.LibraryNotFoundError as e:\n"
            "    print('not found:', e)\nelse:\n    print('loaded')\n")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "not found:" in result.stdout and "DSA_INDEXER_LIBRARY" in result.stdout


def test_every_exported_symbol_has_a_prototype():
    exported = [line.strip() for line in (REPO / "abi" / "symbols.txt").read_text().splitlines()]
    functions = {name for name in exported if name.startswith("dsa_")}
    assert functions == set(_library._PROTOTYPES)
