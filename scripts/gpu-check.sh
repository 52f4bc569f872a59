#!/usr/bin/env bash
# On a GPU machine, in one go: build (sm_90a + portable sm_80), every test including the GPU tests (fp8
# tensor-core path and the portable path), compute-sanitizer memcheck/racecheck on small cases, then the
# benchmark. Logs and bench JSON go to $OUT (default /tmp/dsa-gpu-check); the short table prints last.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/dsa-gpu-check}
mkdir -p "$out"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
status=0
skip=" ${DSA_CHECK_SKIP:-} "   # e.g. DSA_CHECK_SKIP="portable sanitizer" for a shorter run
step() { echo "== $*"; }
wanted() { [[ "$skip" != *" $1 "* ]]; }

step "device"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$out/gpu.txt"

step "build"
generator=(); command -v ninja >/dev/null && generator=(-G Ninja)
cmake -S . -B build-gpu "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DDSA_WITH_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="80-real;90a-real" >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
cmake --build build-gpu -j "$(nproc)" >"$out/build.log" 2>&1 || { grep -E "error" "$out/build.log" | head -30; exit 1; }
grep -E "ptxas info *: (Compiling|Used)|spill" "$out/build.log" | grep -B1 -E "sm_90a|spill" >"$out/ptxas.txt" || true

step "tests (all, fp8 tensor-core path)"
(cd build-gpu && timeout 300 ctest --output-on-failure -j 4) >"$out/ctest.log" 2>&1 || status=1
tail -15 "$out/ctest.log"

if wanted portable; then
  step "GPU tests, portable path"
  DSA_INDEXER_KERNEL=portable timeout 200 build-gpu/tests/dsa_gpu_tests "[gpu]~[large]" \
    >"$out/gpu_tests_portable.log" 2>&1 || status=1
  tail -3 "$out/gpu_tests_portable.log"
fi

if wanted sanitizer && command -v compute-sanitizer >/dev/null; then
  for tool in memcheck racecheck synccheck; do
    step "compute-sanitizer $tool"
    timeout 150 compute-sanitizer --tool "$tool" --error-exitcode 9 build-gpu/tests/dsa_gpu_tests "[sanitize]" \
      >"$out/sanitizer_$tool.log" 2>&1 || status=1
    tail -3 "$out/sanitizer_$tool.log"
  done
fi

step "benchmark"
timeout 300 build-gpu/bench/dsa_bench --json "$out/bench.json" "$@" 2>"$out/bench_progress.log" | tee "$out/bench.txt" \
  || status=1
exit $status
