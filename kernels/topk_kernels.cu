// Launch functions of topk_kernels.h: workspace layout, the scoring launch and the selection launch.
#include <algorithm>
#include <cstdint>

#include <cub/block/block_scan.cuh>

#include "kernels/decode_fused.h"
#include "kernels/score_kernels.cuh"
#include "kernels/select_kernel.cuh"
#include "kernels/topk_kernels.h"

namespace dsa::kernels {
namespace {

constexpr int kMaxGridY = 65535;
constexpr size_t kRaggedScoreBudget = size_t(256) << 20;  // bytes of ragged scores per launch

// What the selection kernel needs to know about a row: where its scores are, how many positions it sees,
// whether its device-side input is bad (block-wide call), and how a position becomes an output index.
struct PagedRows {
    PagedProblem pb;
    int64_t score_stride;
    int page_shift;  // log2(page_size)

    __device__ const float* scores(const float* base, int64_t r) const { return base + r * score_stride; }
    // Block-wide: every thread must call it.
    __device__ bool bad(int64_t r) const {
        const int b = int(r / pb.shape.next_n);
        const int64_t len = pb.seq_lens[b];
        const int64_t cap = int64_t(pb.max_pages) * pb.shape.page_size;
        int bad_entry = 0;
        if (len >= 0 && len <= cap) {
            const int32_t* table = pb.block_table + int64_t(b) * pb.block_table_stride;
            for (int64_t i = threadIdx.x; i < (len + pb.shape.page_size - 1) >> page_shift; i += blockDim.x)
                bad_entry |= (table[i] < 0 || table[i] >= pb.num_pages);
        } else {
            bad_entry = 1;
        }
        return __syncthreads_or(bad_entry) != 0;
    }
    __device__ int64_t visible(int64_t r) const {
        return visible_positions(pb.seq_lens[r / pb.shape.next_n], pb.shape.next_n, int(r % pb.shape.next_n));
    }
    __device__ int32_t index_of(int64_t r, uint32_t p) const {
        if (pb.shape.index_mode == IndexMode::PagedLogical) return int32_t(p);
        const int b = int(r / pb.shape.next_n);
        return (pb.block_table[int64_t(b) * pb.block_table_stride + (p >> page_shift)] << page_shift) +
               int32_t(p & ((1u << page_shift) - 1u));
    }
};

struct RaggedRows {
    RaggedProblem pb;
    int64_t score_stride;

    __device__ const float* scores(const float* base, int64_t r) const { return base + r * score_stride; }
    __device__ bool bad(int64_t r) const {
        const int64_t s = pb.row_start[r], e = pb.row_end[r];
        return !(s >= 0 && s <= e && e <= pb.num_keys);
    }
    __device__ int64_t visible(int64_t r) const { return int64_t(pb.row_end[r]) - pb.row_start[r]; }
    __device__ int32_t index_of(int64_t r, uint32_t p) const {
        return pb.shape.index_mode == IndexMode::RaggedAbsolute ? pb.row_start[r] + int32_t(p) : int32_t(p);
    }
};

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

int log2_of(int power_of_two) { return __builtin_ctz(unsigned(power_of_two)); }

// The workspace of one launch: scores [rows, score_stride] fp32, then the merge tree's lists, counts and
// tickets. Sized for rows of up to max_tokens positions.
struct WorkspacePlan {
    int64_t rows = 0;
    int64_t score_stride = 0;
    MergeTree tree;
    size_t lists_offset = 0, counts_offset = 0, tickets_offset = 0, tickets_bytes = 0, total = 0;

    WorkspacePlan(int64_t rows_, int64_t max_tokens, int topk) : rows(rows_) {
        score_stride = round_up(std::max<int64_t>(max_tokens, 1), 4);
        int64_t nodes = (max_tokens + kChunk - 1) / kChunk;
        tree.levels = 0;
        tree.level_offset[0] = 0;
        while (nodes > 1) {  // every level below the root stores one list per node
            tree.level_offset[tree.levels + 1] = tree.level_offset[tree.levels] + int(nodes);
            ++tree.levels;
            nodes = (nodes + kFanIn - 1) / kFanIn;
        }
        tree.nodes_per_row = tree.level_offset[tree.levels];
        tree.list_stride = round_up(topk, 2);
        const size_t score_bytes = size_t(rows * score_stride * 4);
        lists_offset = round_up(int64_t(score_bytes), 256);
        counts_offset = lists_offset + size_t(rows * tree.nodes_per_row * tree.list_stride * 8);
        tickets_offset = round_up(int64_t(counts_offset + size_t(rows * tree.nodes_per_row * 4)), 256);
        tickets_bytes = size_t(rows * tree.nodes_per_row * 4);
        total = tickets_offset + tickets_bytes;
    }

