#include "gpu/multi/replicated_topk.hpp"

#include "dsa_indexer.h"
#include "gpu/multi/sharding.hpp"

namespace dsa {

ReplicatedPlan plan_replicated(RankGroup& ranks, const PagedProblem& host, const GpuCacheStorage& cache) {
    const int64_t k = host.shape.topk, next_n = host.shape.next_n;
    const std::vector<int32_t> bounds = split_sequences(host, ranks.world_size());
    const size_t local = ranks.size();
    std::vector<ReplicatedPlan::Part> parts;
    size_t pinned_bytes = 0;
    for (size_t i = 0; i < local; ++i) {
        const int32_t b0 = bounds[size_t(ranks.rank_of(i))], b1 = bounds[size_t(ranks.rank_of(i)) + 1];
        parts.push_back(ReplicatedPlan::Part{host, b0, b1, InputBlock(host, b1 - b0), pinned_bytes, nullptr, {}, nullptr});
        pinned_bytes += parts.back().block.bytes;
    }
    const OutputStage out_stage(host, pinned_bytes);
    uint8_t* pinned = ranks.pinned(out_stage.bytes);
    for (size_t i = 0; i < local; ++i) {
        Device& d = ranks.device(i);
        ReplicatedPlan::Part& part = parts[i];
        PagedProblem& pb = part.pb;
        pb.batch_size = part.b1 - part.b0;
        pb.num_pages = cache.local_pages();
        pb.k_cache = cache.pages(i);
        ScratchPlan plan;
        const size_t block_at = plan.add(part.block.bytes), idx_at = plan.add(size_t(host.rows() * k * 4)),
                     score_at = plan.add(size_t(host.rows() * k * 4)),
                     work_at = plan.add(kernels::paged_workspace_bytes(pb));
        DeviceScope scope(d.id);
        uint8_t* base = d.scratch.ensure(plan.total);
        part.device_block = base + block_at;
        part.block.bind(pb, part.device_block);
        part.full.indices = reinterpret_cast<int32_t*>(base + idx_at);
        part.full.scores = reinterpret_cast<float*>(base + score_at);
        pb.out.indices = part.full.indices + int64_t(part.b0) * next_n * k;
        pb.out.scores = host.out.scores ? part.full.scores + int64_t(part.b0) * next_n * k : nullptr;
        part.workspace = base + work_at;
    }
    return ReplicatedPlan{bounds, std::move(parts), out_stage, pinned};
}

void run_replicated(RankGroup& ranks, kernels::ScoreKernel kernel, const PagedProblem& host,
                    const ReplicatedPlan& plan, PhaseTrace& trace) {
    const int64_t k = host.shape.topk, next_n = host.shape.next_n;
    const bool gather = ranks.transport().through_nccl();
    uint8_t* pinned = plan.pinned;
    ranks.workers().run(ranks.size(), [&](size_t i) {
        Device& d = ranks.device(i);
        DeviceScope scope(d.id);
        const ReplicatedPlan::Part& part = plan.parts[i];
        PhaseTrace device_trace(i == 0 ? "dsa_topk replicated, device 0" : nullptr);
        const auto sync = [&] { check_cuda(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize"); };
        part.block.stage(pinned + part.pinned_at, host, part.b0, 0, part.b1 - part.b0);
        device_trace.phase("stage", [] {});
        check_cuda(cudaMemcpyAsync(part.device_block, pinned + part.pinned_at, part.block.bytes, cudaMemcpyHostToDevice,
                                   d.stream),
                   "copying inputs to the device");
        device_trace.phase("upload", sync);
        if (part.pb.rows() > 0)
            check_cuda(kernels::topk_paged(part.pb, d.traits, kernel, part.workspace, d.error_flag, d.stream),
                       "launching the paged top-k kernels");
        device_trace.phase("compute", sync);
        if (!gather) deliver(d, host, part.full, int64_t(part.b0) * next_n, part.pb.rows(), pinned, plan.out_stage);
        device_trace.phase(host.output_device == DSA_MEMORY_HOST ? "deliver to host" : "deliver to a GPU", [] {});
    });
    trace.phase(gather ? "stage+compute" : "stage+compute+deliver", [&] { ranks.wait_all(); });
    if (!gather) return;
    // Every rank holds one device here: rank q's rows arrive from rank q, then the whole result goes out.
    const ReplicatedPlan::Part& part = plan.parts[0];
    std::vector<size_t> offsets;
    for (int32_t b : plan.bounds) offsets.push_back(size_t(int64_t(b) * next_n * k * 4));
    ranks.transport().gather_segments(offsets, {part.full.indices});
    if (host.out.scores) ranks.transport().gather_segments(offsets, {part.full.scores});
    trace.phase("gather", [&] { ranks.wait_all(); });
    deliver(ranks.device(0), host, part.full, 0, host.rows(), pinned, plan.out_stage);
    trace.phase("deliver", [] {});
}

}  // namespace dsa
