// kernels/rank_rows.h: one CTA a row. Each of the row's results gets its rank from its 32-bit order key
// (common/order_key.h), inverted so that a smaller key ranks first, and its slot: results come in position
// order, so among equal keys the smaller slot ranks first (SPEC's "smaller position first"). Padding, after
// every result, stays where it is.
//  - Bucket ranking (the common case): the results go to 2048 buckets linear in the score between the row's best
//    and worst result, so a bucket's results all precede the next bucket's; a result's rank is its bucket's
//    offset plus the results of its bucket that precede it, found by comparing with each. One histogram, one
//    scan, one scatter and a few comparisons a result. (Buckets by the key's top bits crowd: a row's top k
//    usually spans both signs, so those bits are the sign and the exponent; bench/experiments/rank_bucket_sim.cpp.)
//  - A row whose largest bucket holds more than kMaxBucket results (many equal or nearly equal scores), or
//    whose best or worst result is not finite, is sorted instead: a stable CUB block radix sort of its keys over
//    the bits on which they differ, the indices as values.
#include "kernels/rank_rows.h"

#include <cub/block/block_radix_sort.cuh>

#include "common/constants.hpp"
#include "common/order_key.h"

namespace dsa::kernels {
namespace {

constexpr int kRankThreads = 256;
constexpr int kRankWarps = kRankThreads / 32;
constexpr int kRankItems = kMaxTopk / kRankThreads;  // entries a thread, padded past k
constexpr int kRankVector = 4;                       // entries a 16-byte load
static_assert(kRankItems % kRankVector == 0, "a thread's entries are whole 16-byte loads");
constexpr int kBucketBits = 11;
constexpr int kBuckets = 1 << kBucketBits;
constexpr int kThreadBuckets = kBuckets / kRankThreads;  // buckets a thread counts in the scan
static_assert(kThreadBuckets * kRankThreads == kBuckets, "the threads share the buckets evenly");
constexpr uint32_t kMaxBucket = 64;  // comparisons a result at most before the row is sorted instead
using RankSort = cub::BlockRadixSort<uint32_t, kRankThreads, kRankItems, int32_t>;

struct RankedEntries {
    uint32_t key[kMaxTopk];
    int32_t index[kMaxTopk];
};
struct BucketStorage {
    union {
        uint64_t order[kMaxTopk];  // (key, slot) of each result, by bucket: its order within the bucket
        RankedEntries ranked;      // then keys and indices by rank
    } entries;
    uint32_t offset[kBuckets + 1];  // counts, then each bucket's first rank; [kBuckets]: the results
};
union RankStorage {
    BucketStorage bucket;
    typename RankSort::TempStorage sort;
};

// Thread t's entries [t kRankItems, (t + 1) kRankItems) of a row (blocked: slot order is thread, then item);
// past k, padding. Both arrays are read whatever the index: the scores are not loaded after the indices.
__device__ __forceinline__ void load_row(const int32_t* row_idx, const float* row_score, int k,
                                         int32_t (&index)[kRankItems], float (&score)[kRankItems]) {
    const int first = int(threadIdx.x) * kRankItems;
    // 16-byte loads where every group of 4 entries is whole and aligned: uniform over the CTA.
    const bool vector = k % kRankVector == 0 &&
                        (reinterpret_cast<uintptr_t>(row_idx) | reinterpret_cast<uintptr_t>(row_score)) % 16 == 0;
    if (vector) {
#pragma unroll
        for (int v = 0; v < kRankItems; v += kRankVector) {
            int4 i4 = make_int4(-1, -1, -1, -1);
            float4 s4 = make_float4(0.f, 0.f, 0.f, 0.f);
            if (first + v < k) {
                i4 = __ldcs(reinterpret_cast<const int4*>(row_idx + first + v));
                s4 = __ldcs(reinterpret_cast<const float4*>(row_score + first + v));
            }
            index[v] = i4.x, index[v + 1] = i4.y, index[v + 2] = i4.z, index[v + 3] = i4.w;
            score[v] = s4.x, score[v + 1] = s4.y, score[v + 2] = s4.z, score[v + 3] = s4.w;
        }
    } else {
#pragma unroll
        for (int e = 0; e < kRankItems; ++e) {
            const bool in_row = first + e < k;
            index[e] = in_row ? __ldcs(row_idx + first + e) : -1;
            score[e] = in_row ? __ldcs(row_score + first + e) : 0.f;
        }
    }
}

__device__ __forceinline__ void store_ranked(int32_t* row_idx, float* row_score, int32_t index, uint32_t key,
                                             bool write_scores, int i) {
    __stcs(row_idx + i, index);
    if (write_scores) __stcs(row_score + i, index >= 0 ? score_from_order_key(~key) : padding_score());
}

__global__ void __launch_bounds__(kRankThreads, 4)  // 4 CTAs an SM: 64 registers
    rank_rows_kernel(int32_t* indices, float* scores, int k, bool write_scores) {
    __shared__ RankStorage storage;
    __shared__ uint32_t warp_any[kRankWarps], warp_all[kRankWarps], warp_lo[kRankWarps], warp_hi[kRankWarps];
    __shared__ uint32_t warp_sum[kRankWarps], warp_max[kRankWarps];
    int32_t* const row_idx = indices + int64_t(blockIdx.x) * k;
    float* const row_score = scores + int64_t(blockIdx.x) * k;
    const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
    const int first = int(threadIdx.x) * kRankItems;  // this thread's first slot
    const int first_bucket = int(threadIdx.x) * kThreadBuckets;
    uint32_t key[kRankItems];
    int32_t index[kRankItems];
    {
        float score[kRankItems];
        load_row(row_idx, row_score, k, index, score);
#pragma unroll
        for (int e = 0; e < kRankItems; ++e) key[e] = index[e] >= 0 ? ~score_order_key(score[e]) : ~0u;
    }
    BucketStorage& b = storage.bucket;
#pragma unroll
    for (int e = 0; e < kThreadBuckets; ++e) b.offset[first_bucket + e] = 0u;
    // The best and worst result (the smallest and largest key), and the bits on which the results differ: only
    // those order them.
    uint32_t any = 0u, all = ~0u, lo = ~0u, hi = 0u;
#pragma unroll
    for (int e = 0; e < kRankItems; ++e)
        if (index[e] >= 0) any |= key[e], all &= key[e], lo = min(lo, key[e]), hi = max(hi, key[e]);
    any = __reduce_or_sync(~0u, any);
    all = __reduce_and_sync(~0u, all);
    lo = __reduce_min_sync(~0u, lo);
    hi = __reduce_max_sync(~0u, hi);
    if (lane == 0) warp_any[warp] = any, warp_all[warp] = all, warp_lo[warp] = lo, warp_hi[warp] = hi;
    __syncthreads();  // also orders the histogram's zeros before its counts
#pragma unroll
    for (int w = 0; w < kRankWarps; ++w)
        any |= warp_any[w], all &= warp_all[w], lo = min(lo, warp_lo[w]), hi = max(hi, warp_hi[w]);
    const uint32_t differing = any & ~all;
    if (differing == 0u) return;  // no two results differ (or none): position order is rank order already
    const int begin_bit = __ffs(int(differing)) - 1, end_bit = 32 - __clz(int(differing));
    // Bucket (best - score) x scale: monotone in the key, as float rounding is. A scale that is not a positive
    // finite number (an infinite or NaN best or worst, a range that overflows or is too small) sorts the row.
    const float best = score_from_order_key(~lo);
    const float scale = float(kBuckets) / (best - score_from_order_key(~hi));
    const bool linear = scale > 0.f && isfinite(scale);
    int bucket[kRankItems];
    uint32_t place[kRankItems];  // a result's place among its bucket's in the scatter (arrival order)
#pragma unroll
    for (int e = 0; e < kRankItems; ++e) {
        bucket[e] = min(kBuckets - 1, int((best - score_from_order_key(~key[e])) * scale));
        if (linear && index[e] >= 0) place[e] = atomicAdd(&b.offset[bucket[e]], 1u);
    }
    __syncthreads();
    // Exclusive scan of the counts (thread t owns buckets [t kThreadBuckets, (t + 1) kThreadBuckets)) and the
    // largest.
    uint32_t count[kThreadBuckets], sum = 0u, largest = 0u;
#pragma unroll
    for (int e = 0; e < kThreadBuckets; ++e)
        count[e] = b.offset[first_bucket + e], sum += count[e], largest = max(largest, count[e]);
    uint32_t inclusive = sum;
#pragma unroll
    for (int d = 1; d < 32; d *= 2) {
        const uint32_t up = __shfl_up_sync(~0u, inclusive, d);
        if (lane >= d) inclusive += up;
    }
    largest = __reduce_max_sync(~0u, largest);
    if (lane == 31) warp_sum[warp] = inclusive;
    if (lane == 0) warp_max[warp] = largest;
    __syncthreads();
    uint32_t before = inclusive - sum, results = 0u;
#pragma unroll
    for (int w = 0; w < kRankWarps; ++w) {
        before += w < warp ? warp_sum[w] : 0u;
        results += warp_sum[w];
        largest = max(largest, warp_max[w]);
    }
    if (!linear || largest > kMaxBucket) {
        // Too many comparisons for one result: sort the row instead (the storage is the sort's once every
        // thread has read the counts, which the barrier above ordered before the scan's).
        __syncthreads();
        RankSort(storage.sort).SortBlockedToStriped(key, index, begin_bit, end_bit);
#pragma unroll
        for (int e = 0; e < kRankItems; ++e) {
            const int i = e * kRankThreads + int(threadIdx.x);
            if (i >= k) break;
            store_ranked(row_idx, row_score, index[e], key[e], write_scores, i);
        }
        return;
    }
#pragma unroll
    for (int e = 0; e < kThreadBuckets; ++e) b.offset[first_bucket + e] = before, before += count[e];
    if (threadIdx.x == 0) b.offset[kBuckets] = results;
    __syncthreads();
    // A result's order within its bucket: its key, then its slot; unique in the row.
    static_assert(kMaxTopk <= (1 << 11), "a slot fits 11 bits");
    uint64_t order[kRankItems];
#pragma unroll
    for (int e = 0; e < kRankItems; ++e) {
        if (index[e] < 0) continue;
        order[e] = (uint64_t(key[e]) << 11) | uint64_t(first + e);
        b.entries.order[b.offset[bucket[e]] + place[e]] = order[e];
    }
    __syncthreads();
    uint32_t rank[kRankItems];
#pragma unroll
    for (int e = 0; e < kRankItems; ++e) {
        if (index[e] < 0) continue;
        const uint32_t begin = b.offset[bucket[e]], end = b.offset[bucket[e] + 1];
        uint32_t r = begin;
        for (uint32_t j = begin; j < end; ++j) r += b.entries.order[j] < order[e];
        rank[e] = r;
    }
    __syncthreads();  // every comparison has read the bucket order before rank order overwrites it
#pragma unroll
    for (int e = 0; e < kRankItems; ++e) {
        if (index[e] < 0) continue;
        b.entries.ranked.key[rank[e]] = key[e];
        b.entries.ranked.index[rank[e]] = index[e];
    }
    __syncthreads();
    // Ranks [0, results) are the results; the padding after them is in place already. Striped, so that each
    // store instruction covers whole lines.
    for (int i = int(threadIdx.x); i < int(results); i += kRankThreads)
        store_ranked(row_idx, row_score, b.entries.ranked.index[i], b.entries.ranked.key[i], write_scores, i);
}

}  // namespace

cudaError_t rank_rows(int32_t* indices, float* scores, int32_t rows, int k, bool write_scores,
                      cudaStream_t stream) {
    if (rows <= 0 || k <= 1) return cudaSuccess;  // a row of one entry is ranked already
    rank_rows_kernel<<<rows, kRankThreads, 0, stream>>>(indices, scores, k, write_scores);
    return cudaGetLastError();
}

}  // namespace dsa::kernels
