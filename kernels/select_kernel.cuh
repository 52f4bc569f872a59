// Selection: for each row, the k best candidates by the ranking rule of common/order_key.h. A candidate is the
// 64-bit key (order_key(score) << 32) | ~position; larger ranks first.
//
// A row is cut into chunks of kChunk positions. One CTA per chunk loads its candidates into shared memory
// and keeps the chunk's top k (radix select on the score key: 4 passes of 8 bits with per-warp
// shared-memory histograms, then an ordered gather in which ties at the threshold go to the smallest
// positions). Rows of one chunk finish there. Longer rows merge the chunk lists in a tree of fan-in
// kFanIn: the last CTA of a sibling group (atomic ticket) merges the group. Lists stay in position order,
// so the merged set, its order and the output are the same whichever CTA arrives last: the result is a
// pure function of the scores.
#pragma once

#include <cub/block/block_radix_sort.cuh>

#include "common/order_key.h"
#include "common/problem.hpp"

namespace dsa::kernels {

constexpr int kSelectThreads = 1024;
constexpr int kSelectWarps = kSelectThreads / 32;
static_assert(kSelectThreads == 1024, "the histogram reduction assumes four threads per bin");
constexpr int kChunk = 16384;                       // candidates one CTA holds in shared memory
constexpr int kSelectItems = kChunk / kSelectThreads;
constexpr int kFanIn = kChunk / kMaxTopk;           // 8 lists of k merge into one chunk
constexpr int kMaxLevels = 8;

// Where a row's candidate lists and tickets live in the workspace. Nodes of level L are numbered
// [level_offset[L], level_offset[L] + nodes of L); level 0 are the chunks. Sizes are those of the longest
// possible row; a shorter row uses a prefix of every level.
struct MergeTree {
    int levels = 1;                    // levels of lists below the root (0 when rows fit one chunk)
    int level_offset[kMaxLevels + 1] = {};
    int nodes_per_row = 0;             // list nodes per row (all levels below the root)
    int64_t list_stride = 0;           // u64 per list
    uint64_t* lists = nullptr;         // [rows, nodes_per_row, list_stride]
    int* list_counts = nullptr;        // [rows, nodes_per_row]
    int* tickets = nullptr;            // [rows, nodes_per_row]: arrivals at each parent (zeroed per call)
};

struct SelectShared {
    uint64_t keys[kChunk];
    uint64_t picked[kMaxTopk];
    int histogram[256];
    int warp_histogram[kSelectWarps][256];  // private per warp: no cross-warp atomic contention
    uint32_t digit;
    int above;
    int last;
    int warp_equal[kSelectWarps];
    int warp_chosen[kSelectWarps];
    int child_count[kFanIn];
    typename cub::BlockRadixSort<uint64_t, kSelectThreads, kMaxTopk / kSelectThreads>::TempStorage sort;
};

// Among keys whose high word matches the prefix so far, the 8-bit digit holding the remaining-th largest.
__device__ __forceinline__ void pick_digit(SelectShared& sh, int remaining) {
    if (threadIdx.x >= 32) return;
    const int lane = threadIdx.x;
    int local[8], sum = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) sum += (local[i] = sh.histogram[lane * 8 + i]);
    int suffix = sum;  // keys in bins >= lane * 8
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
        const int v = __shfl_down_sync(0xffffffffu, suffix, offset);
        if (lane + offset < 32) suffix += v;
    }
    int above = suffix - sum;
    if (above < remaining && remaining <= suffix) {
        for (int i = 7; i >= 0; --i) {
            if (above + local[i] >= remaining) {
                sh.digit = uint32_t(lane * 8 + i);
                sh.above = above;
                break;
            }
            above += local[i];
        }
    }
}

