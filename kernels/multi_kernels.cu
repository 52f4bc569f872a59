// The sharded owned cache's kernels (src/gpu/multi/sharded_topk.cpp): each rank's problem over its own pages,
// its results as candidates over logical positions, and the merge of every rank's candidates into the top k.
#include <algorithm>
#include <cstdint>

#include <cub/block/block_scan.cuh>

#include "common/order_key.h"
#include "common/shard_rule.h"
#include "kernels/launch.h"
#include "kernels/launch_once.cuh"
#include "kernels/select_kernel.cuh"
#include "kernels/select_rows.cuh"

namespace dsa::kernels {
namespace {

// Count of list entries whose position is below `position` (the list is in ascending position order).
__device__ int positions_below(const uint64_t* list, int count, uint32_t position) {
    int lo = 0, hi = count;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (candidate_position(list[mid]) < position) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

constexpr int kShardThreads = 512;
constexpr int kShardItems = 32;  // consecutive pages per thread per pass: 16384 pages in flight per CTA

// One CTA per row, over the row's visible pages in passes of kShardThreads * kShardItems; a block scan of the
// per-thread counts places each of the rank's pages after those before it, so logical order is kept.
__global__ void __launch_bounds__(kShardThreads)
    shard_rows_kernel(PagedProblem pb, int ranks, int rank, int page_shift, int32_t* local_table,
                      int32_t* logical_page, int32_t* local_seq_lens) {
    using Scan = cub::BlockScan<int, kShardThreads>;
    __shared__ typename Scan::TempStorage scan;
    __shared__ int row_tokens;
    const int64_t r = blockIdx.x;
    const int next_n = pb.shape.next_n, P = pb.shape.page_size;
    const int b = int(r / next_n);
    const int64_t visible = visible_positions(pb.seq_lens[b], next_n, int(r % next_n));
    const int64_t pages = (visible + P - 1) >> page_shift;
    const int32_t* table = pb.block_table + int64_t(b) * pb.block_table_stride;
    int32_t* out_table = local_table + r * pb.max_pages;
    int32_t* out_logical = logical_page + r * pb.max_pages;
    if (threadIdx.x == 0) row_tokens = 0;
    int placed = 0, tokens = 0;
    for (int64_t start = 0; start < pages; start += kShardThreads * kShardItems) {
        const int64_t first = start + int64_t(threadIdx.x) * kShardItems;
        int32_t page[kShardItems];
        int count = 0;
#pragma unroll
        for (int t = 0; t < kShardItems; ++t) {
            page[t] = first + t < pages ? table[first + t] : -1;
            count += page[t] >= 0 && shard_owner(page[t], ranks) == rank;
        }
        int before = 0, total = 0;
        Scan(scan).ExclusiveSum(count, before, total);
        int c = placed + before;
#pragma unroll
        for (int t = 0; t < kShardItems; ++t) {
            if (page[t] < 0 || shard_owner(page[t], ranks) != rank) continue;
            const int64_t i = first + t;
            out_table[c] = int32_t(shard_local_page(page[t], ranks));
            out_logical[c] = int32_t(i);
            ++c;
            tokens += int(visible - (i << page_shift) < P ? visible - (i << page_shift) : P);
        }
        placed += total;
        __syncthreads();  // the scan storage is reused by the next pass
    }
    if (tokens) atomicAdd(&row_tokens, tokens);
    __syncthreads();
    if (threadIdx.x == 0) local_seq_lens[r] = row_tokens;
}

__global__ void shard_candidates_kernel(const int32_t* local_indices, const float* local_scores,
                                        const int32_t* logical_page, int32_t max_pages, int page_shift, int64_t rows,
                                        int topk, uint64_t* candidates) {
    const int64_t total = rows * topk;
    for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
        const int32_t p = local_indices[i];
        uint64_t key = 0;
        if (p >= 0) {
            const int64_t r = i / topk;
            const uint32_t logical = (uint32_t(logical_page[r * max_pages + (p >> page_shift)]) << page_shift) |
                                     uint32_t(p & ((1 << page_shift) - 1));
            key = candidate_key(local_scores[i], logical);
        }
        candidates[i] = key;
    }
}

// One CTA per row: the ranks' lists are merged into position order in shared memory (each entry's place is
// its index plus the entries of the other lists at smaller positions; positions are distinct, as the ranks
// hold disjoint pages), then selected exactly like one chunk of a row, so the result equals one GPU's.
constexpr int kMergeItems = kChunk / kSelectThreads;
constexpr int kMaxMergeRanks = 64;

__global__ void __launch_bounds__(kSelectThreads, 1)
    merge_shard_kernel(PagedRows rows, const uint64_t* candidates, int ranks, int k, bool sorted, TopkOutputs out) {
    extern __shared__ __align__(16) uint8_t merge_smem[];
    SelectShared& sh = *reinterpret_cast<SelectShared*>(merge_smem);
    __shared__ int counts[kMaxMergeRanks];
    const int64_t r = blockIdx.x, total_rows = rows.pb.rows();
    const int n = ranks * k;
    for (int i = threadIdx.x; i < n; i += kSelectThreads)
        sh.keys[i] = candidates[(int64_t(i / k) * total_rows + r) * k + i % k];
    __syncthreads();
    if (threadIdx.x < ranks) {  // real entries are a prefix: 0 ranks below every candidate
        const uint64_t* list = sh.keys + threadIdx.x * k;
        int lo = 0, hi = k;
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (list[mid] != 0u) lo = mid + 1;
            else hi = mid;
        }
        counts[threadIdx.x] = lo;
    }
    __syncthreads();
    uint64_t items[kMergeItems];
    int places[kMergeItems];
#pragma unroll
    for (int t = 0; t < kMergeItems; ++t) {
        const int i = threadIdx.x + t * kSelectThreads;
        const int list = i / k, index = i % k;
        places[t] = -1;
        if (i < n && index < counts[list]) {
            items[t] = sh.keys[i];
            const uint32_t position = candidate_position(items[t]);
            int place = index;
            for (int other = 0; other < ranks; ++other)
                if (other != list) place += positions_below(sh.keys + other * k, counts[other], position);
            places[t] = place;
        }
    }
    int m = 0;
    for (int w = 0; w < ranks; ++w) m += counts[w];
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kMergeItems; ++t)
        if (places[t] >= 0) sh.keys[places[t]] = items[t];
    __syncthreads();
    const int count = select_top(sh, m, k);
    write_row(sh, rows, r, count, k, sorted, out);
}

}  // namespace

