#!/usr/bin/env bash
# On a GPU machine, after scripts/gpu-check.sh built build-gpu: per-kernel Nsight Compute sections for a few
# workloads (clocks left alone) and the tensor-core instruction mix of the scoring kernels.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/dsa-gpu-check}
for w in ${DSA_PROFILE_WORKLOADS:-64x8192 fib_4 1x131072}; do
  timeout 120 ncu --clock-control none --kernel-name "${DSA_PROFILE_KERNELS:-regex:decode|score|select}" \
    --launch-count "${DSA_PROFILE_LAUNCHES:-3}" --section SpeedOfLight --section Occupancy \
    --section LaunchStats --section WarpStateStats build-gpu/bench/dsa_bench --only "$w" --iterations 1 \
    >"$out/ncu_$w.txt" 2>&1
  echo "== ncu $w"; grep -E "^  [a-z_]+.*\(|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Stall" "$out/ncu_$w.txt" | head -40
done
for src in topk_kernels decode_fused; do
  obj=$(find build-gpu -name "$src.cu.o" | head -1)
  cuobjdump -sass -arch sm_90a "$obj" >"$out/sass_$src.txt" 2>&1
  echo "== SASS of $src (sm_90a): tensor ops, TMA, mbarriers"
  grep -oE "(QMMA|HMMA|HGMMA|QGMMA|IMMA|UTMALDG|UBLKCP)[.A-Z0-9]*" "$out/sass_$src.txt" | sort | uniq -c
done
