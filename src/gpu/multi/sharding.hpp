// How dsa_topk splits its work over the G GPU ranks of a context (in one process or several). Host-only
// planning on the validated host inputs, so the CPU tests check it without a GPU.
#pragma once

#include <cstdint>
#include <vector>

#include "common/problem.hpp"
#include "common/shard_rule.h"  // the sharded cache: which rank holds which page

namespace dsa {

// Replicated cache: rank r computes sequences [bounds[r], bounds[r + 1]) of the batch (G + 1 bounds).
// Contiguous ranges, so each rank's output rows are one block; cut where the running cost (visible tokens
// of each row plus a fixed per-row selection cost) crosses r / G of the total.
std::vector<int32_t> split_sequences(const PagedProblem& host, int ranks);

}  // namespace dsa
