// dsa_topk on a sharded owned cache over several ranks: pages sharded. Every rank scores every row over its
// own pages (kernels::shard_rows builds that problem on the device from the block table) and turns its top
// k into candidates over logical positions; the candidates reach the output device through the Transport,
// which merges them into the global top k. That equals one GPU's result, since ties rank by position on
// every rank alike.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/problem.hpp"
#include "gpu/multi/cache_storage.hpp"
#include "gpu/multi/rank_group.hpp"
#include "gpu/multi/staging.hpp"
#include "gpu/multi/trace.hpp"
#include "kernels/launch.h"

namespace dsa {

// Every local device's buffers, planned and allocated before anything is queued, so nothing can fail in
// the middle of a collective. Planning fails with NOT_IMPLEMENTED where the merge cannot take the ranks'
// candidate lists (kernels::max_merge_ranks).
struct ShardedPlan {
    struct Part {
        PagedProblem full;   // the original rows, on this device (merge and index mapping read it)
        PagedProblem shard;  // the rank's problem over its pages: one sequence per row
        uint8_t* device_block = nullptr;
        int32_t* logical_page = nullptr;
        uint64_t* candidates = nullptr;  // [ranks][rows][k]
        uint8_t* workspace = nullptr;
    };
    InputBlock block;  // every device needs every input
    OutputStage out_stage;
    uint8_t* pinned = nullptr;
    size_t out_index = 0;  // the local device that merges and delivers
    std::vector<Part> parts;
    std::vector<void*> candidate_buffers;
};

ShardedPlan plan_sharded(RankGroup& ranks, const PagedProblem& host, const GpuCacheStorage& cache);
void run_sharded(RankGroup& ranks, kernels::ScoreKernel kernel, const PagedProblem& host, const ShardedPlan& plan,
                 PhaseTrace& trace);

}  // namespace dsa
