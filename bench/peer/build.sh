#!/bin/sh
# Builds bench/peer/dg_bench against a DeepGEMM checkout and the CUTLASS commit it pins (third-party/cutlass).
# Neither is part of this repository: DG and CUTLASS name their checkouts. Measured in session 34 with DeepGEMM
# 54e22612 and CUTLASS f3fde583 (v4.2.1). Flags: DeepGEMM's JIT's (csrc/jit/compiler.hpp).
#   DG=/path/to/DeepGEMM CUTLASS=/path/to/cutlass bench/peer/build.sh [output]
set -e
: "${DG:?DG: a DeepGEMM checkout}" "${CUTLASS:?CUTLASS: the CUTLASS checkout DeepGEMM pins}"
out=${1:-dg_bench}
nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a \
  --expt-relaxed-constexpr --expt-extended-lambda \
  --diag-suppress=39,161,174,177,186,940 -Xptxas --register-usage-level=10 \
  -Xcompiler -O3,-Wno-deprecated-declarations \
  -I"$DG/deep_gemm/include" -I"$CUTLASS/include" \
  "$(dirname "$0")/dg_bench.cu" -o "$out"
