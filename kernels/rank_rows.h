// Rank order for top-k rows written in position order: each row's results sorted in place by rank (larger score
// first; among equal scores the smaller position). Host-only header; kernels/prefill_pairs.cu runs it after its
// kernel for sorted calls.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace dsa::kernels {

// Sorts rows [0, rows) of indices and scores (k entries a row, rows apart) in place. Each row holds its results
// in ascending position order, their scores beside them, then padding (index -1, score -inf), as an unsorted
// call writes them; equal scores keep that order. With write_scores false, scores is
// read but not written (the caller's output has no scores: these are scratch).
cudaError_t rank_rows(int32_t* indices, float* scores, int32_t rows, int k, bool write_scores,
                      cudaStream_t stream);

}  // namespace dsa::kernels
