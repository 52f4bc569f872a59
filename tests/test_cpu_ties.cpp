// The ranking rule on ties, signed zeros, NaN and infinities (SPEC section 1).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "test_cpu_common.hpp"

using namespace dsa_test;

namespace {

// Copies the key of position `from` onto the chosen positions of sequence `seq`: equal keys, equal scores.
void copy_key(PagedCase& c, int32_t seq, int64_t from, const std::vector<int64_t>& to) {
    std::vector<uint8_t> key(c.key(int64_t(seq) * c.layout.next_n, from), c.key(int64_t(seq) * c.layout.next_n, from) + kHeadDim);
    for (int64_t p : to) std::memcpy(c.mutable_key(seq, p), key.data(), kHeadDim);
}

// The k that cuts through the middle of the group of positions scoring like `member` in a row.
int cut_inside_group(const std::vector<double>& scores, int64_t member) {
    const double tie = scores[size_t(member)];
    const auto above = std::count_if(scores.begin(), scores.end(), [&](double s) { return s > tie; });
    const auto group = std::count(scores.begin(), scores.end(), tie);
    return int(above + group / 2);
}

}  // namespace

TEST_CASE("equal scores: the smallest positions win", "[cpu][ties]") {
    Context ctx;
    SECTION("paged, a large group of identical keys (positions, not slots, decide)") {
        PagedCase c(layout_of(32, 32, 2), {300, 150, 64}, 91);
        Rng rng(92);
        fill_tie_free(c, rng);
        copy_key(c, 0, 17, random_subset(rng, 300, 180));
        copy_key(c, 1, 3, random_subset(rng, 150, 100));
        const auto exact = integer_scores(c);
        const int cut = cut_inside_group(exact[0], 17);
        CAPTURE(cut);
        expect_exact(c, exact, {1, 30, cut, 299, 2048}, {0u, kSorted, kLogical, kSorted | kLogical});
    }
    SECTION("paged, every score equal: the first k positions") {
        PagedCase c(layout_of(64, 64, 1), {1000, 200}, 93);
        Rng rng(94);
        fill_tie_free(c, rng);
        copy_key(c, 0, 0, random_subset(rng, 1000, 1000));
        copy_key(c, 1, 0, random_subset(rng, 200, 200));
        const auto exact = integer_scores(c);
        expect_exact(c, exact, {1, 100, 999}, {0u, kSorted, kLogical});
        // Spelled out for row 0 in global-slot mode: slots of positions 0..99 in order.
        const TopkOutput out = expect_success(ctx.get(), c, 100, kSorted, false);
        for (int64_t p = 0; p < 100; ++p) CHECK(out.indices()[p] == c.index_of(0, p, 0));
    }
    SECTION("ragged, identical keys across sequences") {
        RaggedCase c(32, 700, causal_windows({400, 300}, {3, 3}));
        Rng rng(95);
        fill_tie_free(c, rng);
        for (int64_t i : random_subset(rng, 700, 400)) std::memcpy(c.mutable_key(i), c.k.data() + 5 * kHeadDim, kHeadDim);
        const auto exact = integer_scores(c);
        const int cut = cut_inside_group(exact[0], 5);
        CAPTURE(cut);
        expect_exact(c, exact, {1, cut, 350, 2048}, {0u, kSorted, kAbsolute, kSorted | kAbsolute});
    }
}

TEST_CASE("-0 and +0 scores rank equal, so positions decide between them", "[cpu][ties]") {
    // Zero keys score exactly 0 for every head; scale -1 makes the score -0.0 and scale +1 makes it +0.0.
    PagedCase c(layout_of(32, 32, 1), {400}, 101);
    Rng rng(102);
    fill_tie_free(c, rng);
    const std::vector<int64_t> zeros = random_subset(rng, 400, 160);
    for (size_t i = 0; i < zeros.size(); ++i) {
        std::memset(c.mutable_key(0, zeros[i]), 0, kHeadDim);
        c.set_scale(0, zeros[i], rng.uniform(0, 1) ? -1.0f : 1.0f);
    }
    const auto exact = integer_scores(c);
    const int cut = cut_inside_group(exact[0], zeros[0]);
    CAPTURE(cut);
    expect_exact(c, exact, {cut - 40, cut, cut + 40}, {0u, kSorted, kSorted | kLogical});
}

