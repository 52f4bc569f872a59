#!/usr/bin/env bash
# Fuzzes the public API on the CPU backend with libFuzzer, ASan and UBSan (tests/fuzz/fuzz_topk.cpp).
# Usage: scripts/fuzz.sh [seconds] [build-dir]        (defaults: 600 s, build-fuzz)
#   DSA_FUZZ_MERGE=1   afterwards, merge the inputs that add coverage into tests/fuzz/corpus (to commit)
# Starts from tests/fuzz/corpus and tests/fuzz/regressions; new inputs go to <build-dir>/corpus, so the
# committed corpus changes only when merging. Any crash, leak, sanitizer report, hang (> 30 s) or model
# mismatch fails the run and leaves the input in <build-dir>/artifacts/. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
build=${2:-build-fuzz}
scripts/deps.sh --tests --reliability

mkdir -p "$build"
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDSA_FUZZ=ON -DDSA_WITH_CUDA=OFF \
  -DDSA_BUILD_BENCH=OFF -DDSA_BUILD_TESTS=ON >"$build/configure.log" 2>&1 || { tail -20 "$build/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" --target dsa_fuzz_topk >"$build/fuzz-build.log" 2>&1 ||
  { grep -E "error" "$build/fuzz-build.log" | head -20; exit 1; }

mkdir -p "$build/corpus" "$build/artifacts"
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
log="$build/fuzz.log"
status=0
"$build/tests/fuzz/dsa_fuzz_topk" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$build/artifacts/" "$build/corpus" tests/fuzz/corpus tests/fuzz/regressions >"$log" 2>&1 || status=$?

executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
coverage=$(grep -oE "cov: [0-9]+ ft: [0-9]+ corp: [0-9]+" "$log" | tail -1 || true)
if [ "$status" -ne 0 ]; then
  grep -E "FUZZ FINDING|ERROR: |runtime error|SUMMARY" "$log" | head -20 || true
  tail -5 "$log"
  echo "fuzz: FAILED after ${executions:-?} executions; input saved in $build/artifacts/ (log: $log)"
  exit "$status"
fi
echo "fuzz: ${executions} executions in ${seconds} s (${rate}/s), ${coverage}, $(ls "$build/corpus" | wc -l) new inputs," \
  "0 crashes, 0 leaks, 0 sanitizer reports"

if [ "${DSA_FUZZ_MERGE:-0}" = 1 ]; then
  before=$(ls tests/fuzz/corpus | wc -l)
  "$build/tests/fuzz/dsa_fuzz_topk" -merge=1 tests/fuzz/corpus "$build/corpus" >"$build/merge.log" 2>&1
  echo "fuzz: merged into tests/fuzz/corpus: $before -> $(ls tests/fuzz/corpus | wc -l) inputs"
fi
