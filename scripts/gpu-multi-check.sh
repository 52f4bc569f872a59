#!/usr/bin/env bash
# On a machine with several GPUs, in one go: build (sm_90a), the multi-GPU tests (multi_gpu_tests,
# multi_process_test) with their output, then `dsa_bench --devices 1,2,4[,8]` against 1 GPU. $OUT (default
# /tmp/dsa-gpu-multi-check) receives three files: h200xN.json, bench-multi.txt and gpu-multi-logs.tgz (every
# log); the short table prints last.
#   DSA_BENCH_DEVICES=1,2,3   other GPU counts for the benchmark
#   DSA_MULTI_SKIP="tests"    steps to leave out ("tests", "bench")
#   DSA_CUDA_ARCHS, DSA_BUILD_DIR as for scripts/gpu-check.sh (default 90a-real, build-gpu)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-/tmp/dsa-gpu-multi-check}
build=${DSA_BUILD_DIR:-build-gpu}
logs=$(mktemp -d /tmp/gpu-multi-logs.XXXX)
mkdir -p "$out"
trap 'tar -czf "$out/gpu-multi-logs.tgz" -C "$logs" .' EXIT
skip=" ${DSA_MULTI_SKIP:-} "
wanted() { [[ "$skip" != *" $1 "* ]]; }
# NVLink multicast stays off (NCCL, PyTorch, NVSHMEM): a program using it can take a shared host's GPUs down.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
status=0
step() { echo "== $*"; }

step "devices"
nvidia-smi --query-gpu=index,name,driver_version,memory.total,clocks.sm,temperature.gpu --format=csv | tee "$logs/gpu.txt"
nvidia-smi topo -m >>"$logs/gpu.txt" 2>&1 || true
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
echo "GPUs: ${gpus:-0}"

step "build"
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
{ cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DDSA_WITH_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES="${DSA_CUDA_ARCHS:-90a-real}" &&
  cmake --build "$build" -j "$(nproc)" --target dsa_multi_gpu_tests dsa_multi_process_test dsa_bench; } \
  >"$logs/build.log" 2>&1 || { grep -E "error|Error" "$logs/build.log" | head -30; exit 1; }
grep -E "NCCL|CUDA" "$logs/build.log" | grep -m1 "dsa_indexer" || true

tests_summary=""
if wanted tests; then
  step "tests: multi_gpu_tests, multi_process_test"
  (cd "$build" && timeout "${DSA_MULTI_TEST_TIMEOUT:-400}" ctest -R "multi_gpu_tests|multi_process_test" -V) \
    >"$logs/ctest.log" 2>&1 || status=1
  grep -E "SKIPPED|WARN|FAILED|failed|rank [01]:|test cases|assertions" "$logs/ctest.log" | head -40
  tests_summary=$(grep -E "Test +#|tests passed" "$logs/ctest.log" || true)
fi

if wanted bench; then
  step "benchmark: --devices"
  devices=${DSA_BENCH_DEVICES:-1,2,4}
  if [[ -z "${DSA_BENCH_DEVICES:-}" && "${gpus:-0}" -ge 8 ]]; then devices=1,2,4,8; fi
  timeout "${DSA_MULTI_BENCH_TIMEOUT:-400}" "$build/bench/dsa_bench" --devices "$devices" \
    --json "$out/h200x${gpus:-0}.json" >"$out/bench-multi.txt" 2>"$logs/bench_progress.log" || status=1
  tail -3 "$logs/bench_progress.log"
fi

step "summary"
echo "$tests_summary"
[[ -f "$out/bench-multi.txt" ]] && sed -n '/^== multi-GPU results/,$p' "$out/bench-multi.txt"
grep -E "^note:" "$out/bench-multi.txt" 2>/dev/null || true
exit $status
