// What the CPU test files (test_cpu_*.cpp, one concern each, together the program dsa_cpu_tests) share:
// flag shorthands, a call of either kind, and the checks against the float64 oracle or exact scores.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "dsa_indexer.h"
#include "test_util.hpp"

namespace dsa_test {


constexpr uint32_t kSorted = DSA_TOPK_SORTED;
constexpr uint32_t kLogical = DSA_TOPK_LOGICAL_INDICES;
constexpr uint32_t kAbsolute = DSA_TOPK_ABSOLUTE_INDICES;
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline std::string flag_names(uint32_t flags) {
    std::string s = (flags & kSorted) ? "sorted" : "unsorted";
    if (flags & kLogical) s += "|logical";
    if (flags & kAbsolute) s += "|absolute";
    return s;
}

inline bool message_contains(const char* part) { return std::string(dsa_last_error_message()).find(part) != std::string::npos; }

inline dsa_status_t run_topk(dsa_context_t ctx, const PagedCase& c, int k, uint32_t flags, TopkOutput& out) {
    return run_paged(ctx, c, k, flags, out);
}
inline dsa_status_t run_topk(dsa_context_t ctx, const RaggedCase& c, int k, uint32_t flags, TopkOutput& out) {
    return run_ragged(ctx, c, k, flags, out);
}

// A successful call whose writes stayed inside its outputs.
template <class Case>
TopkOutput expect_success(dsa_context_t ctx, const Case& c, int k, uint32_t flags, bool with_scores) {
    TopkOutput out(c.rows(), k, with_scores);
    const dsa_status_t status = run_topk(ctx, c, k, flags, out);
    INFO(describe_status(status));
    REQUIRE(status == DSA_STATUS_SUCCESS);
    CHECK(out.guards_intact());
    return out;
}

template <class Case>
void expect_oracle_agreement(const Case& c, std::initializer_list<int> ks, const std::vector<uint32_t>& flag_sets) {
    const Oracle oracle = compute_oracle(c);
    Context ctx;
    for_each_variant(ks, flag_sets, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", " << flag_names(flags) << (with_scores ? ", scores" : ""));
        const TopkOutput out = expect_success(ctx.get(), c, k, flags, with_scores);
        CHECK(check_spec5(c, oracle, k, flags, out.indices(), out.scores()) == "");
    });
}

template <class Case>
void expect_exact(const Case& c, const std::vector<std::vector<double>>& exact, std::initializer_list<int> ks,
                  const std::vector<uint32_t>& flag_sets) {
    Context ctx;
    for_each_variant(ks, flag_sets, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", " << flag_names(flags) << (with_scores ? ", scores" : ""));
        const TopkOutput out = expect_success(ctx.get(), c, k, flags, with_scores);
        CHECK(check_exact(c, exact, k, flags, out.indices(), out.scores()) == "");
    });
}

inline PagedCase random_paged(const PagedLayout& layout, std::vector<int32_t> seq_lens, uint64_t seed) {
    PagedCase c(layout, std::move(seq_lens), seed);
    Rng rng(seed + 1);
    fill_spec6(c, rng);
    return c;
}

inline RaggedCase random_ragged(int heads, int64_t num_keys, const std::vector<std::pair<int32_t, int32_t>>& windows,
                         uint64_t seed) {
    RaggedCase c(heads, num_keys, windows);
    Rng rng(seed);
    fill_spec6(c, rng);
    return c;
}

inline uint64_t seed_of(int a, int b, int c) { return uint64_t(a) * 1000003u + uint64_t(b) * 1009u + uint64_t(c); }

}  // namespace dsa_test
