/* A C99 client of dsa_indexer.h: a CPU context, one paged and one ragged call with known answers, and a
 * few rejected calls. Prints "c_api_test: N passed, M failed" and exits non-zero on any failure.
 *
 * Every key is e_0 (fp8 1.0 in dimension 0) and head 0 of every query reads dimension 0 with weight 1,
 * so a token's score is its scale, chosen as (token number + 1): higher positions score higher. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "dsa_indexer.h"

#define HEADS 32
#define DIM 128
#define PAGE 32
#define FP8_ONE 0x38

static int passed = 0, failed = 0;

#define CHECK(condition)                                                                     \
    do {                                                                                     \
        if (condition) {                                                                     \
            ++passed;                                                                        \
        } else {                                                                             \
            ++failed;                                                                        \
            fprintf(stderr, "%s:%d: CHECK(%s) failed; last error: %s\n", __FILE__, __LINE__, \
                    #condition, dsa_last_error_message());                                    \
        }                                                                                    \
    } while (0)

/* Paged cache of 4 pages: sequence 0 (40 tokens) in pages {2, 0}, sequence 1 (5 tokens) in page {3}. */
static unsigned char k_cache[4][PAGE * (DIM + 4)];
static unsigned char q[2][HEADS * DIM];
static float weights[2][HEADS];
static const int32_t seq_lens[2] = {40, 5};
static const int32_t block_table[2][2] = {{2, 0}, {3, 1}};

static void put_token(int32_t seq, int position, float scale) {
    unsigned char* page = k_cache[block_table[seq][position / PAGE]];
    page[(position % PAGE) * DIM] = FP8_ONE;
    memcpy(page + PAGE * DIM + 4 * (position % PAGE), &scale, sizeof scale);
}

static dsa_paged_inputs_t paged_inputs(void) {
    dsa_paged_inputs_t in;
    dsa_paged_inputs_init(&in);
    in.batch_size = 2;
    in.max_pages = 2;
    in.block_table_stride = 2;
    in.num_pages = 4;
    in.page_stride_bytes = PAGE * (DIM + 4);
    in.q = q;
    in.k_cache = k_cache;
    in.weights = &weights[0][0];
    in.seq_lens = seq_lens;
    in.block_table = &block_table[0][0];
    return in;
}

