#!/bin/sh
# Installs the build tree into a fresh prefix, then builds the C example (and the C++ one, which needs the
# installed dsa_indexer.hpp) with nothing but `pkg-config --cflags --libs dsa_indexer`, and runs both.
# pkg-config is installed with apt-get when missing and running as root (safe to re-run); otherwise the
# script fails, saying so. Temporary directories are removed whatever happens.
# usage: build_with_pkg_config.sh CMAKE BUILD_DIR SOURCE_DIR C_COMPILER CXX_COMPILER EXPECTED_VERSION
set -eu
cmake=$1
build_dir=$2
source_dir=$3
c_compiler=$4
cxx_compiler=$5
expected_version=$6
work=$(mktemp -d "${TMPDIR:-/tmp}/dsa_pkg_config.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

fail() {
    echo "pkg_config_consumer: FAILED: $*"
    exit 1
}

if ! command -v pkg-config >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "pkg_config_consumer: installing pkg-config"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pkg-config >/dev/null ||
            fail "apt-get install pkg-config did not work"
    else
        fail "pkg-config is not installed (and this is not root with apt-get to install it)"
    fi
fi

"$cmake" --install "$build_dir" --prefix "$work/prefix" > "$work/install.log" 2>&1 ||
    { cat "$work/install.log"; fail "cmake --install"; }
pc_file=$(find "$work/prefix" -name dsa_indexer.pc | head -n 1)
[ -n "$pc_file" ] || fail "no dsa_indexer.pc under $work/prefix"
PKG_CONFIG_PATH=$(dirname "$pc_file")
export PKG_CONFIG_PATH

version=$(pkg-config --modversion dsa_indexer) || fail "pkg-config cannot read $pc_file"
[ "$version" = "$expected_version" ] || fail "dsa_indexer.pc says version $version, the build is $expected_version"
libdir=$(pkg-config --variable=libdir dsa_indexer)
case $libdir in
    "$work/prefix"/*) ;;
    *) fail "libdir '$libdir' is not under the prefix installed to ($work/prefix)" ;;
esac
flags=$(pkg-config --cflags --libs dsa_indexer)
echo "pkg_config_consumer: dsa_indexer $version: $flags"

# shellcheck disable=SC2086
"$c_compiler" -std=c99 -Wall -Wextra -Werror -pedantic -o "$work/decode_c" "$source_dir/examples/c/decode.c" $flags ||
    fail "compiling examples/c/decode.c"
# shellcheck disable=SC2086
"$cxx_compiler" -std=c++17 -Wall -Wextra -Werror -pedantic -o "$work/decode_cpp" "$source_dir/examples/cpp/decode.cpp" $flags ||
    fail "compiling examples/cpp/decode.cpp"
# Without LD_LIBRARY_PATH: the .pc file's rpath is what finds the installed library (as the README says).
env -u LD_LIBRARY_PATH "$work/decode_c" || fail "running the C example (without LD_LIBRARY_PATH: the rpath)"
env -u LD_LIBRARY_PATH "$work/decode_cpp" || fail "running the C++ example (without LD_LIBRARY_PATH: the rpath)"
# The README's plain-cc recipe: -L and -Wl,-rpath to the installed lib folder.
"$c_compiler" -std=c99 -o "$work/decode_plain" "$source_dir/examples/c/decode.c" -I"$(pkg-config --variable=includedir dsa_indexer)" \
    -L"$libdir" -Wl,-rpath,"$libdir" -ldsa_indexer || fail "compiling with the README's plain cc recipe"
env -u LD_LIBRARY_PATH "$work/decode_plain" > /dev/null || fail "running the plain cc build"
echo "pkg_config_consumer: installed package found through pkg-config, examples built and ran"
