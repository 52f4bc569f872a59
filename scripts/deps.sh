#!/usr/bin/env bash
# Installs what building and testing need and the machine lacks (Debian packages, when root). Safe to re-run.
#   scripts/deps.sh                 build tools
#   scripts/deps.sh --tests         + Catch2
#   scripts/deps.sh --reliability   + clang with its libFuzzer/sanitizer runtimes, valgrind (scripts/test.sh's
#                                   sanitizer, valgrind and fuzz stages; gcc's sanitizer runtimes come with g++)
# Options combine: scripts/deps.sh --tests --reliability
set -euo pipefail
tests=0 reliability=0
for arg in "$@"; do
  case "$arg" in
    --tests) tests=1 ;;
    --reliability) reliability=1 ;;
    *) echo "deps: unknown option $arg" >&2; exit 2 ;;
  esac
done

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "$@" >/dev/null
  else
    echo "deps: please install: $*" >&2
    exit 1
  fi
}

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v nm >/dev/null || need+=(binutils)
if [ "$tests" = 1 ]; then
  have_catch2=0
  for d in /usr/include /usr/local/include; do
    if [ -f "$d/catch2/catch.hpp" ] || [ -f "$d/catch2/catch_test_macros.hpp" ]; then have_catch2=1; fi
  done
  [ "$have_catch2" = 1 ] || need+=(catch2)
fi
if [ "$reliability" = 1 ]; then
  command -v clang++ >/dev/null || need+=(clang)
  command -v valgrind >/dev/null || need+=(valgrind)
fi
# Nothing is downloaded (no apt-get update) when everything is already there: the tests then run offline.
if [ ${#need[@]} -eq 0 ]; then echo "deps: the packages needed are installed"; else apt_install "${need[@]}"; fi

# Debian ships clang's libFuzzer and sanitizer runtimes apart from clang (libclang-rt-N-dev): link a
# minimal fuzz target to see whether they are there.
if [ "$reliability" = 1 ]; then
  probe=$(mktemp -d)
  trap 'rm -rf "$probe"' EXIT
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' >"$probe/f.cpp"
  if ! clang++ -fsanitize=fuzzer,address,undefined "$probe/f.cpp" -o "$probe/f" 2>/dev/null; then
    major=$(clang++ -dumpversion | cut -d. -f1)
    if apt-cache show "libclang-rt-$major-dev" >/dev/null 2>&1; then apt_install "libclang-rt-$major-dev"
    else apt_install libclang-rt-dev; fi
    clang++ -fsanitize=fuzzer,address,undefined "$probe/f.cpp" -o "$probe/f" ||
      { echo "deps: clang still cannot link -fsanitize=fuzzer" >&2; exit 1; }
  fi
fi