    float* bind(void* workspace) {
        auto* base = static_cast<uint8_t*>(workspace);
        tree.lists = reinterpret_cast<uint64_t*>(base + lists_offset);
        tree.list_counts = reinterpret_cast<int*>(base + counts_offset);
        tree.tickets = reinterpret_cast<int*>(base + tickets_offset);
        return reinterpret_cast<float*>(base);
    }
};

// Paged sequences per launch: the selection grid has one y-block per row (next_n <= 4 rows a sequence).
constexpr int32_t kSequencesPerLaunch = kMaxGridY / 4;

int64_t ragged_rows_per_launch(const RaggedProblem& pb) {
    const int64_t stride = round_up(std::max<int64_t>(pb.num_keys, 1), 4);
    const int64_t by_budget = std::max<int64_t>(1, int64_t(kRaggedScoreBudget) / (stride * 4));
    return std::min<int64_t>({by_budget, int64_t(kMaxGridY), std::max<int64_t>(pb.num_rows, 1)});
}

WorkspacePlan paged_plan(const PagedProblem& pb) {
    const int64_t sequences = std::min<int64_t>(pb.batch_size, kSequencesPerLaunch);
    return WorkspacePlan(sequences * pb.shape.next_n, int64_t(pb.max_pages) * pb.shape.page_size, pb.shape.topk);
}

WorkspacePlan ragged_plan(const RaggedProblem& pb) {
    return WorkspacePlan(ragged_rows_per_launch(pb), pb.num_keys, pb.shape.topk);
}

template <class Groups, class TileMath>
cudaError_t launch_score(const Groups& groups, int groups_count, int heads, int group_rows, int64_t max_tokens,
                         const DeviceTraits& device, float* scores, cudaStream_t stream) {
    auto kernel = score_kernel<Groups, TileMath>;
    const int smem = score_smem_bytes(group_rows, heads);
    // Raising the dynamic shared-memory limit is idempotent and cheap; doing it per launch keeps no state.
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
    int resident = 1;
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, kernel, kScoreThreads, smem);
    if (err != cudaSuccess) return err;
    // At most one wave of resident CTAs spread over the groups (rounding down: a partial second wave would
    // run alone at the end); each CTA walks its group's tiles with a stride.
    const int64_t tiles = std::max<int64_t>(1, (max_tokens + kTileTokens - 1) / kTileTokens);
    const int64_t slots = int64_t(device.sm_count) * std::max(resident, 1);
    const int64_t per_group = std::min<int64_t>(tiles, std::max<int64_t>(1, slots / groups_count));
    kernel<<<dim3(unsigned(per_group), unsigned(groups_count)), kScoreThreads, smem, stream>>>(groups, heads, group_rows,
                                                                                               scores);
    return cudaGetLastError();
}

template <class Groups, int H>
cudaError_t launch_score_heads(const Groups& groups, int groups_count, int group_rows, int64_t max_tokens,
                               const DeviceTraits& device, ScoreKernel kind, float* scores, cudaStream_t stream) {
    if (kind == ScoreKernel::Auto && device.compute_capability == 90 && DSA_KERNELS_HAVE_SM90A)
        return launch_score<Groups, WgmmaTileMath<H>>(groups, groups_count, H, group_rows, max_tokens, device, scores,
                                                      stream);
    if (kind == ScoreKernel::Auto && device.compute_capability >= 89)
        return launch_score<Groups, TensorCoreTileMath<H>>(groups, groups_count, H, group_rows, max_tokens, device,
                                                           scores, stream);
    return launch_score<Groups, PortableTileMath<H>>(groups, groups_count, H, group_rows, max_tokens, device, scores,
                                                     stream);
}

// The fastest scoring kernel the device and this build have: wgmma (sm_90a image), fp8 mma.sync (sm_89+),
// else CUDA cores.
template <class Groups>
cudaError_t launch_score_for(const Groups& groups, int groups_count, int heads, int group_rows, int64_t max_tokens,
                             const DeviceTraits& device, ScoreKernel kind, float* scores, cudaStream_t stream) {
    return heads == 64 ? launch_score_heads<Groups, 64>(groups, groups_count, group_rows, max_tokens, device, kind,
                                                        scores, stream)
                       : launch_score_heads<Groups, 32>(groups, groups_count, group_rows, max_tokens, device, kind,
                                                        scores, stream);
}

// Zeroes the merge tree's tickets; queued before the score kernel, so the selection follows it directly.
cudaError_t clear_tickets(const WorkspacePlan& plan, cudaStream_t stream) {
    return plan.tickets_bytes > 0 ? cudaMemsetAsync(plan.tree.tickets, 0, plan.tickets_bytes, stream) : cudaSuccess;
}

template <class Rows>
cudaError_t launch_select(const Rows& rows, int64_t count, const float* scores, const TopkShape& shape,
                          const TopkOutputs& out, const WorkspacePlan& plan, int* error_flag, cudaStream_t stream) {
    auto kernel = select_kernel<Rows>;
    const cudaError_t err =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sizeof(SelectShared)));
    if (err != cudaSuccess) return err;
    const unsigned chunks = unsigned(std::max<int64_t>(1, (plan.score_stride + kChunk - 1) / kChunk));
    kernel<<<dim3(chunks, unsigned(count)), kSelectThreads, sizeof(SelectShared), stream>>>(
        rows, scores, shape.topk, shape.sorted, out, plan.tree, error_flag);
    return cudaGetLastError();
}

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
            count += page[t] >= 0 && page[t] % ranks == rank;
        }
        int before = 0, total = 0;
        Scan(scan).ExclusiveSum(count, before, total);
        int c = placed + before;
