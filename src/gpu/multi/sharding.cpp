#include "gpu/multi/sharding.hpp"

#include <algorithm>

namespace dsa {
namespace {

// A row's selection costs about as much as scoring this many tokens (measured: ~15 us per row chunk).
constexpr int64_t kRowCostTokens = 4096;

int64_t sequence_cost(const PagedProblem& host, int32_t b) {
    int64_t cost = 0;
    for (int j = 0; j < host.shape.next_n; ++j)
        cost += visible_positions(host.seq_lens[b], host.shape.next_n, j) + kRowCostTokens;
    return cost;
}

}  // namespace

std::vector<int32_t> split_sequences(const PagedProblem& host, int ranks) {
    std::vector<int64_t> prefix(size_t(host.batch_size) + 1, 0);
    for (int32_t b = 0; b < host.batch_size; ++b) prefix[size_t(b) + 1] = prefix[size_t(b)] + sequence_cost(host, b);
    std::vector<int32_t> bounds(size_t(ranks) + 1, host.batch_size);
    bounds[0] = 0;
    for (int r = 1; r < ranks; ++r) {
        const int64_t target = prefix.back() * r / ranks;
        // First cut whose prefix reaches the target, or the one before it when that is nearer.
        int32_t cut = int32_t(std::lower_bound(prefix.begin(), prefix.end(), target) - prefix.begin());
        if (cut > 0 && target - prefix[size_t(cut) - 1] < prefix[size_t(cut)] - target) --cut;
        bounds[size_t(r)] = std::max(bounds[size_t(r) - 1], std::min(cut, host.batch_size));
    }
    return bounds;
}

}  // namespace dsa
