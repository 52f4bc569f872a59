// How dsa_topk splits its work over the G GPU ranks of a context (in one process or several). Host-only
// planning on the validated host inputs, so the CPU tests check it without a GPU.
#pragma once

#include <cstdint>
#include <vector>

#include "core/problem.hpp"

namespace dsa {

// Replicated cache: rank r computes sequences [bounds[r], bounds[r + 1]) of the batch (G + 1 bounds).
// Contiguous ranges, so each rank's output rows are one block; cut where the running cost (visible tokens
// of each row plus a fixed per-row selection cost) crosses r / G of the total.
std::vector<int32_t> split_sequences(const PagedProblem& host, int ranks);

// Sharded cache: physical page p lives on rank p % G, as local page p / G (kernels::shard_rows builds
// each rank's problem on the device).
inline int shard_owner(int64_t page, int ranks) { return int(page % ranks); }
inline int64_t shard_local_page(int64_t page, int ranks) { return page / ranks; }
inline int64_t shard_pages(int64_t num_pages, int ranks) { return (num_pages + ranks - 1) / ranks; }

}  // namespace dsa
