#!/usr/bin/env bash
# Installs what building and testing need and the machine lacks (Debian packages, when root). Safe to re-run.
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
command -v nm >/dev/null || need+=(binutils)
if [ "${1:-}" = "--tests" ]; then
  have_catch2=0
  for d in /usr/include /usr/local/include; do
    if [ -f "$d/catch2/catch.hpp" ] || [ -f "$d/catch2/catch_test_macros.hpp" ]; then have_catch2=1; fi
  done
  [ "$have_catch2" = 1 ] || need+=(catch2)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "deps: please install: ${need[*]}" >&2
  exit 1
fi
