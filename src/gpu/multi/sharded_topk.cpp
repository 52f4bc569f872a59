#include "gpu/multi/sharded_topk.hpp"

#include "common/error.hpp"

namespace dsa {

ShardedPlan plan_sharded(RankGroup& ranks, const PagedProblem& host, const GpuCacheStorage& cache) {
    const int world = ranks.world_size();
    const int k = host.shape.topk;
    require(world <= kernels::max_merge_ranks(k), DSA_STATUS_NOT_IMPLEMENTED, "a sharded cache over ", world,
            " GPUs merges up to ", kernels::max_merge_ranks(k), " candidate lists of k = ", k,
            " in this version: use k <= ", kernels::max_merge_topk(world), " or a replicated cache");
    const int64_t rows = host.rows();
    const size_t local = ranks.size();
    const InputBlock block(host, host.batch_size);
    const OutputStage out_stage(host, block.bytes);
    ShardedPlan plan{block, out_stage, ranks.pinned(out_stage.bytes), ranks.index_of(host.output_device, 0),
                     std::vector<ShardedPlan::Part>(local), {}};
    for (size_t i = 0; i < local; ++i) {
        Device& d = ranks.device(i);
        PagedProblem shard = host;
        shard.shape.next_n = 1;
        shard.shape.index_mode = IndexMode::PagedLogical;
        shard.shape.sorted = false;
        shard.batch_size = int32_t(rows);
        shard.block_table_stride = host.max_pages;
        shard.num_pages = cache.local_pages();
        shard.k_cache = cache.pages(i);
        ScratchPlan scratch;
        const size_t block_at = scratch.add(block.bytes), shard_len_at = scratch.add(size_t(rows) * 4),
                     shard_table_at = scratch.add(size_t(rows * host.max_pages) * 4),
                     logical_at = scratch.add(size_t(rows * host.max_pages) * 4),
                     idx_at = scratch.add(size_t(rows * k) * 4), score_at = scratch.add(size_t(rows * k) * 4),
                     out_idx_at = scratch.add(size_t(rows * k) * 4), out_score_at = scratch.add(size_t(rows * k) * 4),
                     cand_at = scratch.add(size_t(world) * size_t(rows * k) * 8),
                     work_at = scratch.add(kernels::paged_workspace_bytes(shard));
        DeviceScope scope(d.id);
        uint8_t* base = d.scratch.ensure(scratch.total);
        ShardedPlan::Part& part = plan.parts[i];
        part.device_block = base + block_at;
        part.full = host;
        block.bind(part.full, part.device_block);
        part.full.out.indices = reinterpret_cast<int32_t*>(base + out_idx_at);
        part.full.out.scores = host.out.scores ? reinterpret_cast<float*>(base + out_score_at) : nullptr;
        shard.q = part.full.q;
        shard.weights = part.full.weights;
        shard.seq_lens = reinterpret_cast<const int32_t*>(base + shard_len_at);
        shard.block_table = reinterpret_cast<const int32_t*>(base + shard_table_at);
        shard.out.indices = reinterpret_cast<int32_t*>(base + idx_at);
        shard.out.scores = reinterpret_cast<float*>(base + score_at);
        part.shard = shard;
        part.logical_page = reinterpret_cast<int32_t*>(base + logical_at);
        part.candidates = reinterpret_cast<uint64_t*>(base + cand_at);
        part.workspace = base + work_at;
        plan.candidate_buffers.push_back(part.candidates);
    }
    return plan;
}

void run_sharded(RankGroup& ranks, kernels::ScoreKernel kernel, const PagedProblem& host, const ShardedPlan& plan,
                 PhaseTrace& trace) {
    const int world = ranks.world_size();
    const int k = host.shape.topk;
    const int64_t rows = host.rows();
    const size_t local = ranks.size(), out_index = plan.out_index;
    const size_t part_bytes = size_t(rows * k) * 8;
    // The local devices' threads stage a share of the sequences each, then each device uploads the block.
    ranks.workers().run(local, [&](size_t i) {
        plan.block.stage(plan.pinned, host, 0, int32_t(int64_t(host.batch_size) * int64_t(i) / int64_t(local)),
                         int32_t(int64_t(host.batch_size) * int64_t(i + 1) / int64_t(local)));
    });
    trace.phase("plan+stage", [] {});
    ranks.workers().run(local, [&](size_t i) {
        Device& d = ranks.device(i);
        DeviceScope scope(d.id);
        const ShardedPlan::Part& part = plan.parts[i];
        const int rank = ranks.rank_of(i);
        PhaseTrace device_trace(i == 0 ? "dsa_topk sharded, device 0" : nullptr);
        const auto sync = [&] { check_cuda(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize"); };
        check_cuda(cudaMemcpyAsync(part.device_block, plan.pinned, plan.block.bytes, cudaMemcpyHostToDevice, d.stream),
                   "copying inputs to the device");
        device_trace.phase("upload", sync);
        check_cuda(kernels::shard_rows(part.full, world, rank, const_cast<int32_t*>(part.shard.block_table),
                                       part.logical_page, const_cast<int32_t*>(part.shard.seq_lens), d.stream),
                   "launching the shard planning");
        device_trace.phase("shard_rows", sync);
        check_cuda(kernels::topk_paged(part.shard, d.traits, kernel, part.workspace, d.error_flag, d.stream),
                   "launching the paged top-k kernels");
        device_trace.phase("topk", sync);
        uint64_t* mine = part.candidates + size_t(rank) * size_t(rows * k);
        check_cuda(kernels::shard_candidates(part.shard.out.indices, part.shard.out.scores, part.logical_page,
                                             host.max_pages, host.shape.page_size, rows, k, mine, d.stream),
                   "launching the candidate conversion");
        ranks.transport().send_part(i, out_index, part_bytes, plan.candidate_buffers);
        sync();
    });
    trace.phase("upload+compute+exchange", [] {});
    ranks.transport().collect(part_bytes, plan.candidate_buffers);
    trace.phase("collect", [&] { ranks.wait_all(); });
    Device& out = ranks.device(out_index);
    DeviceScope scope(out.id);
    const ShardedPlan::Part& part = plan.parts[out_index];
    check_cuda(kernels::merge_shard_candidates(part.full, part.candidates, world, out.stream),
               "launching the candidate merge");
    trace.phase("merge", [&] { ranks.wait_all(); });
    deliver(out, host, part.full.out, 0, rows, plan.pinned, plan.out_stage);
    trace.phase("deliver", [] {});
}

}  // namespace dsa
