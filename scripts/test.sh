#!/usr/bin/env bash
# The README's test command (CI runs exactly this, through .ci/run). First the layering check
# (scripts/check-layers.sh: no include against the layers of docs/ARCHITECTURE.md). Then builds the library
# and every test and runs them all (GPU tests skip themselves without a GPU; valgrind memcheck of the C test is the ctest
# c_api_valgrind), then the reliability stages of tests/RELIABILITY.md, each CPU-only in its own build dir:
#   asan   <build>-asan, gcc, ASan + UBSan: cpu_tests, concurrency, sharding_tests, c_api_test, fuzz_corpus
#   tsan   <build>-tsan, gcc, TSan:         the same
#   fuzz   <build>-fuzz, clang, libFuzzer + ASan + UBSan: DSA_FUZZ_SECONDS (default 60) from tests/fuzz/corpus
# DSA_TEST_QUICK=1 skips the three reliability stages (a developer's quick run; CI runs everything).
# Every stage runs even when one before it failed; any failure fails the run. Stage times print last.
# Usage: scripts/test.sh [build-dir]    (default: build). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
quick=${DSA_TEST_QUICK:-0}
if [ "$quick" = 1 ]; then scripts/deps.sh --tests; else scripts/deps.sh --tests --reliability; fi

# Sanitizer findings end the process with a non-zero status, which fails the test that met them.
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

main_stage() {
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDSA_BUILD_TESTS=ON -DDSA_BUILD_BENCH=ON >/dev/null &&
    cmake --build "$build" -j "$(nproc)" &&
    (cd "$build" && ctest --output-on-failure -j 2)
}

# sanitizer_stage <dir> <compiler flags>: a CPU-only build whose library and tests all carry the flags
# (build type None: the flags alone; -O1 -g1 builds twice as fast as -O2 -g, for line-level reports).
# cpu_robustness (a child under an address-space limit) is not registered there: ASan reserves terabytes
# of shadow memory and TSan large fixed ranges, which no such limit allows (tests/CMakeLists.txt).
sanitizer_stage() {
  local dir=$1 flags=$2
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=None -DDSA_WITH_CUDA=OFF -DDSA_BUILD_BENCH=OFF -DDSA_BUILD_TESTS=ON \
    -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    >"$dir.configure.log" 2>&1 || { tail -20 "$dir.configure.log"; return 1; }
  cmake --build "$dir" -j "$(nproc)" --target dsa_cpu_tests dsa_concurrency_tests dsa_sharding_tests c_api_test dsa_fuzz_replay \
    >"$dir/build.log" 2>&1 || { grep -E "error|Error" "$dir/build.log" | head -30; return 1; }
  (cd "$dir" && ctest --output-on-failure -R '^(cpu_tests|concurrency|sharding_tests|c_api_test|fuzz_corpus)$')
}

stages=() failed=0
stage() {  # stage <name> <command...>: runs it, records its time and result
  local name=$1 start=$SECONDS
  shift
  echo "==== $name"
  if "$@"; then
    stages+=("$(printf '%-6s passed  %4d s' "$name" $((SECONDS - start)))")
  else
    stages+=("$(printf '%-6s FAILED  %4d s' "$name" $((SECONDS - start)))")
    failed=1
  fi
}

stage layers scripts/check-layers.sh
stage main main_stage
if [ "$quick" != 1 ]; then
  stage asan sanitizer_stage "$build-asan" \
    "-O1 -g1 -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer"
  stage tsan sanitizer_stage "$build-tsan" "-O1 -g1 -fsanitize=thread -fno-omit-frame-pointer"
  stage fuzz scripts/fuzz.sh "${DSA_FUZZ_SECONDS:-60}" "$build-fuzz"
fi

echo "==== stages"
printf '%s\n' "${stages[@]}"
exit $failed
