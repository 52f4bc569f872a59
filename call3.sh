#!/bin/bash
# Session 46 call 3: rank_rows with 4096 buckets (E) against the landed 2048 (D); [gpu]~[large] on D.
set -uo pipefail
T0=$SECONDS; LIMIT=${LIMIT:-330}
L=/tmp/c3logs; mkdir -p $L
step(){ echo "== $* [at $((SECONDS-T0)) s]" | tee -a $OUT/steps.txt; }
left(){ echo $((LIMIT-(SECONDS-T0))); }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv | tee $OUT/steps.txt
CUDALIB=/usr/local/cuda/lib64:/usr/local/cuda/lib
B=$PWD/build-carry/var
run_t(){ local t=$1; shift; LD_LIBRARY_PATH=$PWD/build-carry/$t:$CUDALIB "$@"; }
IC=/tmp/c3inputs; mkdir -p $IC
step "E suite [ragged],[ties]"
run_t E timeout 100 $B/dsa_gpu_tests "[ragged],[ties]" > $L/suite_E.log 2>&1; echo "suite E rc=$?" | tee -a $OUT/steps.txt; tail -2 $L/suite_E.log | tee -a $OUT/steps.txt
for r in 1 2; do
  order="D E"; [ $r = 2 ] && order="E D"
  for t in $order; do
    step "$t sorted bench round $r"
    run_t $t timeout 120 $B/dsa_bench --ragged --sorted --iterations 10 --input-cache $IC --json $L/s_${t}_r$r.json > $L/sorted_${t}_r$r.txt 2>$L/sorted_${t}_r${r}_progress.log; echo "rc=$?" | tee -a $OUT/steps.txt
    grep -E "^prefill" $L/sorted_${t}_r$r.txt | awk '{print $1, $5, $NF}' | tee -a $OUT/steps.txt
  done
done
for t in D E; do
  step "$t ncu rank_rows at prefill_8192"
  run_t $t timeout 60 ncu -k regex:rank_rows -c 1 --section SpeedOfLight --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis_Tables $B/dsa_bench --ragged --sorted --only prefill_8192 --iterations 1 --input-cache $IC > $L/ncu_$t.txt 2>&1
  grep -E "Duration|L1/TEX Cache Throughput|DRAM Throughput|Registers Per|Achieved Occupancy|Block Limit Registers|Block Limit Shared|Bank" $L/ncu_$t.txt | tee -a $OUT/steps.txt
done
step "E memcheck [sanitize] + chunked prefill"
run_t E timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 $B/dsa_gpu_tests "[sanitize],GPU prefill: chunked prefill*" > $L/memcheck_E.log 2>&1; echo "memcheck E rc=$?" | tee -a $OUT/steps.txt; tail -3 $L/memcheck_E.log | tee -a $OUT/steps.txt
if [ $(left) -gt 60 ]; then
  step "D (landed) [gpu]~[large]"
  run_t D timeout $(( $(left) - 10 )) $B/dsa_gpu_tests "[gpu]~[large]" > $L/gpu_D.log 2>&1; echo "gpu D rc=$?" | tee -a $OUT/steps.txt; tail -3 $L/gpu_D.log | tee -a $OUT/steps.txt
fi
step "done"
tar -czf $OUT/logs.tgz -C $L .
