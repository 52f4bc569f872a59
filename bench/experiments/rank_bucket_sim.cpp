// Simulates kernels/rank_rows.cu's bucket ranking on the benchmark's inputs (a causal sequence of S tokens from
// the SPEC section 6 generator, as prefill_candidate_sim.cpp), for a sample of rows, on the CPU: each row's top k
// (float64 sums rounded to float), their inverted order keys, the bits on which they differ, the 2^bits-bucket
// histogram of the top `bits` of those (or, with `linear`, 2^bits buckets linear in the score between the row's
// best and worst result, as prefill-rank-rows-linear-buckets.patch; each row's ranks by those buckets are checked
// against the sorted order); per row whether the largest bucket exceeds 64 (the kernel then sorts the row
// instead), and the comparisons the in-bucket ranking makes (sum of squared bucket sizes).
// Build against a CPU build of the repository (build/ with DSA_BUILD_TESTS), e.g.:
//   g++ -O2 -std=c++17 -Iinclude -Isrc -Itests bench/experiments/rank_bucket_sim.cpp \
//       build/libdsa_test_util.a -Lbuild -ldsa_indexer -Wl,-rpath,$PWD/build -o /tmp/rsim
//   /tmp/rsim S [sampled_rows] [bits] [linear]      e.g. /tmp/rsim 8192 64 11 linear
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>
#include "causal_row_scores.hpp"
#include "common/order_key.h"
#include "test_util.hpp"
using namespace dsa_test;

// The ranking the linear-bucket kernel computes (bucket offset + the results of the bucket before, by (key, slot)),
// checked against the sorted order: `keys` arrive sorted, so a result's slot is its rank, and the kernel's slot
// order (positions) is emulated by a fixed shuffle.
static bool ranks_by_buckets_match(const std::vector<uint32_t>& sorted_keys, int bits, float best, float scale) {
    const int n = int(sorted_keys.size()), buckets = 1 << bits;
    std::vector<uint32_t> keys(sorted_keys);
    for (int i = n - 1; i > 0; --i) {  // a fixed shuffle: results in "position" order, not rank order
        const int j = int((uint64_t(i) * 2654435761u) % uint64_t(i + 1));
        std::swap(keys[size_t(i)], keys[size_t(j)]);
    }
    auto bucket_of = [&](uint32_t key) {
        return std::min(buckets - 1, int((best - dsa::score_from_order_key(~key)) * scale));
    };
    std::vector<int> offset(size_t(buckets) + 1, 0);
    for (uint32_t key : keys) ++offset[size_t(bucket_of(key)) + 1];
    for (int b = 0; b < buckets; ++b) offset[size_t(b) + 1] += offset[size_t(b)];
    std::vector<uint32_t> ranked(static_cast<size_t>(n));
    for (int slot = 0; slot < n; ++slot) {
        const uint32_t key = keys[size_t(slot)];
        const int b = bucket_of(key);
        int rank = offset[size_t(b)];
        for (int other = 0; other < n; ++other)  // the bucket's results that precede it
            if (bucket_of(keys[size_t(other)]) == b &&
                (uint64_t(keys[size_t(other)]) << 11 | uint64_t(other)) < (uint64_t(key) << 11 | uint64_t(slot)))
                ++rank;
        ranked[size_t(rank)] = key;
    }
    return ranked == sorted_keys;
}

int main(int argc, char** argv) {
    const int S = argc > 1 ? atoi(argv[1]) : 8192, samples = argc > 2 ? atoi(argv[2]) : 64;
    const int bits = argc > 3 ? atoi(argv[3]) : 11, k = 2048, H = 64;
    const bool linear = argc > 4 && std::string(argv[4]) == "linear";
    RaggedCase c(H, S, causal_windows({S}, {S}));
    Rng rng(99);
    fill_spec6(c, rng);
    int rows = 0, fallback = 0, sign_mixed = 0, wrong = 0;
    double compares = 0, range_bits = 0, largest_sum = 0;
    for (int si = 0; si < samples; ++si) {
        const int row = int((int64_t(si) * (S - 1)) / (samples - 1));
        const std::vector<float> sc = causal_row_scores(c, H, row);
        std::vector<uint32_t> keys(sc.size());
        for (size_t i = 0; i < sc.size(); ++i) keys[i] = ~dsa::score_order_key(sc[i]);
        std::sort(keys.begin(), keys.end());  // ascending inverted: best first
        keys.resize(std::min<size_t>(keys.size(), size_t(k)));
        uint32_t any = 0, all = ~0u;
        for (uint32_t x : keys) any |= x, all &= x;
        const uint32_t differing = any & ~all;
        if (differing == 0) continue;
        const int end_bit = 32 - __builtin_clz(differing), shift = std::max(end_bit - bits, 0);
        std::vector<int> count(size_t(1) << bits, 0);
        // linear: buckets linear in the score between the row's best and worst result (float arithmetic, as a
        // kernel would do it: monotone since rounding is)
        const float best = dsa::score_from_order_key(~keys.front()), worst = dsa::score_from_order_key(~keys.back());
        const float scale = float(1 << bits) / (best - worst);
        for (uint32_t x : keys)
            ++count[linear ? std::min((1 << bits) - 1, int((best - dsa::score_from_order_key(~x)) * scale))
                           : int((x >> shift) & ((1u << bits) - 1))];
        const int largest = *std::max_element(count.begin(), count.end());
        if (linear && largest <= 64 && !ranks_by_buckets_match(keys, bits, best, scale)) ++wrong;
        double sq = 0;
        for (int n : count) sq += double(n) * n;
        ++rows;
        fallback += largest > 64;
        sign_mixed += (any ^ all) >> 31;
        compares += sq / double(keys.size());
        range_bits += end_bit - (__builtin_ffs(int(differing)) - 1);
        largest_sum += largest;
        printf("row %6d window %6zu results %4zu differing bits [%2d, %2d) largest bucket %5d compares/result %7.1f%s\n",
               row, sc.size(), keys.size(), __builtin_ffs(int(differing)) - 1, end_bit, largest, sq / double(keys.size()),
               largest > 64 ? "  (sorted instead)" : "");
    }
    printf("S %d bits %d: rows %d, sorted instead %d, sign bit among the differing %d; means: differing bits %.1f, "
           "largest bucket %.1f, compares a result %.1f%s\n",
           S, bits, rows, fallback, sign_mixed, range_bits / rows, largest_sum / rows, compares / rows,
           linear ? (wrong ? "; RANKS WRONG" : "; ranks by linear buckets equal the sorted order") : "");
    return wrong ? 1 : 0;
}
