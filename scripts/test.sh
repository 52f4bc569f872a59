#!/usr/bin/env bash
# Builds the library and every test, then runs them all (GPU tests skip themselves without a GPU).
# Usage: scripts/test.sh [build-dir]    (default: build). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
scripts/deps.sh --tests
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDSA_BUILD_TESTS=ON -DDSA_BUILD_BENCH=ON >/dev/null
cmake --build "$build" -j "$(nproc)"
cd "$build" && ctest --output-on-failure -j 2
