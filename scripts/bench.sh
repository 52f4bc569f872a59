#!/usr/bin/env bash
# Builds the library and dsa_bench, then runs the benchmark (GPU when one is usable, else the CPU backend:
# dsa_bench's first line says which backend runs and why, and a CPU run prints its throughput).
# Usage: scripts/bench.sh [dsa_bench arguments...]. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release -DDSA_BUILD_TESTS=OFF -DDSA_BUILD_BENCH=ON >/dev/null
cmake --build build-bench -j "$(nproc)" --target dsa_bench
build-bench/bench/dsa_bench "$@"
