#!/bin/sh
# Installs the build tree into a fresh prefix, then configures, builds and runs examples/cmake-consumer
# against that prefix only (find_package(dsa_indexer 0.1) through CMAKE_PREFIX_PATH). Temporary
# directories are removed whatever happens.
# usage: install_consumer.sh CMAKE BUILD_DIR CONSUMER_SOURCE_DIR GENERATOR C_COMPILER
set -eu
cmake=$1
build_dir=$2
consumer_src=$3
generator=$4
c_compiler=$5
work=$(mktemp -d "${TMPDIR:-/tmp}/dsa_install_consumer.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

run_logged() {  # runs a step quietly, printing its output only when it fails
    log=$work/step.log
    if ! "$@" > "$log" 2>&1; then
        cat "$log"
        echo "install_consumer: failed: $*"
        exit 1
    fi
}

run_logged "$cmake" --install "$build_dir" --prefix "$work/prefix"
run_logged "$cmake" -S "$consumer_src" -B "$work/build" -G "$generator" -DCMAKE_C_COMPILER="$c_compiler" \
    -DCMAKE_PREFIX_PATH="$work/prefix" -DCMAKE_BUILD_TYPE=Release
# The package must have come from the fresh prefix, not from the build tree or the system.
found=$(sed -n 's/^dsa_indexer_DIR:PATH=//p' "$work/build/CMakeCache.txt")
case $found in
    "$work/prefix"/*) ;;
    *) echo "install_consumer: dsa_indexer was found in '$found', not under $work/prefix"; exit 1 ;;
esac
run_logged "$cmake" --build "$work/build"
"$work/build/dsa_consumer" > "$work/consumer.out" ||
    { cat "$work/consumer.out"; echo "install_consumer: the consumer failed"; exit 1; }
cat "$work/consumer.out"
# The version as people write it (0.2.0), not DSA_VERSION_NUMBER (200).
grep -Eq '^dsa_indexer [0-9]+\.[0-9]+\.[0-9]+: ' "$work/consumer.out" ||
    { echo "install_consumer: the consumer did not print the version as MAJOR.MINOR.PATCH"; exit 1; }
echo "install_consumer: installed package found, consumer built and ran"
