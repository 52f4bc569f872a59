// The float64 oracle and the SPEC-5 checkers themselves (tests/test_util.cpp): if these fail, nothing else can be trusted.
#include <cmath>
#include <functional>

#include "test_cpu_common.hpp"

using namespace dsa_test;

TEST_CASE("oracle: fp8 e4m3fn decoding and encoding follow the format", "[cpu][oracle]") {
    CHECK(fp8_decode(0x00) == 0.0);
    CHECK(std::signbit(fp8_decode(0x80)));
    CHECK(fp8_decode(0x01) == std::ldexp(1.0, -9));  // smallest subnormal
    CHECK(fp8_decode(0x07) == 7 * std::ldexp(1.0, -9));
    CHECK(fp8_decode(0x08) == std::ldexp(1.0, -6));  // smallest normal
    CHECK(fp8_decode(0x38) == 1.0);
    CHECK(fp8_decode(0x7E) == 448.0);
    CHECK(fp8_decode(0xFE) == -448.0);
    CHECK(std::isnan(fp8_decode(0x7F)));
    CHECK(std::isnan(fp8_decode(0xFF)));
    CHECK(fp8_decode(0x78) == 256.0);  // S.1111.000 is a number: e4m3fn has no infinity
    // Small integers used by the C tests and the example.
    const uint8_t integer_codes[] = {0x38, 0x40, 0x44, 0x48, 0x4A, 0x4C, 0x4E, 0x50};
    for (int v = 1; v <= 8; ++v) CHECK(fp8_encode(v) == integer_codes[v - 1]);

    for (int b = 0; b < 256; ++b) {
        if (std::isnan(fp8_decode(uint8_t(b)))) continue;
        INFO("code " << b);
        CHECK(fp8_encode(fp8_decode(uint8_t(b))) == b);
    }
    // Midpoints between neighbours round to the even code; anything past them to the nearer one.
    for (int b = 0; b < 0x7E; ++b) {
        const double lo = fp8_decode(uint8_t(b)), hi = fp8_decode(uint8_t(b + 1));
        const double mid = (lo + hi) / 2;
        INFO("between codes " << b << " and " << b + 1);
        CHECK(fp8_encode(mid) == ((b % 2 == 0) ? b : b + 1));
        CHECK(fp8_encode(-mid) == (0x80 | ((b % 2 == 0) ? b : b + 1)));
        CHECK(fp8_encode(std::nextafter(mid, 0.0)) == b);
        CHECK(fp8_encode(std::nextafter(mid, 1e9)) == b + 1);
    }
    CHECK(fp8_encode(1e6) == 0x7E);
    CHECK(fp8_encode(-460.0) == 0xFE);
    CHECK(fp8_encode(std::numeric_limits<double>::infinity()) == 0x7E);
    CHECK(fp8_encode(std::nan("")) == kFp8NaN);
}

TEST_CASE("oracle: the checkers reject broken results", "[cpu][oracle]") {
    // Rows: sequence 0 (300 tokens) gives rows 0-1, sequence 1 (45) rows 2-3, sequence 2 (empty) rows 4-5.
    const int k = 40;
    auto expect_breakages_caught = [&](const PagedCase& c, const std::vector<std::vector<double>>& scores,
                                       const std::function<std::string(const int32_t*, const float*)>& check) {
        Context ctx;
        const TopkOutput good = expect_success(ctx.get(), c, k, kSorted, true);
        REQUIRE(check(good.indices(), good.scores()) == "");
        const int64_t worst = ranked_positions(scores[0], 300).back();
        const std::vector<std::pair<const char*, std::function<void(int32_t*, float*)>>> breakages = {
            {"duplicate index", [&](int32_t* idx, float* s) { idx[1] = idx[0]; s[1] = s[0]; }},
            {"a slot of another sequence's page", [&](int32_t* idx, float*) { idx[0] = c.index_of(2, 0, 0); }},
            {"a position past the causal window", [&](int32_t* idx, float*) { idx[2 * k + 3] = c.index_of(3, 44, 0); }},
            {"-1 among the results", [&](int32_t* idx, float*) { idx[5] = -1; }},
            {"padding not -1", [&](int32_t* idx, float*) { idx[4 * k] = 0; }},
            {"padding score not -inf", [&](int32_t*, float* s) { s[4 * k + 7] = 0.0f; }},
            {"best result replaced by the worst", [&](int32_t* idx, float* s) {
                 idx[0] = c.index_of(0, worst, 0);
                 s[0] = float(scores[0][size_t(worst)]);
             }},
            {"sorted order swapped", [&](int32_t* idx, float* s) {
                 std::swap(idx[0], idx[k - 1]);
                 std::swap(s[0], s[k - 1]);
             }},
            {"a returned score off", [&](int32_t*, float* s) { s[3] = 2 * s[3] + 1; }},
        };
        for (const auto& [what, breaks] : breakages) {
            std::vector<int32_t> indices(good.indices(), good.indices() + c.rows() * k);
            std::vector<float> broken_scores(good.scores(), good.scores() + c.rows() * k);
            breaks(indices.data(), broken_scores.data());
            INFO(what);
            CHECK(check(indices.data(), broken_scores.data()) != "");
        }
    };
    SECTION("SPEC section 5 checker") {
        const PagedCase c = random_paged(layout_of(32, 32, 2), {300, 45, 0}, 11);
        const Oracle oracle = compute_oracle(c);
        std::vector<std::vector<double>> scores;
        for (const RowOracle& row : oracle) scores.push_back(row.score);
        expect_breakages_caught(c, scores, [&](const int32_t* idx, const float* s) {
            return check_spec5(c, oracle, k, kSorted, idx, s);
        });
    }
    SECTION("exact checker") {
        PagedCase c(layout_of(32, 32, 2), {300, 45, 0}, 12);
        Rng rng(13);
        fill_tie_free(c, rng);
        const auto exact = integer_scores(c);
        expect_breakages_caught(c, exact, [&](const int32_t* idx, const float* s) {
            return check_exact(c, exact, k, kSorted, idx, s);
        });
    }
    SECTION("exact checker, unsorted results: the set in ascending position order") {
        PagedCase c(layout_of(32, 32, 2), {300, 45, 0}, 12);
        Rng rng(13);
        fill_tie_free(c, rng);
        const auto exact = integer_scores(c);
        Context ctx;
        const TopkOutput good = expect_success(ctx.get(), c, k, 0, true);
        REQUIRE(check_exact(c, exact, k, 0, good.indices(), good.scores()) == "");
        std::vector<int32_t> indices(good.indices(), good.indices() + c.rows() * k);
        std::vector<float> scores(good.scores(), good.scores() + c.rows() * k);
        std::swap(indices[0], indices[1]);  // the same set, out of order
        std::swap(scores[0], scores[1]);
        CHECK(check_exact(c, exact, k, 0, indices.data(), scores.data()).find("ascending position order") !=
              std::string::npos);
    }
}
