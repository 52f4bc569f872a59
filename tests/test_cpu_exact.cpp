// Exact top k on tie-free integer inputs, paged and ragged.

#include "test_cpu_common.hpp"

using namespace dsa_test;

TEST_CASE("paged decode returns exactly the top k on tie-free integer inputs", "[cpu][paged][exact]") {
    const int heads = GENERATE(32, 64);
    const int page_size = GENERATE(32, 64);
    const int next_n = GENERATE(1, 3);
    CAPTURE(heads, page_size, next_n);
    PagedCase c(layout_of(heads, page_size, next_n), {0, 1, 2, 5, 64, 100, 2048, 3000}, seed_of(heads, page_size, 40 + next_n));
    Rng rng(seed_of(heads, page_size, 50 + next_n));
    fill_tie_free(c, rng);
    expect_exact(c, integer_scores(c), {1, 7, 64, 2048}, {0u, kSorted, kLogical, kSorted | kLogical});
}

TEST_CASE("exact top k with more than 4096 keys per sequence", "[cpu][exact]") {
    SECTION("paged") {
        PagedCase c(layout_of(32, 64, 2), {5000, 4097}, 77);
        Rng rng(78);
        fill_tie_free(c, rng);
        expect_exact(c, integer_scores(c), {100, 2048}, {0u, kSorted});
    }
    SECTION("ragged") {
        RaggedCase c(32, 6000, causal_windows({6000}, {3}));
        Rng rng(79);
        fill_tie_free(c, rng);
        expect_exact(c, integer_scores(c), {100, 2048}, {kAbsolute, kSorted});
    }
}

TEST_CASE("ragged prefill returns exactly the top k on tie-free integer inputs", "[cpu][ragged][exact]") {
    const int heads = GENERATE(32, 64);
    std::vector<std::pair<int32_t, int32_t>> windows = causal_windows({500, 2600, 3}, {4, 4, 3});
    windows.insert(windows.end(), {{7, 7}, {100, 3103}, {0, 3103}});
    RaggedCase c(heads, 3103, windows);
    Rng rng(seed_of(heads, 2, 3));
    fill_tie_free(c, rng);
    expect_exact(c, integer_scores(c), {1, 9, 300, 2048}, {0u, kSorted, kAbsolute, kSorted | kAbsolute});
}
