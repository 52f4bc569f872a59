#!/usr/bin/env bash
# On a GPU machine, in one go: the working tree ("base") and a copy of it per patch ("variants") built side by
# side (sm_90a), each gated by one small exact GPU test under a short timeout (a hung kernel costs 30 s, not
# the whole call), optionally the GPU suite, then dsa_bench on each, back to back with the same arguments: a
# kernel change measured against its base on one GPU in one run. Every table prints; $OUT (default
# /tmp/dsa-gpu-ab) receives ab.txt (the same) and ab-logs.tgz.
#   scripts/gpu-ab.sh PATCH... [-- dsa_bench arguments]   e.g. git diff main...my-branch > ab/x.patch, then
#                                                          scripts/gpu-ab.sh ab/x.patch -- --only 256x8192
#   DSA_AB_ENV="DSA_INDEXER_KERNEL=split"   environment of the gate, the suite and the benchmark
#   DSA_AB_SUITE="[gpu]"                    also run dsa_gpu_tests with this spec on every tree ...
#   DSA_AB_SUITE_TREES="base x"             ... or only on these (tree names: base, or a patch's name)
#   DSA_AB_GATE="test name"                 the gate (default: the small odd shapes case)
#   DSA_AB_ROUNDS=3                         benchmark rounds (default 1), the trees' order reversed every other
#                                           round, so that drift during the run falls on every tree alike; a
#                                           table of the medians over the rounds follows (scripts/ab-summary.py)
# Every dsa_bench run reads its workloads' inputs from one --input-cache directory (unless the arguments name
# one), so each workload's inputs are drawn once per call, not once per tree and round; every tree then sees the
# inputs the first run drew (`--input-cache ''` draws them in every run: for a patch that changes how).
# Each step's header says when it started ([at N s] since the script's start), to budget the next call.
# A patch named timing-*.patch is a timing experiment that leaves a stage out, so its answers are wrong by
# design: its gate may fail (it is still benchmarked), but not hang.
# Patches apply with `patch -p1` (or `git apply` where patch is missing); a patch that does not apply stops
# the run before anything is built.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/dsa-gpu-ab}
logs=$(mktemp -d /tmp/gpu-ab-logs.XXXX)
mkdir -p "$out"
trap 'tar -czf "$out/ab-logs.tgz" -C "$logs" .; [ -n "${inputs:-}" ] && rm -rf "$inputs"' EXIT
exec > >(tee "$out/ab.txt") 2>&1

patches=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do patches+=("$1"); shift; done
[ $# -gt 0 ] && shift
bench_args=("$@")
if [[ " ${bench_args[*]} " != *" --input-cache "* ]]; then
  inputs=$(mktemp -d /tmp/gpu-ab-inputs.XXXX)
  bench_args+=(--input-cache "$inputs")
fi
gate=${DSA_AB_GATE:-GPU small odd shapes equal the CPU backend exactly}
rounds=${DSA_AB_ROUNDS:-1}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "DSA_AB_ROUNDS must be a positive integer, not '$rounds'"; exit 2; }
read -r -a run_env <<<"${DSA_AB_ENV:-}"

# Trees: base is this one; variant i is a copy with patch i applied.
names=(base) dirs=("$PWD")
for p in "${patches[@]}"; do
  name=$(basename "$p" .patch) dir=/tmp/gpu-ab-$name
  rm -rf "$dir" && mkdir -p "$dir"
  tar -cf - --exclude='./build*' --exclude='./.git' . | tar -xf - -C "$dir"
  pabs=$(realpath "$p")
  if command -v patch >/dev/null; then patch -d "$dir" -p1 --quiet <"$pabs"; else (cd "$dir" && git apply "$pabs"); fi ||
    { echo "$p does not apply"; exit 1; }
  names+=("$name") dirs+=("$dir")
done