static void test_paged(dsa_context_t context) {
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    dsa_paged_inputs_t in = paged_inputs();
    dsa_topk_outputs_t out = DSA_TOPK_OUTPUTS_INIT;
    int32_t indices[2][8];
    float scores[2][8];
    int b, p, i;

    for (b = 0; b < 2; ++b) {
        q[b][0] = FP8_ONE;
        weights[b][0] = 1.0f;
        for (p = 0; p < seq_lens[b]; ++p) put_token(b, p, (float)(p + 1));
    }
    params.num_heads = HEADS;
    params.page_size = PAGE;
    params.topk = 8;
    params.flags = DSA_TOPK_SORTED;
    out.indices = &indices[0][0];
    out.scores = &scores[0][0];
    CHECK(dsa_topk_paged(context, &params, &in, &out, NULL, 0, NULL) == DSA_STATUS_SUCCESS);
    /* Sequence 0: positions 39..32 live in logical page 1 = physical page 0: slots 7..0. */
    for (i = 0; i < 8; ++i) {
        CHECK(indices[0][i] == 7 - i);
        CHECK(scores[0][i] == (float)(40 - i));
    }
    /* Sequence 1: 5 tokens in physical page 3 (slots 96..100), then padding. */
    for (i = 0; i < 5; ++i) CHECK(indices[1][i] == 96 + 4 - i);
    for (i = 5; i < 8; ++i) CHECK(indices[1][i] == -1 && isinf(scores[1][i]) && scores[1][i] < 0);

    params.flags = DSA_TOPK_SORTED | DSA_TOPK_LOGICAL_INDICES;
    CHECK(dsa_topk_paged(context, &params, &in, &out, NULL, 0, NULL) == DSA_STATUS_SUCCESS);
    CHECK(indices[0][0] == 39 && indices[0][7] == 32 && indices[1][0] == 4 && indices[1][4] == 0);

    /* Rejected calls write nothing. */
    indices[0][0] = 12345;
    params.topk = 0;
    CHECK(dsa_topk_paged(context, &params, &in, &out, NULL, 0, NULL) == DSA_STATUS_UNSUPPORTED);
    CHECK(strstr(dsa_last_error_message(), "topk") != NULL);
    params.topk = 8;
    params.flags = DSA_TOPK_ABSOLUTE_INDICES;
    CHECK(dsa_topk_paged(context, &params, &in, &out, NULL, 0, NULL) == DSA_STATUS_INVALID_ARGUMENT);
    params.flags = 0;
    CHECK(dsa_topk_paged(context, &params, &in, NULL, NULL, 0, NULL) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(dsa_topk_paged(context, &params, &in, &out, NULL, 0, &params) == DSA_STATUS_INVALID_ARGUMENT);
    in.page_stride_bytes += 8;
    CHECK(dsa_topk_paged(context, &params, &in, &out, NULL, 0, NULL) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(indices[0][0] == 12345);
}

static void test_ragged(dsa_context_t context) {
    static unsigned char keys[10][DIM];
    static unsigned char rows_q[3][HEADS * DIM];
    float k_scale[10], rows_w[3][HEADS];
    const int32_t row_start[3] = {0, 2, 3}, row_end[3] = {10, 5, 3};
    int32_t indices[3][3];
    dsa_topk_params_t params;
    dsa_ragged_inputs_t in = DSA_RAGGED_INPUTS_INIT;
    dsa_topk_outputs_t out;
    int i;

    memset(rows_w, 0, sizeof rows_w);
    for (i = 0; i < 10; ++i) {
        keys[i][0] = FP8_ONE;
        k_scale[i] = (float)(i + 1);
    }
    for (i = 0; i < 3; ++i) {
        rows_q[i][0] = FP8_ONE;
        rows_w[i][0] = 1.0f;
    }
    dsa_topk_params_init(&params);
    params.num_heads = HEADS;
    params.topk = 3;
    params.flags = DSA_TOPK_SORTED;
    in.num_rows = 3;
    in.num_keys = 10;
    in.q = rows_q;
    in.k = keys;
    in.k_scale = k_scale;
    in.weights = &rows_w[0][0];
    in.row_start = row_start;
    in.row_end = row_end;
    dsa_topk_outputs_init(&out);
    out.indices = &indices[0][0];
    CHECK(dsa_topk_ragged(context, &params, &in, &out, NULL, 0, NULL) == DSA_STATUS_SUCCESS);
    CHECK(indices[0][0] == 9 && indices[0][1] == 8 && indices[0][2] == 7); /* relative to row_start */
    CHECK(indices[1][0] == 2 && indices[1][1] == 1 && indices[1][2] == 0);
    CHECK(indices[2][0] == -1 && indices[2][1] == -1 && indices[2][2] == -1); /* empty window */

    params.flags = DSA_TOPK_SORTED | DSA_TOPK_ABSOLUTE_INDICES;
    CHECK(dsa_topk_ragged(context, &params, &in, &out, NULL, 0, NULL) == DSA_STATUS_SUCCESS);
    CHECK(indices[1][0] == 4 && indices[1][1] == 3 && indices[1][2] == 2);

    params.flags = DSA_TOPK_LOGICAL_INDICES;
    CHECK(dsa_topk_ragged(context, &params, &in, &out, NULL, 0, NULL) == DSA_STATUS_INVALID_ARGUMENT);
    params.flags = 0;
    rows_w[1][5] = (float)NAN;
    CHECK(dsa_topk_ragged(context, &params, &in, &out, NULL, 0, NULL) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(dsa_last_error_message(), "NaN") != NULL);
    CHECK(indices[1][0] == 4);
}

int main(void) {
    dsa_context_config_t config;
    dsa_context_t context = NULL;

    CHECK(dsa_version() == DSA_VERSION_NUMBER);
    CHECK(strcmp(dsa_status_string(DSA_STATUS_UNSUPPORTED), "DSA_STATUS_UNSUPPORTED") == 0);
    CHECK(strcmp(dsa_status_string((dsa_status_t)99), "DSA_STATUS_UNKNOWN") == 0);
    dsa_context_config_init(&config);
    CHECK(dsa_context_create(&config, &context) == DSA_STATUS_SUCCESS);
    if (context != NULL) {
        test_paged(context);
        test_ragged(context);
        CHECK(dsa_context_destroy(context) == DSA_STATUS_SUCCESS);
    }
    CHECK(dsa_context_destroy(NULL) == DSA_STATUS_SUCCESS);
    printf("c_api_test: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
