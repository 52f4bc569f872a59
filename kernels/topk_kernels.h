// The launch functions of all device code: the only door from src/core into kernels/. Host-only header.
// Every launch is asynchronous on `stream`, allocates nothing and never synchronises (graph-capturable).
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "core/problem.hpp"

namespace dsa::kernels {

struct DeviceTraits {
    int sm_count = 0;
    int compute_capability = 0;  // major * 10 + minor
};

enum class ScoreKernel {
    Auto,      // the fastest kernel this device runs (fp8 tensor cores on sm_90+)
    Portable,  // CUDA cores only, any sm_80+ GPU; kept for verification and older GPUs
};

size_t paged_workspace_bytes(const PagedProblem& problem);
size_t ragged_workspace_bytes(const RaggedProblem& problem);

// error_flag: device int set to 1 when a row meets bad device-side input (paged: a block-table entry outside
// [0, num_pages) or a seq_len outside [0, max_pages * page_size]; ragged: a window outside [0, num_keys]);
// that row is written as padding only and nothing outside the inputs is read.
cudaError_t topk_paged(const PagedProblem& problem, const DeviceTraits& device, ScoreKernel kernel, void* workspace,
                       int* error_flag, cudaStream_t stream);
cudaError_t topk_ragged(const RaggedProblem& problem, const DeviceTraits& device, ScoreKernel kernel, void* workspace,
                        int* error_flag, cudaStream_t stream);

}  // namespace dsa::kernels

namespace dsa::kernels {

// Owned-cache token copies in the SPEC page layout (keys then scales per page). Token t of the list goes
// between cache slot slots[t] and element source_index[t] of the packed keys [*, 128] / scales arrays.
// The caller has checked the slots and removed duplicates, so no two threads write one slot.
cudaError_t scatter_tokens(uint8_t* cache, int64_t page_stride_bytes, int page_size, const int64_t* slots,
                           const int64_t* source_index, int64_t count, const uint8_t* keys, const float* scales,
                           cudaStream_t stream);
cudaError_t gather_tokens(const uint8_t* cache, int64_t page_stride_bytes, int page_size, const int64_t* slots,
                          int64_t count, uint8_t* keys, float* scales, cudaStream_t stream);

}  // namespace dsa::kernels
