// kernels/rank_rows.h: one CTA a row, its k entries sorted in registers by a block radix sort of the 32-bit
// order keys (common/order_key.h) with the indices as values. The keys are inverted so that an ascending sort
// ranks the larger score first; padding gets the largest inverted key and, coming after every result, stays
// after them all (a NaN's key inverts to the same value, and the stable sort keeps it before the padding).
#include "kernels/rank_rows.h"

#include <cub/block/block_radix_sort.cuh>

#include "common/constants.hpp"
#include "common/order_key.h"

namespace dsa::kernels {
namespace {

constexpr int kRankThreads = 256;
constexpr int kRankItems = kMaxTopk / kRankThreads;  // entries a thread, padded past k
using RankSort = cub::BlockRadixSort<uint32_t, kRankThreads, kRankItems, int32_t>;

__global__ void __launch_bounds__(kRankThreads)
    rank_rows_kernel(int32_t* indices, float* scores, int k, bool write_scores) {
    __shared__ typename RankSort::TempStorage temp;
    int32_t* const row_idx = indices + int64_t(blockIdx.x) * k;
    float* const row_score = scores + int64_t(blockIdx.x) * k;
    // Blocked: thread t holds entries [t kRankItems, (t + 1) kRankItems), so that the sort's stability keeps
    // position order among equal keys.
    uint32_t key[kRankItems];
    int32_t index[kRankItems];
#pragma unroll
    for (int e = 0; e < kRankItems; ++e) {
        const int i = int(threadIdx.x) * kRankItems + e;
        index[e] = i < k ? __ldcs(row_idx + i) : -1;
        key[e] = index[e] >= 0 ? ~score_order_key(__ldcs(row_score + i)) : ~0u;
    }
    RankSort(temp).SortBlockedToStriped(key, index);
    // Striped: entry e of thread t is rank e kRankThreads + t, so each store instruction covers whole lines.
#pragma unroll
    for (int e = 0; e < kRankItems; ++e) {
        const int i = e * kRankThreads + int(threadIdx.x);
        if (i >= k) break;
        __stcs(row_idx + i, index[e]);
        if (write_scores)
            __stcs(row_score + i, index[e] >= 0 ? score_from_order_key(~key[e]) : padding_score());
    }
}

}  // namespace

cudaError_t rank_rows(int32_t* indices, float* scores, int32_t rows, int k, bool write_scores,
                      cudaStream_t stream) {
    if (rows <= 0 || k <= 1) return cudaSuccess;  // a row of one entry is ranked already
    rank_rows_kernel<<<rows, kRankThreads, 0, stream>>>(indices, scores, k, write_scores);
    return cudaGetLastError();
}

}  // namespace dsa::kernels
