// The fused prefill top-k (sm_90a): one persistent kernel, four warpgroups a CTA, each scoring 2 query rows per
// wgmma over the union of their key windows and keeping each row's candidates on a running threshold, so no
// S x N score matrix is ever written; sorted output ranked afterwards by kernels/rank_rows.h. Host-only header;
// kernels/topk_kernels.cu (topk_ragged) dispatches to it.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "common/problem.hpp"

namespace dsa::kernels {

// Whether this build and device run the fused prefill kernel for `problem`'s shape (sm_90a image, compute
// capability 9.0, sizes its tensor maps can address). It also needs prefill_pairs_inputs_aligned, which the
// public API guarantees.
bool prefill_pairs_runs(const RaggedProblem& problem, int compute_capability);
// q and k start on 16-byte boundaries (TMA's requirement).
bool prefill_pairs_inputs_aligned(const RaggedProblem& problem);
// The candidate buffers, and for sorted calls the rows' scores (num_rows x topk floats) that the ranking reads.
size_t prefill_pairs_workspace_bytes(const RaggedProblem& problem, int sm_count);
cudaError_t prefill_pairs_topk(const RaggedProblem& problem, int sm_count, void* workspace, int* error_flag,
                               cudaStream_t stream);

}  // namespace dsa::kernels
