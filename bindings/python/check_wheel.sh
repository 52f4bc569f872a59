#!/bin/sh
# The wheel as a user gets it (issue 14): `pip wheel` of the repository (scikit-build-core running this
# project's CMake, CPU backend forced so that it builds in about a minute), the wheel's name and contents
# checked, then installed into a fresh venv and used from there: the library must load from inside the
# installed package (no DSA_INDEXER_LIBRARY, no LD_LIBRARY_PATH, the source tree not on the path), and
# examples/python/numpy_decode.py must pass. Offline: --no-build-isolation with the scikit-build-core of
# DEPS_DIR (ensure_test_deps.sh), the wheel installed with --no-index; numpy comes from DEPS_DIR or PYTHON's own.
# usage: check_wheel.sh PYTHON SOURCE_DIR DEPS_DIR CMAKE_BUILD_DIR
#   CMAKE_BUILD_DIR keeps scikit-build-core's CMake build between runs (incremental rebuilds).
set -eu
python=$1
source_dir=$2
deps_dir=$3
wheel_build_dir=$4
work=$(mktemp -d "${TMPDIR:-/tmp}/dsa_wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

fail() {
    echo "python_wheel: FAILED: $*"
    exit 1
}

start=$(date +%s)
# The repository's own cmake is the one CMakeLists.txt was tested with; scikit-build-core finds it on PATH.
PYTHONPATH="$deps_dir${PYTHONPATH:+:$PYTHONPATH}" DSA_WITH_CUDA=OFF PIP_ROOT_USER_ACTION=ignore \
    "$python" -m pip wheel --no-deps --no-build-isolation --no-index --disable-pip-version-check \
    --config-settings=build-dir="$wheel_build_dir" -w "$work/dist" "$source_dir" > "$work/wheel.log" 2>&1 ||
    { tail -40 "$work/wheel.log"; fail "pip wheel (log above)"; }
set -- "$work"/dist/dsa_indexer-*.whl
[ $# = 1 ] && [ -f "$1" ] || fail "expected one dsa_indexer wheel in $work/dist, got: $(ls "$work/dist")"
wheel=$1
name=$(basename "$wheel")
echo "python_wheel: built $name in $(($(date +%s) - start)) s"
case $name in
    dsa_indexer-*-py3-none-linux_*.whl) ;;
    *) fail "$name: expected a pure-Python-API wheel tagged py3-none-linux_<arch>" ;;
esac

# Contents: the package's modules and exactly one library, as dsa_indexer/libdsa_indexer.so.0; nothing else
# of the CMake install (headers, CMake config, pkg-config) leaks into site-packages.
"$python" - "$wheel" <<'PY' || fail "wheel contents"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libraries = [n for n in names if ".so" in n]
outside = [n for n in names if not n.startswith(("dsa_indexer/", "dsa_indexer-"))]
required = ["dsa_indexer/__init__.py", "dsa_indexer/_library.py", "dsa_indexer/py.typed", "dsa_indexer/torch.py"]
missing = [n for n in required if n not in names]
print("python_wheel: contents:", " ".join(sorted(n for n in names if not n.endswith(".py"))))
if libraries != ["dsa_indexer/libdsa_indexer.so.0"] or outside or missing:
    sys.exit(f"python_wheel: libraries {libraries}, files outside the package {outside}, missing {missing}")
PY

"$python" -m venv --system-site-packages "$work/venv" > "$work/venv.log" 2>&1 ||
    { cat "$work/venv.log"; fail "python -m venv"; }
PIP_ROOT_USER_ACTION=ignore "$work/venv/bin/python" -m pip install --quiet --no-index --no-deps \
    --disable-pip-version-check "$wheel" || fail "pip install of the wheel into a fresh venv"

# From a neutral folder, with nothing pointing at a library or at the source tree.
cd "$work"
unset DSA_INDEXER_LIBRARY
export LD_LIBRARY_PATH=""
# numpy comes from DEPS_DIR, or from where PYTHON finds it: a PYTHON that is itself a venv does not pass its
# own packages on to --system-site-packages. Neither folder may hold a dsa_indexer (checked below).
numpy_dir=$("$python" -c "import os, numpy; print(os.path.dirname(os.path.dirname(numpy.__file__)))" 2>/dev/null) ||
    numpy_dir=""
export PYTHONPATH="$deps_dir${numpy_dir:+:$numpy_dir}"
export PYTHONDONTWRITEBYTECODE=1
site=$("$work/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
loaded=$("$work/venv/bin/python" -c "import dsa_indexer as d; print(d.__file__); print(d.library_path())") ||
    fail "import dsa_indexer from the venv"
echo "$loaded" | sed 's/^/python_wheel: /'
expected_lib="$site/dsa_indexer/libdsa_indexer.so.0"
[ "$(echo "$loaded" | sed -n 1p)" = "$site/dsa_indexer/__init__.py" ] || fail "dsa_indexer was not imported from the venv"
[ "$(echo "$loaded" | sed -n 2p)" = "$expected_lib" ] || fail "the library was not loaded from the package ($expected_lib)"
"$work/venv/bin/python" "$source_dir/examples/python/numpy_decode.py" || fail "examples/python/numpy_decode.py"
# DSA_INDEXER_LIBRARY still wins over the copy in the package.
DSA_INDEXER_LIBRARY=/nonexistent/libdsa_indexer.so.0 "$work/venv/bin/python" -c "
import dsa_indexer as d
try:
    d.load_library()
except d.LibraryNotFoundError as e:
    assert '/nonexistent/libdsa_indexer.so.0' in str(e), e
else:
    raise SystemExit('DSA_INDEXER_LIBRARY did not override the library in the package')
" || fail "DSA_INDEXER_LIBRARY override"
echo "python_wheel: OK: the wheel installs into a fresh venv and its library runs the numpy example"
