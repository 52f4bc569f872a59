// The CPU backend's computation: the whole contract of SPEC sections 1 and 2 on host memory, threaded. It
// is also the reference the GPU backend is tested against. Callers have run the host data checks
// (core/host_checks.hpp).
#pragma once

#include "common/problem.hpp"

namespace dsa::cpu {

void topk_paged(const PagedProblem& problem, int threads);
void topk_ragged(const RaggedProblem& problem, int threads);

}  // namespace dsa::cpu
