// The structural checks of SPEC section 4 (no caller data read), turning the public structs into the
// problem descriptions of common/problem.hpp. Failures throw dsa::Error with a message naming the field.
// The data checks of host inputs are core/host_checks.hpp.
#pragma once

#include "common/problem.hpp"
#include "dsa_indexer.h"

namespace dsa::api {

// Structural checks: sizes, parameters, null pointers, alignment, aliasing. Reads no caller data.
// `owned_cache` selects the dsa_topk rules (k_cache NULL; the cache's pages and stride are filled in).
PagedProblem check_paged(const dsa_topk_params_t* params, const dsa_paged_inputs_t* inputs,
                         const dsa_topk_outputs_t* outputs, bool owned_cache);
RaggedProblem check_ragged(const dsa_topk_params_t* params, const dsa_ragged_inputs_t* inputs,
                           const dsa_topk_outputs_t* outputs);

// Shape-only variants for the workspace-size queries (pointers are not looked at).
PagedProblem check_paged_shape(const dsa_topk_params_t* params, const dsa_paged_inputs_t* inputs);
RaggedProblem check_ragged_shape(const dsa_topk_params_t* params, const dsa_ragged_inputs_t* inputs);

// Public config structs, copied after their size prefix is checked.
dsa_context_config_t read_context_config(const dsa_context_config_t* config);
dsa_cache_config_t read_cache_config(const dsa_cache_config_t* config);

}  // namespace dsa::api
