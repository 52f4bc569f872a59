#!/bin/sh
# dsa_bench's answers to argument errors and to a machine without a usable GPU (issue 14), and its prefill
# mode (--ragged, issue 13) on the CPU: each case must end with the expected exit status and print the
# expected text. CUDA_VISIBLE_DEVICES= hides every GPU.
# usage: bench_args.sh DSA_BENCH
set -u
bench=$1
out=${TMPDIR:-/tmp}/dsa_bench_args.$$
failed=0

# expect <status> <text> <arguments...>: runs dsa_bench without GPUs; its stdout + stderr must hold <text>.
expect() {
    want=$1 text=$2
    shift 2
    CUDA_VISIBLE_DEVICES= "$bench" "$@" >"$out" 2>&1
    got=$?
    if [ "$got" -ne "$want" ] || ! grep -q -- "$text" "$out"; then
        echo "bench_args: FAILED: dsa_bench $*: exit $got (expected $want), output:"
        sed 's/^/    /' "$out"
        echo "    (expected the text: $text)"
        failed=1
    else
        echo "bench_args: ok: dsa_bench $* -> exit $got, \"$text\""
    fi
}

expect 2 "valid names: 4x2048 2x1024_next_n2 fib_4" --backend cpu --quick --only nosuch
expect 2 "valid names:.*fib_16" --backend cpu --only nosuch
expect 2 "GPU 0 cannot be used" --backend gpu --quick
expect 2 "backend is cpu or gpu" --backend tpu
expect 2 "is not BxL" --shape 4x
expect 2 "is not BxL" --shape 2x512,x9
expect 2 "num_heads" --shape 2x512 --heads 48
expect 2 "go with --shape" --next-n 2
expect 2 "takes a whole number" --iterations many
expect 2 "unknown option --frobnicate" --frobnicate 1
expect 0 "2x512_next_n2_k64 .* PASS" --backend cpu --shape 2x512,1x300 --next-n 2 --topk 64 --iterations 1
expect 0 "backend: cpu (requested)" --backend cpu --shape 1x256 --iterations 1
# Timed calls return indices only unless --scores; both pass the check (scores are checked when returned).
expect 0 "timed calls return: indices$" --backend cpu --shape 1x256 --iterations 1
expect 0 "timed calls return: indices and scores" --backend cpu --shape 2x3000 --scores --iterations 1
expect 0 "prefill_300 .* PASS (sampled" --ragged --backend cpu --shape 300 --scores --iterations 1
# --sorted: the results in rank order, which the check then checks too.
expect 0 "timed calls return: indices and scores, sorted" --backend cpu --shape 2x3000 --scores --sorted --iterations 1
expect 0 "prefill_600_k256 .* PASS (sampled" --ragged --backend cpu --shape 600 --topk 256 --sorted --iterations 1
expect 2 "not with --devices" --devices 1 --sorted
expect 0 "backend: cpu (default without a usable GPU" --quick --only fib_4 --iterations 1
# --only with a list: those workloads, in the workloads' order; one unknown name among them is an error.
expect 0 "dsa_bench: 2 passed, 0 failed" --backend cpu --quick --only fib_4,4x2048 --iterations 1
expect 2 "--only nosuch: no such workload" --backend cpu --quick --only fib_4,nosuch

# Prefill (--ragged): the quick CPU run passes its sampled check; a --shape run with k below the window
# lengths exercises the selection; mode and argument errors.
expect 0 "prefill_1024 .* PASS (sampled 64 of 1024 rows)" --ragged --quick --backend cpu
expect 0 "prefill_600_k256_h32 .* PASS (sampled" --ragged --backend cpu --shape 600 --topk 256 --heads 32 --iterations 1
expect 0 "FP8 peak: 900 TFLOP/s (--fp8-peak)" --ragged --backend cpu --shape 300 --fp8-peak 900 --iterations 1
expect 2 "valid names: prefill_1024$" --ragged --backend cpu --quick --only nosuch
expect 2 "is not S" --ragged --shape 4x8
expect 2 "num_heads" --ragged --heads 48
expect 2 "paged-decode options: not with --ragged" --ragged --next-n 2
expect 2 "fp8-peak goes with --ragged" --fp8-peak 900
expect 2 "takes a positive number" --ragged --fp8-peak -3

# --input-cache: the first run draws a workload's inputs and writes them, the next reads them back (the inputs
# themselves: ctest bench_input_cache).
cache=${TMPDIR:-/tmp}/dsa_bench_args_inputs.$$
expect 0 "inputs drawn, and written to the cache" --backend cpu --shape 1x256 --iterations 1 --input-cache "$cache"
expect 0 "inputs read from the cache" --backend cpu --shape 1x256 --iterations 1 --input-cache "$cache"
expect 0 "prefill_300 .* PASS" --ragged --backend cpu --shape 300 --iterations 1 --input-cache "$cache"
expect 0 "inputs read from the cache" --ragged --backend cpu --shape 300 --iterations 1 --input-cache "$cache"
expect 2 "not with --devices" --devices 1,2 --input-cache "$cache"
rm -rf "$cache"

# CPU throughput instead of zeros: the Mtok/s and rows/s columns of a CPU run are positive.
CUDA_VISIBLE_DEVICES= "$bench" --backend cpu --shape 2x2048 --iterations 1 >"$out" 2>&1
if ! grep -q "Mtok/s" "$out" || ! awk '$1 == "2x2048" { ok = ($7 > 0 && $8 > 0) } END { exit !ok }' "$out"; then
    echo "bench_args: FAILED: no positive CPU throughput in:"
    sed 's/^/    /' "$out"
    failed=1
else
    echo "bench_args: ok: CPU throughput printed"
fi

rm -f "$out"
exit $failed
