#!/usr/bin/env bash
# On a GPU machine, in one go: build (sm_90a + portable sm_80), every test including the GPU tests (fp8
# tensor-core path and the portable path; the multi-GPU ones are scripts/gpu-multi-check.sh's),
# compute-sanitizer memcheck/racecheck/synccheck on small cases, then the benchmark. $OUT (default
# /tmp/dsa-gpu-check) receives five files: bench.json and bench.txt (decode), bench_ragged.json and
# bench_ragged.txt (prefill), and gpu-check-logs.tgz (every log); the short tables print last.
#   DSA_CHECK_SKIP="portable sanitizer bench"   steps to leave out
#   DSA_CUDA_ARCHS="90a-real"                   other CUDA architectures (default "80-real;90a-real")
#   DSA_BUILD_DIR=dir                           build directory (default build-gpu; shared with gpu-multi-check)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/dsa-gpu-check}
build=${DSA_BUILD_DIR:-build-gpu}
logs=$(mktemp -d /tmp/gpu-check-logs.XXXX)
mkdir -p "$out"
trap 'tar -czf "$out/gpu-check-logs.tgz" -C "$logs" .' EXIT
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
status=0
skip=" ${DSA_CHECK_SKIP:-} "   # e.g. DSA_CHECK_SKIP="portable sanitizer" for a shorter run
step() { echo "== $*"; }
wanted() { [[ "$skip" != *" $1 "* ]]; }

step "device"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$logs/gpu.txt"

step "build"
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DDSA_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${DSA_CUDA_ARCHS:-80-real;90a-real}" >"$logs/configure.log" 2>&1 ||
  { tail -30 "$logs/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" >"$logs/build.log" 2>&1 || { grep -E "error" "$logs/build.log" | head -30; exit 1; }
grep -E "ptxas info *: (Compiling|Used)|spill" "$logs/build.log" | grep -B1 -E "sm_90a|spill" >"$logs/ptxas.txt" || true

step "tests (all but the multi-GPU ones, fp8 tensor-core path)"
(cd "$build" && timeout "${DSA_CTEST_TIMEOUT:-300}" ctest --output-on-failure -j 4 -E "multi_gpu_tests|multi_process_test") >"$logs/ctest.log" 2>&1 ||
  status=1
tail -15 "$logs/ctest.log"

if wanted portable; then
  step "GPU tests, portable path"
  DSA_INDEXER_KERNEL=portable timeout 200 "$build/tests/dsa_gpu_tests" "[gpu]~[large]" \
    >"$logs/gpu_tests_portable.log" 2>&1 || status=1
  tail -3 "$logs/gpu_tests_portable.log"
fi

if wanted sanitizer && command -v compute-sanitizer >/dev/null; then
  # racecheck does not model mbarrier ordering: on the fused decode kernel it reports the TMA / bulk-copy
  # writes and the producer's tile_bad store, each read only after the consumer's mbarrier wait (24 hazards,
  # tests/RELIABILITY.md, session 7). So racecheck's counted run is on the split kernels, and its run on the
  # fused kernels prints the hazards' places to read (one outside those handoffs is a real one).
  for check in memcheck:auto racecheck:split synccheck:auto; do
    tool=${check%%:*} kernel=${check#*:}
    step "compute-sanitizer $tool ($kernel kernels)"
    DSA_INDEXER_KERNEL=$kernel timeout 300 compute-sanitizer --tool "$tool" --error-exitcode 9 \
      "$build/tests/dsa_gpu_tests" "[sanitize]" >"$logs/sanitizer_$tool.log" 2>&1 || status=1
    tail -3 "$logs/sanitizer_$tool.log"
  done
  step "compute-sanitizer racecheck (fused kernels: hazards to read, not counted)"
  timeout 150 compute-sanitizer --tool racecheck --print-limit 20 "$build/tests/dsa_gpu_tests" "[sanitize]" \
    >"$logs/sanitizer_racecheck_fused.log" 2>&1
  grep -iE "race reported|access at|racecheck summary" "$logs/sanitizer_racecheck_fused.log" | sed 's/+0x[0-9a-f]*//g' |
    sort | uniq -c | head -20
fi

if wanted bench; then
  step "benchmark"
  timeout 300 "$build/bench/dsa_bench" --json "$out/bench.json" "$@" 2>"$logs/bench_progress.log" |
    tee "$out/bench.txt" || status=1
  step "benchmark, prefill (dsa_bench --ragged)"
  timeout 300 "$build/bench/dsa_bench" --ragged --iterations 10 --json "$out/bench_ragged.json" \
    2>"$logs/bench_ragged_progress.log" | tee "$out/bench_ragged.txt" || status=1
fi
exit $status
