// Paged and ragged results against the float64 oracle (SPEC section 5), SPEC section 3 sizes included.

#include "test_cpu_common.hpp"

using namespace dsa_test;

TEST_CASE("paged decode agrees with the oracle", "[cpu][paged]") {
    const int heads = GENERATE(32, 64);
    const int page_size = GENERATE(32, 64);
    const int next_n = GENERATE(1, 2, 3, 4);
    PagedLayout layout = layout_of(heads, page_size, next_n);
    // Padded block-table rows and pages for even next_n, tight ones for odd: both for every H and P.
    if (next_n % 2 == 0) {
        layout.table_padding = 5;
        layout.page_padding_bytes = 48;
    }
    CAPTURE(heads, page_size, next_n, layout.table_padding, layout.page_padding_bytes);
    // Lengths 0, 1 and 2 give MTP rows with empty windows; 7, 64 and 2048 equal a k; 97 is not a multiple
    // of P; 2300 is long.
    const PagedCase c = random_paged(layout, {0, 1, 2, 7, 64, 97, 2048, 2300}, seed_of(heads, page_size, next_n));
    expect_oracle_agreement(c, {1, 7, 64, 2048}, {0u, kSorted, kLogical, kSorted | kLogical});
}

TEST_CASE("paged decode with k above every sequence length pads with -1", "[cpu][paged]") {
    const int next_n = GENERATE(1, 4);
    const PagedCase c = random_paged(layout_of(64, 32, next_n), {0, 1, 5, 33, 70}, seed_of(7, 7, next_n));
    expect_oracle_agreement(c, {71, 2048}, {0u, kSorted | kLogical});
}

TEST_CASE("ragged prefill agrees with the oracle", "[cpu][ragged]") {
    const int heads = GENERATE(32, 64);
    // Causal windows of four sequences (one key only, short, long, all keys are queries), then windows
    // that are empty, cross sequences, or cover everything.
    const std::vector<int32_t> key_lens = {1, 300, 2400, 40};
    std::vector<std::pair<int32_t, int32_t>> windows = causal_windows(key_lens, {1, 6, 5, 40});
    const int32_t total = 1 + 300 + 2400 + 40;
    windows.insert(windows.end(), {{0, 0}, {10, 10}, {total, total}, {250, 2700}, {0, total}, {2700, 2701}});
    const RaggedCase c = random_ragged(heads, total, windows, seed_of(heads, 1, 2));
    expect_oracle_agreement(c, {1, 50, 2048}, {0u, kSorted, kAbsolute, kSorted | kAbsolute});
}

TEST_CASE("SPEC section 3 sizes: 4096 rows, and sequences of a million tokens", "[cpu][paged][large]") {
    SECTION("1024 sequences x next_n 4 = 4096 rows") {
        Rng lengths(181);
        std::vector<int32_t> seq_lens(1024);
        for (int32_t& len : seq_lens) len = int32_t(lengths.uniform(0, 90));
        const PagedCase c = random_paged(layout_of(32, 32, 4), seq_lens, 182);
        expect_oracle_agreement(c, {16, 64}, {kSorted, kLogical});
    }
    SECTION("1,048,576 and 1,000,003 tokens, planted scores among exact ties") {
        std::vector<std::vector<double>> exact;
        const PagedCase c = planted_paged(layout_of(32, 64, 2), {1048576, 1000003}, 600, 183, exact);
        // k 2048: the 300 positive planted scores, then the smallest positions among ~1M zeros.
        expect_exact(c, exact, {2048, 300}, {kSorted, kLogical});
    }
}