echo "== build (${names[*]}) [at ${SECONDS} s]"
jobs=$(($(nproc) / ${#dirs[@]}))
builds=()
for i in "${!dirs[@]}"; do
  (cd "${dirs[$i]}" &&
    cmake -S . -B build-ab -G Ninja -DCMAKE_BUILD_TYPE=Release -DDSA_WITH_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90a-real >"$logs/configure_${names[$i]}.log" 2>&1 &&
    cmake --build build-ab -j "$jobs" --target dsa_gpu_tests dsa_bench >"$logs/build_${names[$i]}.log" 2>&1) &
  builds+=($!)
done
wait "${builds[@]}"  # not a bare wait: that would also wait for the tee above
status=0
ok=()
for i in "${!dirs[@]}"; do
  n=${names[$i]} d=${dirs[$i]}
  if [ ! -x "$d/build-ab/bench/dsa_bench" ]; then
    echo "== $n: build failed"
    cat "$logs/configure_$n.log" "$logs/build_$n.log" 2>/dev/null | grep -iE "error" | head -20
    status=1
    continue
  fi
  grep -E "ptxas info *: (Compiling|Used)|spill" "$logs/build_$n.log" | grep -B1 -E "sm_90a|spill" >"$logs/ptxas_$n.txt"
  echo "== $n: gate [at ${SECONDS} s]"
  env "${run_env[@]}" timeout 30 "$d/build-ab/tests/dsa_gpu_tests" "$gate" >"$logs/gate_$n.log" 2>&1
  gate_rc=$?
  if [ $gate_rc -ne 0 ]; then
    tail -5 "$logs/gate_$n.log"
    if [ $gate_rc -eq 124 ] || [[ $n != timing-* ]]; then status=1; continue; fi
    echo "($n: a timing experiment, benchmarked anyway)"
  fi
  if [ -n "${DSA_AB_SUITE:-}" ] && { [ -z "${DSA_AB_SUITE_TREES:-}" ] || [[ " $DSA_AB_SUITE_TREES " == *" $n "* ]]; }; then
    echo "== $n: dsa_gpu_tests \"$DSA_AB_SUITE\" [at ${SECONDS} s]"
    env "${run_env[@]}" timeout 200 "$d/build-ab/tests/dsa_gpu_tests" "$DSA_AB_SUITE" >"$logs/suite_$n.log" 2>&1 || status=1
    tail -3 "$logs/suite_$n.log"
  fi
  ok+=("$i")
done
order=("${ok[@]}")
for ((r = 1; r <= rounds; r++)); do
  for i in "${order[@]}"; do
    n=${names[$i]}
    echo "== $n: dsa_bench ${bench_args[*]} (round $r of $rounds) [at ${SECONDS} s]"
    env "${run_env[@]}" timeout 200 "${dirs[$i]}/build-ab/bench/dsa_bench" --json "$logs/bench_${n}_r$r.json" \
      "${bench_args[@]}" 2>"$logs/bench_progress_${n}_r$r.log" || status=1
    # A timeline file (a diag-decode-timeline tree's DSA_TIMELINE) learns which tree the runs before this line were.
    for e in "${run_env[@]}"; do [[ $e == DSA_TIMELINE=* && -f ${e#*=} ]] && echo "tree $n round $r" >>"${e#*=}"; done
  done
  order=($(printf '%s\n' "${order[@]}" | tac))  # the next round in the reverse order
done
columns=()
for i in "${ok[@]}"; do
  n=${names[$i]} files=()
  for ((r = 1; r <= rounds; r++)); do [ -s "$logs/bench_${n}_r$r.json" ] && files+=("$logs/bench_${n}_r$r.json"); done
  columns+=("$n=$(IFS=,; echo "${files[*]}")")
done
if [ ${#ok[@]} -gt 0 ]; then
  echo "== summary [at ${SECONDS} s]"
  python3 scripts/ab-summary.py "${columns[@]}" || status=1
fi
exit $status
