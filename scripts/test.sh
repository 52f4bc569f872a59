#!/usr/bin/env bash
# The README's test command (CI runs exactly this, through .ci/run). First the layering check
# (scripts/check-layers.sh: no include against the layers of docs/ARCHITECTURE.md). Then builds the library
# and every test and runs them all (GPU tests skip themselves without a GPU; valgrind memcheck of the C test is the ctest
# c_api_valgrind), then the reliability stages of tests/RELIABILITY.md, each CPU-only in its own build dir:
#   asan   <build>-asan, gcc, ASan + UBSan: cpu_tests, concurrency, sharding_tests, c_api_test, fuzz_corpus
#   tsan   <build>-tsan, gcc, TSan:         the same
#   fuzz   <build>-fuzz, clang, libFuzzer + ASan + UBSan: DSA_FUZZ_SECONDS (default 60) from tests/fuzz/corpus
# DSA_TEST_QUICK=1 skips the three reliability stages (a developer's quick run; CI runs everything).
# Every stage runs even when one before it failed; any failure fails the run. Each stage prints a line when
# it starts (what it does, about how long it takes, where its log is) and one when it ends (its time);
# build output goes to logs inside the build folders, test output to the terminal; all stage times print last.
# What is missing is installed first: Debian packages by scripts/deps.sh (Catch2; clang, valgrind for the
# reliability stages), Python modules by ctest's python_deps (pytest, numpy, scikit-build-core, with pip
# into <build>/python-deps). Once they are there, nothing is downloaded: the run works offline.
# Usage: scripts/test.sh [build-dir]    (default: build). Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
quick=${DSA_TEST_QUICK:-0}
if [ "$quick" = 1 ]; then
  echo "test.sh: DSA_TEST_QUICK=1: the main build and its tests only (about 5 minutes on 2 cores)"
else
  echo "test.sh: the full run takes about 15 minutes on 2 cores: main build and tests (~5 min), then ASan+UBSan" \
    "(~5 min), TSan (~3 min) and ${DSA_FUZZ_SECONDS:-60} s of fuzzing (~2 min); DSA_TEST_QUICK=1 skips the last three"
fi
if [ "$quick" = 1 ]; then scripts/deps.sh --tests; else scripts/deps.sh --tests --reliability; fi

# Sanitizer findings end the process with a non-zero status, which fails the test that met them.
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

main_stage() {
  mkdir -p "$build"
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DDSA_BUILD_TESTS=ON -DDSA_BUILD_BENCH=ON \
    >"$build/configure.log" 2>&1 || { tail -20 "$build/configure.log"; return 1; }
  echo "  configured ($(grep -m1 -o 'dsa_indexer [0-9.]*: CUDA.*' "$build/configure.log")); building (log: $build/build.log)"
  cmake --build "$build" -j "$(nproc)" >"$build/build.log" 2>&1 ||
    { grep -E "error|Error" "$build/build.log" | head -30; return 1; }
  echo "  built; running ctest (log: $build/Testing/Temporary/LastTest.log)"
  (cd "$build" && ctest --output-on-failure -j 2)
}

# sanitizer_stage <dir> <compiler flags>: a CPU-only build whose library and tests all carry the flags
# (build type None: the flags alone; -O1 -g1 builds twice as fast as -O2 -g, for line-level reports).
# cpu_robustness (a child under an address-space limit) is not registered there: ASan reserves terabytes
# of shadow memory and TSan large fixed ranges, which no such limit allows (tests/CMakeLists.txt).
sanitizer_stage() {
  local dir=$1 flags=$2
  mkdir -p "$dir"
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=None -DDSA_WITH_CUDA=OFF -DDSA_BUILD_BENCH=OFF -DDSA_BUILD_TESTS=ON \
    -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    >"$dir/configure.log" 2>&1 || { tail -20 "$dir/configure.log"; return 1; }
  echo "  building (log: $dir/build.log)"
  cmake --build "$dir" -j "$(nproc)" --target dsa_cpu_tests dsa_concurrency_tests dsa_sharding_tests c_api_test dsa_fuzz_replay \
    >"$dir/build.log" 2>&1 || { grep -E "error|Error" "$dir/build.log" | head -30; return 1; }
  echo "  built in $((SECONDS - stage_start)) s; running ctest (log: $dir/Testing/Temporary/LastTest.log)"
  (cd "$dir" && ctest --output-on-failure -R '^(cpu_tests|concurrency|sharding_tests|c_api_test|fuzz_corpus)$')
}

stages=() failed=0 stage_start=0 run_start=$SECONDS
stage() {  # stage <name> <what it does> <command...>: runs it, prints and records its time and result
  local name=$1 what=$2 result
  shift 2
  stage_start=$SECONDS
  echo "==== $name: $what (at $((SECONDS - run_start)) s of the run)"
  if "$@"; then result=passed; else result=FAILED; failed=1; fi
  echo "==== $name $result in $((SECONDS - stage_start)) s"
  stages+=("$(printf '%-6s %s  %4d s' "$name" "$result" $((SECONDS - stage_start)))")
}

stage layers "layering check (scripts/check-layers.sh); seconds" scripts/check-layers.sh
stage main "build everything in $build (CUDA when nvcc is found) and run ctest; about 5 min" main_stage
if [ "$quick" != 1 ]; then
  stage asan "CPU suites under ASan+UBSan in $build-asan; about 5 min" sanitizer_stage "$build-asan" \
    "-O1 -g1 -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all -fno-omit-frame-pointer"
  stage tsan "CPU suites under TSan in $build-tsan; about 6 min" \
    sanitizer_stage "$build-tsan" "-O1 -g1 -fsanitize=thread -fno-omit-frame-pointer"
  stage fuzz "libFuzzer for ${DSA_FUZZ_SECONDS:-60} s in $build-fuzz (logs: $build-fuzz/fuzz-build.log, $build-fuzz/fuzz.log)" \
    scripts/fuzz.sh "${DSA_FUZZ_SECONDS:-60}" "$build-fuzz"
fi

echo "==== stages ($((SECONDS - run_start)) s in all)"
printf '%s\n' "${stages[@]}"
exit $failed