// Keeps the top k of sh.keys[0, m) in sh.picked, in array order; returns how many (min(m, k)).
__device__ inline int select_top(SelectShared& sh, int m, int k) {
    const int tid = threadIdx.x;
    if (m <= k) {
        for (int i = tid; i < m; i += kSelectThreads) sh.picked[i] = sh.keys[i];
        __syncthreads();
        return m;
    }
    uint32_t prefix = 0, mask = 0;
    int remaining = k;
    const int lane_warp = tid / 32;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int i = tid; i < kSelectWarps * 256; i += kSelectThreads) (&sh.warp_histogram[0][0])[i] = 0;
        __syncthreads();
        for (int i = tid; i < m; i += kSelectThreads) {
            const uint32_t key = uint32_t(sh.keys[i] >> 32);
            if ((key & mask) == prefix) atomicAdd(&sh.warp_histogram[lane_warp][(key >> shift) & 0xffu], 1);
        }
        __syncthreads();
        // Sum the 32 warp histograms: four threads per bin add eight each, then one adds the four.
        {
            const int bin = tid % 256, quarter = tid / 256;
            int partial = 0;
#pragma unroll
            for (int w = 0; w < kSelectWarps / 4; ++w) partial += sh.warp_histogram[quarter * (kSelectWarps / 4) + w][bin];
            __syncthreads();
            sh.warp_histogram[quarter][bin] = partial;
            __syncthreads();
            if (tid < 256)
                sh.histogram[bin] = sh.warp_histogram[0][bin] + sh.warp_histogram[1][bin] + sh.warp_histogram[2][bin] +
                                    sh.warp_histogram[3][bin];
        }
        __syncthreads();
        pick_digit(sh, remaining);
        __syncthreads();
        prefix |= sh.digit << shift;
        mask |= 0xffu << shift;
        remaining -= sh.above;
    }
    const uint32_t threshold = prefix;
    const int take_equal = remaining;

    // Ordered gather. Warp w owns the contiguous segment [w * seg, (w + 1) * seg); lanes read consecutive
    // items (no bank conflicts) and ballots give each item its rank in array order.
    const int warp = tid / 32, lane = tid % 32;
    const unsigned lanes_below = (1u << lane) - 1u;
    const int seg = (m + kSelectWarps * 32 - 1) / (kSelectWarps * 32) * 32;
    const int wbegin = warp * seg, wend = min(m, wbegin + seg);
    int equal = 0;
    for (int i = wbegin + lane; i < wbegin + seg; i += 32)
        equal += __popc(__ballot_sync(0xffffffffu, i < wend && uint32_t(sh.keys[i] >> 32) == threshold));
    if (lane == 0) sh.warp_equal[warp] = equal;
    __syncthreads();
    int equal_before = 0;
    for (int w = 0; w < warp; ++w) equal_before += sh.warp_equal[w];
    int chosen = 0;
    for (int i = wbegin + lane, e = equal_before; i < wbegin + seg; i += 32) {
        const uint32_t key = i < wend ? uint32_t(sh.keys[i] >> 32) : 0u;
        const unsigned equal_mask = __ballot_sync(0xffffffffu, i < wend && key == threshold);
        const bool take = i < wend && (key > threshold ||
                                       (key == threshold && e + __popc(equal_mask & lanes_below) < take_equal));
        chosen += __popc(__ballot_sync(0xffffffffu, take));
        e += __popc(equal_mask);
    }
    if (lane == 0) sh.warp_chosen[warp] = chosen;
    __syncthreads();
    int slot = 0;
    for (int w = 0; w < warp; ++w) slot += sh.warp_chosen[w];
    for (int i = wbegin + lane, e = equal_before; i < wbegin + seg; i += 32) {
        const uint32_t key = i < wend ? uint32_t(sh.keys[i] >> 32) : 0u;
        const unsigned equal_mask = __ballot_sync(0xffffffffu, i < wend && key == threshold);
        const bool take = i < wend && (key > threshold ||
                                       (key == threshold && e + __popc(equal_mask & lanes_below) < take_equal));
        const unsigned take_mask = __ballot_sync(0xffffffffu, take);
        if (take) sh.picked[slot + __popc(take_mask & lanes_below)] = sh.keys[i];
        slot += __popc(take_mask);
        e += __popc(equal_mask);
    }
    __syncthreads();
    return k;
}

// Writes the row's output from sh.picked[0, count): sorted by rank when asked, else in position order.
template <class Rows>
__device__ void write_row(SelectShared& sh, const Rows& rows, int64_t r, int count, int k, bool sorted,
                          const TopkOutputs& out) {
    constexpr int kItems = kMaxTopk / kSelectThreads;
    if (sorted) {
        uint64_t items[kItems];
#pragma unroll
        for (int i = 0; i < kItems; ++i) {
            const int idx = threadIdx.x * kItems + i;
            items[i] = idx < count ? sh.picked[idx] : 0u;  // 0 ranks below every real candidate
        }
        __syncthreads();
        cub::BlockRadixSort<uint64_t, kSelectThreads, kItems>(sh.sort).SortDescending(items);
        __syncthreads();
#pragma unroll
        for (int i = 0; i < kItems; ++i) sh.picked[threadIdx.x * kItems + i] = items[i];
        __syncthreads();
    }
    int32_t* indices = out.indices + r * k;
    float* scores = out.scores ? out.scores + r * k : nullptr;
    for (int i = threadIdx.x; i < k; i += kSelectThreads) {
        const bool real = i < count;
        const uint64_t candidate = real ? sh.picked[i] : 0u;
        indices[i] = real ? rows.index_of(r, candidate_position(candidate)) : -1;
        if (scores) scores[i] = real ? score_from_order_key(uint32_t(candidate >> 32)) : padding_score();
    }
}