cudaError_t shard_rows(const PagedProblem& problem, int ranks, int rank, int32_t* local_table, int32_t* logical_page,
                       int32_t* local_seq_lens, cudaStream_t stream) {
    if (problem.rows() == 0) return cudaSuccess;
    shard_rows_kernel<<<unsigned(problem.rows()), kShardThreads, 0, stream>>>(
        problem, ranks, rank, log2_of(problem.shape.page_size), local_table, logical_page, local_seq_lens);
    return cudaGetLastError();
}

cudaError_t shard_candidates(const int32_t* local_indices, const float* local_scores, const int32_t* logical_page,
                             int32_t max_pages, int page_size, int64_t rows, int topk, uint64_t* candidates,
                             cudaStream_t stream) {
    const int64_t total = rows * topk;
    if (total == 0) return cudaSuccess;
    const unsigned blocks = unsigned(std::min<int64_t>((total + 255) / 256, 4096));
    shard_candidates_kernel<<<blocks, 256, 0, stream>>>(local_indices, local_scores, logical_page, max_pages,
                                                         log2_of(page_size), rows, topk, candidates);
    return cudaGetLastError();
}

int max_merge_ranks(int topk) { return std::min(kMaxMergeRanks, kChunk / std::max(topk, 1)); }

int max_merge_topk(int ranks) { return ranks > kMaxMergeRanks ? 0 : std::min(kMaxTopk, kChunk / std::max(ranks, 1)); }

cudaError_t merge_shard_candidates(const PagedProblem& problem, const uint64_t* candidates, int ranks,
                                   cudaStream_t stream) {
    if (problem.rows() == 0) return cudaSuccess;
    const cudaError_t err = allow_dynamic_smem<merge_shard_kernel>(int(sizeof(SelectShared)));
    if (err != cudaSuccess) return err;
    PagedRows rows{problem, 0, log2_of(problem.shape.page_size)};
    merge_shard_kernel<<<unsigned(problem.rows()), kSelectThreads, sizeof(SelectShared), stream>>>(
        rows, candidates, ranks, problem.shape.topk, problem.shape.sorted, problem.out);
    return cudaGetLastError();
}

}  // namespace dsa::kernels
