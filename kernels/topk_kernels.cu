// The top-k launches of kernels/launch.h: workspace layout, the scoring launch and the selection launch.
#include <algorithm>
#include <cstdint>

#include "kernels/decode_fused.h"
#include "kernels/launch.h"
#include "kernels/launch_once.cuh"
#include "kernels/prefill_pairs.h"
#include "kernels/score_kernels.cuh"
#include "kernels/select_kernel.cuh"
#include "kernels/select_rows.cuh"

namespace dsa::kernels {
namespace {

constexpr int kMaxGridY = 65535;
constexpr size_t kRaggedScoreBudget = size_t(256) << 20;  // bytes of ragged scores per launch

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

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
    constexpr auto kernel = score_kernel<Groups, TileMath>;
    const int smem = score_smem_bytes(group_rows, heads);
    // Once per device: the shared-memory limit at the largest group's size (heads is TileMath's), and the
    // occupancy at each group size.
    cudaError_t err = allow_dynamic_smem<kernel>(score_smem_bytes(kMaxGroupRows, heads));
    if (err != cudaSuccess) return err;
    int resident = 1;
    err = resident_ctas_once<kernel, kMaxGroupRows + 1>(kScoreThreads, smem, group_rows, &resident);
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
    if (kind != ScoreKernel::Portable && device.compute_capability == 90 && DSA_KERNELS_HAVE_SM90A)
        return launch_score<Groups, WgmmaTileMath<H>>(groups, groups_count, H, group_rows, max_tokens, device, scores,
                                                      stream);
    if (kind != ScoreKernel::Portable && device.compute_capability >= 89)
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
    constexpr auto kernel = select_kernel<Rows>;
    const cudaError_t err = allow_dynamic_smem<kernel>(int(sizeof(SelectShared)));
    if (err != cudaSuccess) return err;
    const unsigned chunks = unsigned(std::max<int64_t>(1, (plan.score_stride + kChunk - 1) / kChunk));
    kernel<<<dim3(chunks, unsigned(count)), kSelectThreads, sizeof(SelectShared), stream>>>(
        rows, scores, shape.topk, shape.sorted, out, plan.tree, error_flag);
    return cudaGetLastError();
}

}  // namespace

// Either paged path may run (the fused one on sm_90a, the score + select kernels elsewhere): room for both.
size_t paged_workspace_bytes(const PagedProblem& pb) {
    return pb.rows() == 0 ? 0 : std::max(paged_plan(pb).total, decode_fused_workspace_bytes(pb));
}

bool ragged_uses_fused(const RaggedProblem& pb, const DeviceTraits& device, ScoreKernel kind) {
    return fused_kernels_allowed(kind) && prefill_pairs_runs(pb, device.compute_capability);
}

size_t ragged_workspace_bytes(const RaggedProblem& pb, const DeviceTraits& device, ScoreKernel kind) {
    if (pb.rows() == 0) return 0;
    if (!ragged_uses_fused(pb, device, kind)) return ragged_plan(pb).total;
    return prefill_pairs_workspace_bytes(pb, device.sm_count);
}

cudaError_t topk_paged(const PagedProblem& problem, const DeviceTraits& device, ScoreKernel kind, void* workspace,
                       int* error_flag, cudaStream_t stream) {
    if (fused_kernels_allowed(kind) && decode_fused_available(problem, device.compute_capability))
        return decode_fused_topk(problem, device.sm_count, kind == ScoreKernel::FusedTwoLaunches, workspace, error_flag,
                                 stream);
    WorkspacePlan plan = paged_plan(problem);
    float* scores = plan.bind(workspace);
    const int next_n = problem.shape.next_n;
    const int H = problem.shape.num_heads;
    // Sequences in groups that fit the grid's y dimension; each group is a smaller problem of its own.
    for (int32_t first = 0; first < problem.batch_size; first += kSequencesPerLaunch) {
        PagedProblem pb = problem;
        pb.batch_size = std::min<int32_t>(kSequencesPerLaunch, problem.batch_size - first);
        const int64_t row0 = int64_t(first) * next_n;
        pb.q += row0 * H * kHeadDim;
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
    if (ragged_uses_fused(problem, device, kind)) {
        // The public API requires q and k 16-byte aligned (api/validate.cpp), which TMA needs.
        if (!prefill_pairs_inputs_aligned(problem)) return cudaErrorMisalignedAddress;
        return prefill_pairs_topk(problem, device.sm_count, workspace, error_flag, stream);
    }
    WorkspacePlan plan = ragged_plan(problem);
    float* scores = plan.bind(workspace);
    const int H = problem.shape.num_heads;
    for (int64_t first = 0; first < problem.num_rows; first += plan.rows) {
        RaggedProblem pb = problem;
        pb.num_rows = int32_t(std::min<int64_t>(plan.rows, problem.num_rows - first));
        pb.q += first * H * kHeadDim;
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