#pragma unroll
        for (int t = 0; t < kShardItems; ++t) {
            if (page[t] < 0 || page[t] % ranks != rank) continue;
            const int64_t i = first + t;
            out_table[c] = page[t] / ranks;
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

cudaError_t merge_shard_candidates(const PagedProblem& problem, const uint64_t* candidates, int ranks,
                                   cudaStream_t stream) {
    if (problem.rows() == 0) return cudaSuccess;
    if (ranks > max_merge_ranks(problem.shape.topk)) return cudaErrorInvalidValue;
    const cudaError_t err =
        cudaFuncSetAttribute(merge_shard_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(sizeof(SelectShared)));
    if (err != cudaSuccess) return err;
    PagedRows rows{problem, 0, log2_of(problem.shape.page_size)};
    merge_shard_kernel<<<unsigned(problem.rows()), kSelectThreads, sizeof(SelectShared), stream>>>(
        rows, candidates, ranks, problem.shape.topk, problem.shape.sorted, problem.out);
    return cudaGetLastError();
}

// Either paged path may run (the fused one on sm_90a, the score + select kernels elsewhere): room for both.
size_t paged_workspace_bytes(const PagedProblem& pb) {
    return pb.rows() == 0 ? 0 : std::max(paged_plan(pb).total, decode_fused_workspace_bytes(pb));
}

size_t ragged_workspace_bytes(const RaggedProblem& pb) { return pb.rows() == 0 ? 0 : ragged_plan(pb).total; }

cudaError_t topk_paged(const PagedProblem& problem, const DeviceTraits& device, ScoreKernel kind, void* workspace,
                       int* error_flag, cudaStream_t stream) {
    if (kind == ScoreKernel::Auto && decode_fused_available(problem, device.compute_capability))
        return decode_fused_topk(problem, device.sm_count, workspace, error_flag, stream);
    WorkspacePlan plan = paged_plan(problem);
    float* scores = plan.bind(workspace);
    const int next_n = problem.shape.next_n;
    const int H = problem.shape.num_heads;
    // Sequences in groups that fit the grid's y dimension; each group is a smaller problem of its own.
    for (int32_t first = 0; first < problem.batch_size; first += kSequencesPerLaunch) {
        PagedProblem pb = problem;
        pb.batch_size = std::min<int32_t>(kSequencesPerLaunch, problem.batch_size - first);
        const int64_t row0 = int64_t(first) * next_n;
        pb.q += row0 * H * kDim;
        pb.weights += row0 * H;
        pb.seq_lens += first;
        if (pb.block_table) pb.block_table += int64_t(first) * pb.block_table_stride;  // NULL when max_pages is 0
        pb.out.indices += row0 * pb.shape.topk;
        if (pb.out.scores) pb.out.scores += row0 * pb.shape.topk;

        cudaError_t err = clear_tickets(plan, stream);
        if (err != cudaSuccess) return err;
        err = launch_score_for(PagedGroups{pb, plan.score_stride, log2_of(pb.shape.page_size)}, pb.batch_size, H, next_n,
                                           int64_t(pb.max_pages) * pb.shape.page_size, device, kind, scores, stream);
        if (err != cudaSuccess) return err;
        err = launch_select(PagedRows{pb, plan.score_stride, log2_of(pb.shape.page_size)}, pb.rows(), scores, pb.shape, pb.out, plan, error_flag,
                            stream);
        if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
}

cudaError_t topk_ragged(const RaggedProblem& problem, const DeviceTraits& device, ScoreKernel kind, void* workspace,
                        int* error_flag, cudaStream_t stream) {
    WorkspacePlan plan = ragged_plan(problem);
    float* scores = plan.bind(workspace);
    const int H = problem.shape.num_heads;
    for (int64_t first = 0; first < problem.num_rows; first += plan.rows) {
        RaggedProblem pb = problem;
        pb.num_rows = int32_t(std::min<int64_t>(plan.rows, problem.num_rows - first));
        pb.q += first * H * kDim;
        pb.weights += first * H;
        pb.row_start += first;
        pb.row_end += first;
        pb.out.indices += first * pb.shape.topk;
        if (pb.out.scores) pb.out.scores += first * pb.shape.topk;

        cudaError_t err = clear_tickets(plan, stream);
        if (err != cudaSuccess) return err;
        err = launch_score_for(RaggedGroups{pb, plan.score_stride}, pb.num_rows, H, 1, problem.num_keys,
                                           device, kind, scores, stream);
        if (err != cudaSuccess) return err;
        err = launch_select(RaggedRows{pb, plan.score_stride}, pb.num_rows, scores, pb.shape, pb.out, plan,
                            error_flag, stream);
        if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
}

}  // namespace dsa::kernels
