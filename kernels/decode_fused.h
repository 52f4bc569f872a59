// The fused paged-decode top-k (sm_90a): one planning kernel and one persistent scoring kernel that selects
// each row as soon as its scores are complete. Host-only header; kernels/topk_kernels.cu (topk_paged) dispatches to it.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "common/problem.hpp"

namespace dsa::kernels {

// Whether this build and device run the fused kernel for `problem` (sm_90a image, compute capability 9.0,
// a TMA-describable cache). Otherwise the score + select kernels of topk_kernels.cu run.
bool decode_fused_available(const PagedProblem& problem, int compute_capability);
size_t decode_fused_workspace_bytes(const PagedProblem& problem);
// Batches of up to 1024 sequences plan themselves, in one cooperative launch where the batch has at most one
// sequence per CTA. two_launches: such a batch takes the clear kernel, then the fused kernel, as where a
// cooperative launch cannot hold the grid (for verification).
cudaError_t decode_fused_topk(const PagedProblem& problem, int sm_count, bool two_launches, void* workspace,
                              int* error_flag, cudaStream_t stream);

}  // namespace dsa::kernels