// grid: (chunks of the longest row, rows); kSelectThreads threads; dynamic shared memory sizeof(SelectShared).
template <class Rows>
__global__ void __launch_bounds__(kSelectThreads, 1)
    select_kernel(Rows rows, const float* score_base, int k, bool sorted, TopkOutputs out, MergeTree tree,
                  int* error_flag) {
    extern __shared__ __align__(16) uint8_t select_smem[];
    SelectShared& sh = *reinterpret_cast<SelectShared*>(select_smem);
    const int64_t r = blockIdx.y;
    int node = blockIdx.x;

    const bool bad = rows.bad(r);  // block-wide
    const int64_t n = bad ? 0 : rows.visible(r);
    const int chunks = n > kChunk ? int((n + kChunk - 1) / kChunk) : 1;
    if (node >= chunks) return;
    if (bad) {
        if (node == 0) {
            if (threadIdx.x == 0) *error_flag = 1;
            write_row(sh, rows, r, 0, k, false, out);
        }
        return;
    }

    const float* scores = rows.scores(score_base, r);
    const int64_t first = int64_t(node) * kChunk;
    int m = int(n - first < kChunk ? n - first : kChunk);
    {
        // All of a thread's loads first, then the stores: one memory round trip instead of one per item.
        float value[kSelectItems];
#pragma unroll
        for (int t = 0; t < kSelectItems; ++t) {
            const int i = threadIdx.x + t * kSelectThreads;
            value[t] = i < m ? scores[first + i] : 0.0f;
        }
#pragma unroll
        for (int t = 0; t < kSelectItems; ++t) {
            const int i = threadIdx.x + t * kSelectThreads;
            if (i < m) sh.keys[i] = candidate_key(value[t], uint32_t(first + i));
        }
    }
    __syncthreads();
    int count = select_top(sh, m, k);

    // Merge tree: store this list, and the last arrival of each sibling group merges the group.
    int nodes = chunks;
    for (int level = 0; nodes > 1; ++level) {
        const int64_t slot = r * tree.nodes_per_row + tree.level_offset[level] + node;
        for (int i = threadIdx.x; i < count; i += kSelectThreads) tree.lists[slot * tree.list_stride + i] = sh.picked[i];
        if (threadIdx.x == 0) tree.list_counts[slot] = count;
        __threadfence();
        __syncthreads();
        const int parent = node / kFanIn;
        const int siblings = min(kFanIn, nodes - parent * kFanIn);
        if (threadIdx.x == 0) {
            const int ticket = atomicAdd(&tree.tickets[r * tree.nodes_per_row + tree.level_offset[level] + parent], 1);
            sh.last = ticket == siblings - 1;
        }
        __syncthreads();
        if (!sh.last) return;
        __threadfence();
        // The siblings' counts first (one round trip), then every list's items at their offsets at once.
        const int64_t first_child = r * tree.nodes_per_row + tree.level_offset[level] + parent * kFanIn;
        if (threadIdx.x < kFanIn)
            sh.child_count[threadIdx.x] = threadIdx.x < siblings ? __ldcg(&tree.list_counts[first_child + threadIdx.x]) : 0;
        __syncthreads();
        m = 0;
        for (int c = 0; c < siblings; ++c) {
            const int child_count = sh.child_count[c];
            const uint64_t* list = tree.lists + (first_child + c) * tree.list_stride;
#pragma unroll
            for (int t = 0; t < kMaxTopk / kSelectThreads; ++t) {
                const int i = threadIdx.x + t * kSelectThreads;
                if (i < child_count) sh.keys[m + i] = __ldcg(&list[i]);
            }
            m += child_count;
        }
        __syncthreads();
        count = select_top(sh, m, k);
        node = parent;
        nodes = (nodes + kFanIn - 1) / kFanIn;
    }
    write_row(sh, rows, r, count, k, sorted, out);
}

}  // namespace dsa::kernels
