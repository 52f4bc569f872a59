// The fused prefill top-k in jobs of 2 rows (sm_90a, unsorted output): four math warpgroups a CTA, each lane's
// weights in registers. Same algorithm and results as kernels/prefill_fused.h, which serves what this does
// not (sorted output). Host-only header; kernels/topk_kernels.cu (topk_ragged) dispatches to it.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "common/problem.hpp"

namespace dsa::kernels {

// Whether this build and device run the 2-row prefill kernel for `problem`: where prefill_fused_runs does, for
// unsorted output. It also needs prefill_fused_inputs_aligned.
bool prefill_pairs_runs(const RaggedProblem& problem, int compute_capability);
size_t prefill_pairs_workspace_bytes(const RaggedProblem& problem, int sm_count);
cudaError_t prefill_pairs_topk(const RaggedProblem& problem, int sm_count, void* workspace, int* error_flag,
                               cudaStream_t stream);

}  // namespace dsa::kernels
