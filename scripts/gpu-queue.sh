#!/usr/bin/env bash
# On a GPU machine: scripts/gpu-ab.sh over prepared patches of bench/experiments, named without the folder or
# ".patch". A name X-on-Y is a patch that applies on top of patch Y (bench/experiments/README.md): it is measured
# as Y's chain followed by X; Y may be such a name itself (X-on-Y-on-Z: Z, Y-on-Z, then X). A name A+B (+C...)
# measures those patches (each with its chain) stacked in one tree. When diag-decode-timeline (or
# diag-decode-timeline-on-Y) is among the names (or in a stack), its tree's dsa_bench writes the timeline to
# $OUT/timeline.txt and bench/experiments/timeline_report.py's summary follows the A/B tables
# ($OUT/timeline-report.txt). The environment of scripts/gpu-ab.sh applies (DSA_AB_ROUNDS, DSA_AB_SUITE, ...).
#   scripts/gpu-queue.sh NAME... [-- dsa_bench arguments]
#   DSA_QUEUE_DRY=1 scripts/gpu-queue.sh NAME...   prints each name's chain of patch files and stops (no GPU needed)
# The combined patches go to ab/queue/ (git-ignored), built from the tracked patches where the script runs.
set -euo pipefail
cd "$(dirname "$0")/.."
experiments=bench/experiments

# The patch file of a base name Y: Y itself, or the one decode-Y / prefill-Y, or the one decode-Y-* / prefill-Y-*.
base_file() {
  local y=$1 found=()
  for f in "$experiments/$y.patch" "$experiments/decode-$y.patch" "$experiments/prefill-$y.patch"; do
    [ -f "$f" ] && { echo "$f"; return; }
  done
  mapfile -t found < <(ls "$experiments"/decode-"$y"-*.patch "$experiments"/prefill-"$y"-*.patch 2>/dev/null |
    grep -v -- '-on-' || true)
  [ ${#found[@]} -eq 1 ] || { echo "gpu-queue: no single patch for base \"$y\" (${found[*]:-none})" >&2; return 1; }
  echo "${found[0]}"
}

# The files of a name's chain, base first, one per line; A+B: A's chain, then B's.
chain_of() {
  if [[ $1 == *+* ]]; then
    local part
    for part in ${1//+/ }; do chain_of "$part" || return 1; done
    return
  fi
  local name=$1 file=$experiments/$1.patch
  [ -f "$file" ] || { echo "gpu-queue: no $file" >&2; return 1; }
  if [[ $name == *-on-* ]]; then
    local base
    base=$(base_file "${name#*-on-}") || return 1
    chain_of "$(basename "$base" .patch)" || return 1
  fi
  echo "$file"
}

names=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do names+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#names[@]} -gt 0 ] || { echo "usage: scripts/gpu-queue.sh NAME... [-- dsa_bench arguments]" >&2; exit 2; }

queue=ab/queue
rm -rf "$queue" && mkdir -p "$queue"
patches=()
for n in "${names[@]}"; do
  chain=$(chain_of "$n") || exit 2
  echo "$n: $(echo $chain)"
  # shellcheck disable=SC2086  # one file per line, no spaces in the names
  cat $chain >"$queue/$n.patch"
  if [ "$(echo "$chain" | sort | uniq -d)" ]; then echo "gpu-queue: $n names a patch twice" >&2; exit 2; fi
  patches+=("$queue/$n.patch")
done
[ -n "${DSA_QUEUE_DRY:-}" ] && exit 0

out=${OUT:-/tmp/dsa-gpu-ab}
mkdir -p "$out"
timeline=
if [[ " ${names[*]//+/ } " =~ \ diag-decode-timeline(-on-[^ ]*)?\  ]]; then  # alone, on a patch, or in a stack
  timeline=$out/timeline.txt
  rm -f "$timeline"
  export DSA_AB_ENV="${DSA_AB_ENV:+$DSA_AB_ENV }DSA_TIMELINE=$timeline"
fi
status=0
scripts/gpu-ab.sh "${patches[@]}" -- "$@" || status=$?
if [ -n "$timeline" ] && [ -s "$timeline" ]; then
  python3 "$experiments/timeline_report.py" "$timeline" >"$out/timeline-report.txt" || status=1
  echo "== timeline ($out/timeline-report.txt)"
  cat "$out/timeline-report.txt"
fi
exit $status
