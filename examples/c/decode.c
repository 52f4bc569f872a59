/* A decode step with MTP rows on the CPU backend, in plain C99: two sequences in a paged FP8 cache, two
 * query tokens per sequence (next_n = 2), the top 4 positions of each row as logical positions and as
 * global cache slots, then a call the library rejects, to show what an error looks like.
 *
 * The data make the answer obvious: every key is e_0 (fp8 1.0 in dimension 0) with scale p + 1, and head 0
 * of every query reads dimension 0 with weight 1, so position p scores exactly p + 1 and each row's best
 * positions are its last visible ones. Row j of a sequence of n tokens sees positions [0, n - 2 + j + 1).
 *
 * On a GPU context the same call takes device pointers, a workspace of dsa_topk_paged_workspace_size()
 * bytes and the cudaStream_t to run on (as void*); see docs/integration.md. */
#include <stdio.h>
#include <string.h>

#include <dsa_indexer.h>

enum { HEADS = 64, DIM = 128, PAGE = 64, NUM_PAGES = 4, BATCH = 2, NEXT_N = 2, ROWS = BATCH * NEXT_N, TOPK = 4 };
#define FP8_ONE 0x38 /* 1.0 in fp8 e4m3 */
#define PAGE_BYTES (PAGE * (DIM + 4)) /* P keys of D bytes, then P fp32 scales */

static unsigned char k_cache[NUM_PAGES][PAGE_BYTES];
static unsigned char q[BATCH][NEXT_N][HEADS][DIM];
static float weights[ROWS][HEADS];
static const int32_t seq_lens[BATCH] = {100, 3};
/* Sequence 0: logical pages 0, 1 in physical pages 1, 3. Sequence 1: one page, physical page 2. */
static const int32_t block_table[BATCH][2] = {{1, 3}, {2, 0}};

static void put_token(int b, int p) {
    unsigned char* page = k_cache[block_table[b][p / PAGE]];
    const float scale = (float)(p + 1);
    page[(p % PAGE) * DIM] = FP8_ONE;
    memcpy(page + PAGE * DIM + 4 * (p % PAGE), &scale, sizeof scale);
}

static int fail(const char* what, dsa_status_t status) {
    fprintf(stderr, "%s failed: %s: %s\n", what, dsa_status_string(status), dsa_last_error_message());
    return 1;
}

int main(void) {
    /* Expected logical positions per row (sorted by descending score), -1 for padding. */
    static const int32_t expected[ROWS][TOPK] = {{98, 97, 96, 95}, {99, 98, 97, 96}, {1, 0, -1, -1}, {2, 1, 0, -1}};
    dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT; /* no devices: the CPU backend */
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;       /* H 64, D 128, P 64, k 2048, next_n 1 */
    dsa_paged_inputs_t inputs = DSA_PAGED_INPUTS_INIT;
    dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
    dsa_context_t context = NULL;
    dsa_status_t status;
    int32_t logical[ROWS][TOPK], slots[ROWS][TOPK];
    float scores[ROWS][TOPK];
    int b, j, p, i, errors = 0;

    if (dsa_version() / 10000 != DSA_VERSION_MAJOR || dsa_version() < DSA_VERSION_NUMBER) {
        fprintf(stderr, "library version %d does not serve header version %d\n", dsa_version(), DSA_VERSION_NUMBER);
        return 1;
    }
    for (b = 0; b < BATCH; ++b) {
        for (p = 0; p < seq_lens[b]; ++p) put_token(b, p);
        for (j = 0; j < NEXT_N; ++j) {
            q[b][j][0][0] = FP8_ONE;
            weights[b * NEXT_N + j][0] = 1.0f;
        }
    }

    params.topk = TOPK;
    params.next_n = NEXT_N;
    params.flags = DSA_TOPK_SORTED | DSA_TOPK_LOGICAL_INDICES;
    inputs.batch_size = BATCH;
    inputs.max_pages = 2;
    inputs.block_table_stride = 2;
    inputs.num_pages = NUM_PAGES;
    inputs.page_stride_bytes = PAGE_BYTES;
    inputs.q = q;
    inputs.k_cache = k_cache;
    inputs.weights = &weights[0][0];
    inputs.seq_lens = seq_lens;
    inputs.block_table = &block_table[0][0];
    outputs.indices = &logical[0][0];
    outputs.scores = &scores[0][0];

    status = dsa_context_create(&config, &context);
    if (status != DSA_STATUS_SUCCESS) return fail("dsa_context_create", status);
    status = dsa_topk_paged(context, &params, &inputs, &outputs, NULL, 0, NULL);
    if (status != DSA_STATUS_SUCCESS) {
        dsa_context_destroy(context);
        return fail("dsa_topk_paged", status);
    }
    /* The same call reporting global slots (block_table[b][p / P] * P + p % P), the default. */
    params.flags = DSA_TOPK_SORTED;
    outputs.indices = &slots[0][0];
    outputs.scores = NULL;
    status = dsa_topk_paged(context, &params, &inputs, &outputs, NULL, 0, NULL);
    if (status != DSA_STATUS_SUCCESS) {
        dsa_context_destroy(context);
        return fail("dsa_topk_paged", status);
    }

    printf("dsa_indexer %d.%d.%d, CPU backend\n", dsa_version() / 10000, dsa_version() / 100 % 100,
           dsa_version() % 100);
    for (i = 0; i < ROWS; ++i) {
        b = i / NEXT_N;
        printf("row %d (sequence %d, token %d):", i, b, i % NEXT_N);
        for (j = 0; j < TOPK; ++j) {
            const int32_t position = logical[i][j];
            const int32_t slot = position < 0 ? -1 : block_table[b][position / PAGE] * PAGE + position % PAGE;
            printf("  p %d / slot %d (score %g)", (int)position, (int)slots[i][j], (double)scores[i][j]);
            if (position != expected[i][j] || slots[i][j] != slot) ++errors;
        }
        printf("\n");
    }

    /* A rejected call: nothing is written, the status says what kind of problem, the message says which. */
    params.topk = 4096;
    status = dsa_topk_paged(context, &params, &inputs, &outputs, NULL, 0, NULL);
    printf("topk 4096 -> %s: %s\n", dsa_status_string(status), dsa_last_error_message());
    if (status != DSA_STATUS_UNSUPPORTED) ++errors;

    dsa_context_destroy(context);
    printf("%s\n", errors == 0 ? "decode example: OK" : "decode example: WRONG RESULTS");
    return errors == 0 ? 0 : 1;
}
