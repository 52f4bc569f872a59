// The data checks of SPEC section 4 for inputs in host memory, shared by the backends and the context:
// they read the caller's data (unlike the structural checks of src/api/validate.hpp) and throw
// DSA_STATUS_INVALID_ARGUMENT naming the first offending element. The rules themselves are written once in
// common/problem.hpp, where the kernels apply them too.
#pragma once

#include <cstdint>

#include "common/problem.hpp"
#include "core/backend.hpp"

namespace dsa {

// seq_lens within the block table, block-table entries of every visible page within [0, num_pages), no NaN
// weight.
void check_paged_host_data(const PagedProblem& problem);
// Ragged windows within [0, num_keys], no NaN weight.
void check_ragged_host_data(const RaggedProblem& problem);
// Every slot within [0, layout.num_slots()).
void check_slots(const int64_t* slots, int64_t n, const CacheLayout& layout);

}  // namespace dsa
