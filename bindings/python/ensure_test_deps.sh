#!/bin/sh
# Makes the Python modules the tests need importable, installing the missing ones with pip into DEPS_DIR
# (a private directory, put on PYTHONPATH by the tests): nothing outside it changes, so it is safe to
# re-run, works as root and on interpreters that refuse system-wide pip installs. Fails loudly when an
# install does not work: a test that needs numpy must never pass for lack of it.
# usage: ensure_test_deps.sh PYTHON DEPS_DIR MODULE...
set -eu
python=$1
deps_dir=$2
shift 2
missing=""
for module in "$@"; do
    if ! PYTHONPATH="$deps_dir${PYTHONPATH:+:$PYTHONPATH}" "$python" -c "import $module" 2>/dev/null; then
        missing="$missing $module"
    fi
done
if [ -z "$missing" ]; then
    echo "ensure_test_deps: $* importable"
    exit 0
fi
echo "ensure_test_deps: installing$missing into $deps_dir"
mkdir -p "$deps_dir"
# shellcheck disable=SC2086
if ! PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --target "$deps_dir" $missing; then
    echo "ensure_test_deps: FAILED to install$missing with '$python -m pip'; install them for $python by hand" >&2
    exit 1
fi
for module in $missing; do
    if ! PYTHONPATH="$deps_dir${PYTHONPATH:+:$PYTHONPATH}" "$python" -c "import $module"; then
        echo "ensure_test_deps: FAILED: $module still not importable after installing it" >&2
        exit 1
    fi
done
echo "ensure_test_deps: installed$missing"