TEST_CASE("NaN scores rank last, +inf first, -inf above NaN only", "[cpu][nan]") {
    PagedCase c(layout_of(32, 32, 3), {300, 90}, 111);
    Rng rng(112);
    fill_tie_free(c, rng);
    SECTION("special scales and NaN keys") {
        // Scale +inf: +inf, -inf or NaN (0 * inf) by the sign of the sum; scale -inf likewise; scale NaN
        // and NaN key bytes (0x7F, 0xFF): NaN.
        add_special_scores(c, 0, 100, rng);
        const Oracle oracle = compute_oracle(c);  // exact here: integers, infinities and NaNs only
        std::vector<std::vector<double>> exact;
        for (const RowOracle& row : oracle) exact.push_back(row.score);
        const auto finite = std::count_if(exact[0].begin(), exact[0].end(), [](double s) { return std::isfinite(s); });
        const auto not_nan = std::count_if(exact[0].begin(), exact[0].end(), [](double s) { return !std::isnan(s); });
        REQUIRE(finite < not_nan);  // some infinities
        REQUIRE(not_nan < 298);     // some NaNs
        expect_exact(c, exact, {5, 20, int(not_nan) - 3, int(not_nan) + 5, 2048}, {0u, kSorted, kSorted | kLogical});
    }
    SECTION("infinite weights: inf * relu(0) is NaN, every other score +-inf") {
        // Rows 1 and 4 get weight +inf on head 0 (which reads v > 0 except at the position with v = 0),
        // rows 2 and 5 get -inf: all their scores tie at +-inf except NaNs.
        for (int64_t r : {1, 4}) c.mutable_weights(r)[0] = kInf;
        for (int64_t r : {2, 5}) c.mutable_weights(r)[0] = -kInf;
        const Oracle oracle = compute_oracle(c);
        std::vector<std::vector<double>> exact;
        for (const RowOracle& row : oracle) exact.push_back(row.score);
        expect_exact(c, exact, {1, 50, 2048}, {0u, kSorted, kLogical});
        Context ctx;
        const TopkOutput out = expect_success(ctx.get(), c, 50, kSorted | kLogical, true);
        for (int64_t i = 0; i < 50; ++i) {  // ties at +inf: the first positions (v = 0 is the one NaN)
            CHECK(out.scores()[50 + i] == kInf);
            CHECK(out.indices()[50 + i] == ranked_positions(exact[1], 50)[size_t(i)]);
        }
    }
}

TEST_CASE("any infinite weights still give valid output", "[cpu][nan]") {
    PagedCase c = random_paged(layout_of(64, 64, 2), {700, 65, 3}, 121);
    RaggedCase r = random_ragged(64, 800, causal_windows({500, 300}, {2, 2}), 122);
    Rng rng(123);
    for (float& w : c.weights)
        if (rng.uniform(0, 9) == 0) w = rng.uniform(0, 1) ? kInf : -kInf;
    for (float& w : r.weights)
        if (rng.uniform(0, 9) == 0) w = rng.uniform(0, 1) ? kInf : -kInf;
    std::fill(c.weights.begin(), c.weights.begin() + 64, kInf);  // a row of +inf only
    Context ctx;
    for_each_variant({1, 64, 2048}, {0u, kSorted}, [&](int k, uint32_t flags, bool) {
        INFO("k " << k << ", " << flag_names(flags));
        const TopkOutput paged = expect_success(ctx.get(), c, k, flags, true);
        CHECK(check_valid(c, k, flags, paged.indices(), paged.scores()) == "");
        const TopkOutput ragged = expect_success(ctx.get(), r, k, flags, true);
        CHECK(check_valid(r, k, flags, ragged.indices(), ragged.scores()) == "");
    });
}
