/* The smallest useful call: one sequence of 5 tokens on the CPU backend, the top 3 in sorted order.
 * Token t has the key e_0 (1.0 in dimension 0) and scale t + 1, and head 0 of the query reads dimension 0
 * with weight 1, so token t scores t + 1 and the answer is tokens 4, 3, 2. */
#include <stdio.h>
#include <string.h>

#include <dsa_indexer.h>

#define HEADS 32
#define DIM 128
#define PAGE 32
#define TOKENS 5
#define TOPK 3

int main(void) {
    static unsigned char q[HEADS * DIM];
    static unsigned char k_cache[PAGE * (DIM + 4)];
    static float weights[HEADS];
    const int32_t seq_len = TOKENS, block_table = 0;
    int32_t indices[TOPK];
    float scores[TOPK];
    dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    dsa_paged_inputs_t inputs = DSA_PAGED_INPUTS_INIT;
    dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
    dsa_context_t context = NULL;
    dsa_status_t status;
    int t;

    q[0] = 0x38; /* fp8 e4m3 1.0 */
    weights[0] = 1.0f;
    for (t = 0; t < TOKENS; ++t) {
        const float scale = (float)(t + 1);
        k_cache[t * DIM] = 0x38;
        memcpy(k_cache + PAGE * DIM + 4 * t, &scale, sizeof scale);
    }
    params.num_heads = HEADS;
    params.page_size = PAGE;
    params.topk = TOPK;
    params.flags = DSA_TOPK_SORTED;
    inputs.batch_size = 1;
    inputs.max_pages = 1;
    inputs.block_table_stride = 1;
    inputs.num_pages = 1;
    inputs.page_stride_bytes = PAGE * (DIM + 4);
    inputs.q = q;
    inputs.k_cache = k_cache;
    inputs.weights = weights;
    inputs.seq_lens = &seq_len;
    inputs.block_table = &block_table;
    outputs.indices = indices;
    outputs.scores = scores;

    status = dsa_context_create(&config, &context);
    if (status == DSA_STATUS_SUCCESS)
        status = dsa_topk_paged(context, &params, &inputs, &outputs, NULL, 0, NULL);
    if (status != DSA_STATUS_SUCCESS) {
        fprintf(stderr, "dsa_consumer: %s: %s\n", dsa_status_string(status), dsa_last_error_message());
        dsa_context_destroy(context);
        return 1;
    }
    /* dsa_version() is DSA_VERSION_NUMBER = MAJOR * 10000 + MINOR * 100 + PATCH: 200 is 0.2.0. */
    printf("dsa_indexer %d.%d.%d: top %d of %d tokens:", dsa_version() / 10000, dsa_version() / 100 % 100,
           dsa_version() % 100, TOPK, TOKENS);
    for (t = 0; t < TOPK; ++t) printf(" %d (%g)", (int)indices[t], (double)scores[t]);
    printf("\n");
    dsa_context_destroy(context);
    return (indices[0] == 4 && indices[1] == 3 && indices[2] == 2) ? 0 : 1;
}
