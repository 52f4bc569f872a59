#!/usr/bin/env bash
# On a GPU machine, after scripts/gpu-check.sh built build-gpu: per-kernel Nsight Compute sections for a few
# workloads (clocks left alone), the tensor-core instruction mix of the kernels, and optionally one
# source-level stall profile summarised per instruction (scripts/ncu-source-summary.py).
#   DSA_PROFILE_WORKLOADS="64x8192 fib_4 1x131072"  paged workloads (dsa_bench --only)
#   DSA_PROFILE_RAGGED="prefill_4096"               prefill workloads (dsa_bench --ragged --only)
#   DSA_PROFILE_SOURCE="ragged:prefill_16384"       one workload ("paged:NAME" or "ragged:NAME") profiled with
#                                                   source counters; its summary prints, its CSV is kept
#   DSA_BUILD_DIR=build-ab                          the build to profile (default build-gpu)
# Everything lands in $OUT/profile.tgz (one file, whatever the number of logs) and the summaries print.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/dsa-gpu-check}
logs=$(mktemp -d /tmp/gpu-profile.XXXX)
mkdir -p "$out"
trap 'tar -czf "$out/profile.tgz" -C "$logs" .' EXIT
kernels=${DSA_PROFILE_KERNELS:-regex:decode|score|select|prefill}
build=${DSA_BUILD_DIR:-build-gpu}

profile() {  # profile NAME dsa_bench-arguments...
  local name=$1
  shift
  timeout 180 ncu --clock-control none --kernel-name "$kernels" --launch-count "${DSA_PROFILE_LAUNCHES:-3}" \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    "$build"/bench/dsa_bench "$@" --iterations 1 >"$logs/ncu_$name.txt" 2>&1
  echo "== ncu $name"
  grep -E "^  [a-z_]+.*\(|Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Registers Per|Stall|Warp Cycles Per Issued" \
    "$logs/ncu_$name.txt" | head -40
}
for w in ${DSA_PROFILE_WORKLOADS:-64x8192 fib_4 1x131072}; do profile "$w" --only "$w"; done
for w in ${DSA_PROFILE_RAGGED:-prefill_4096}; do profile "$w" --ragged --only "$w"; done

if [ -n "${DSA_PROFILE_SOURCE:-}" ]; then
  mode=${DSA_PROFILE_SOURCE%%:*} name=${DSA_PROFILE_SOURCE#*:}
  extra=(); [ "$mode" = ragged ] && extra=(--ragged)
  timeout 300 ncu --clock-control none --kernel-name "$kernels" --launch-count 1 --section WarpStateStats \
    --section SourceCounters -o "$logs/source_$name" "$build"/bench/dsa_bench "${extra[@]}" --only "$name" \
    --iterations 1 >"$logs/ncu_source_$name.log" 2>&1
  ncu --import "$logs/source_$name.ncu-rep" --page source --print-source sass --csv >"$logs/source_$name.csv" 2>&1
  echo "== source-level stalls, $name"
  python3 scripts/ncu-source-summary.py "$logs/source_$name.csv" | tee "$logs/source_summary_$name.txt"
  rm -f "$logs/source_$name.ncu-rep"
fi

for src in topk_kernels decode_fused prefill_pairs rank_rows; do
  obj=$(find "$build" -name "$src.cu.o" | head -1)
  [ -n "$obj" ] || continue
  cuobjdump -sass -arch sm_90a "$obj" >"$logs/sass_$src.txt" 2>&1
  echo "== SASS of $src (sm_90a): tensor ops, TMA, mbarriers, local memory"
  grep -oE "(QMMA|HMMA|HGMMA|QGMMA|IMMA|UTMALDG|UBLKCP|STL|LDL)[.A-Z0-9]*" "$logs/sass_$src.txt" | sort | uniq -c
done
