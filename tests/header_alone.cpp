// Compiled alone by the header_cxx17 test: the public header in C++17 (extern "C", no CUDA or C++ types),
// warning-free under -Wall -Wextra -pedantic, initialiser macros included.
#include "dsa_indexer.h"
#include "dsa_indexer.h"

int dsa_header_alone();

int dsa_header_alone() {
    dsa_context_config_t context = DSA_CONTEXT_CONFIG_INIT;
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    dsa_paged_inputs_t paged = DSA_PAGED_INPUTS_INIT;
    dsa_ragged_inputs_t ragged = DSA_RAGGED_INPUTS_INIT;
    dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
    dsa_cache_config_t cache = DSA_CACHE_CONFIG_INIT;
    dsa_status_t (*entry)(dsa_context_t, const dsa_topk_params_t*, const dsa_paged_inputs_t*,
                          const dsa_topk_outputs_t*, void*, size_t, void*) = &dsa_topk_paged;
    params.flags = DSA_TOPK_SORTED | DSA_TOPK_LOGICAL_INDICES | DSA_TOPK_ABSOLUTE_INDICES;
    return static_cast<int>(context.struct_size + params.struct_size + paged.struct_size + ragged.struct_size +
                            outputs.struct_size + cache.struct_size) +
           (entry != nullptr) + DSA_VERSION_NUMBER;
}
