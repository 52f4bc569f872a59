// dsa_topk on a replicated owned cache (and on any cache of one rank): rows sharded. Rank q computes the
// sequences [bounds[q], bounds[q + 1]) of split_sequences (gpu/multi/sharding.hpp) on its replica into the
// rows of a full-size result; local results go straight to the caller, and when ranks are in other
// processes every rank's rows travel through the Transport first. Each local device stages its own
// sequences in pinned memory on its own host thread and uploads them in one DMA.
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

// Where every local device's share lives: planned and allocated before anything is queued, so nothing can
// fail in the middle of a collective.
struct ReplicatedPlan {
    struct Part {
        PagedProblem pb;  // the device's sequences, inputs bound to its block, outputs into `full`
        int32_t b0 = 0, b1 = 0;
        InputBlock block;
        size_t pinned_at = 0;
        uint8_t* device_block = nullptr;
        TopkOutputs full;  // [all rows, k] on this device
        uint8_t* workspace = nullptr;
    };
    std::vector<int32_t> bounds;  // split_sequences over the world
    std::vector<Part> parts;      // per local device
    OutputStage out_stage;
    uint8_t* pinned = nullptr;
};

ReplicatedPlan plan_replicated(RankGroup& ranks, const PagedProblem& host, const GpuCacheStorage& cache);
void run_replicated(RankGroup& ranks, kernels::ScoreKernel kernel, const PagedProblem& host,
                    const ReplicatedPlan& plan, PhaseTrace& trace);

}  // namespace dsa
