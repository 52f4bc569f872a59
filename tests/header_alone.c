/* Compiled alone by the header_c99 test: the public header must be self-contained, C99, and warning-free
 * under -Wall -Wextra -pedantic, including its initialiser macros. Included twice for the include guard. */
#include "dsa_indexer.h"
#include "dsa_indexer.h"

int dsa_header_alone(void);

int dsa_header_alone(void) {
    dsa_context_config_t context = DSA_CONTEXT_CONFIG_INIT;
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    dsa_paged_inputs_t paged = DSA_PAGED_INPUTS_INIT;
    dsa_ragged_inputs_t ragged = DSA_RAGGED_INPUTS_INIT;
    dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
    dsa_cache_config_t cache = DSA_CACHE_CONFIG_INIT;
    dsa_status_t status = DSA_STATUS_SUCCESS;
    params.flags = DSA_TOPK_SORTED | DSA_TOPK_LOGICAL_INDICES | DSA_TOPK_ABSOLUTE_INDICES;
    return (int)(context.struct_size + params.struct_size + paged.struct_size + ragged.struct_size +
                 outputs.struct_size + cache.struct_size) + (int)status + DSA_VERSION_NUMBER + DSA_MEMORY_HOST;
}
