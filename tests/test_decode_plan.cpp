// The fused decode kernel's work plans (kernels/decode_plan.h, plain arithmetic compiled here for the host):
// every unit of the batch scored by exactly one CTA, each CTA's segments where the kernel's loops expect them,
// the CTAs it counts a split sequence's parts over (its ticket) the ones that hold them, and the aligned plan
// taken where the rule says. The GPU results built on them are compared with the CPU backend in test_gpu.cpp.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <random>
#include <vector>

#include "catch_shim.hpp"
#include "kernels/decode_plan.h"

namespace {

using dsa::kernels::CtaPlan;

struct Batch {
    std::vector<int> prefix;  // [B + 1]: the exclusive prefix of the units per sequence
    int B() const { return int(prefix.size()) - 1; }
    int U() const { return prefix.back(); }
    int units(int b) const { return prefix[size_t(b) + 1] - prefix[size_t(b)]; }
};

Batch batch_of(const std::vector<int>& units) {
    Batch out{{0}};
    for (int u : units) out.prefix.push_back(out.prefix.back() + u);
    return out;
}

// The aligned plan of every CTA of a grid of `grid` CTAs as the kernel derives it (aligned_plan_by_warp: the
// sequences' CTA counts in order, a CTA past them empty), or an empty list when the batch does not take it.
std::vector<CtaPlan> aligned_plans(const Batch& batch, int grid) {
    const int B = batch.B(), U = batch.U(), G = std::min(grid, U);
    if (B > G) return {};
    std::vector<CtaPlan> plans(size_t(grid), CtaPlan{});
    int first_cta = 0;
    for (int b = 0; b < B; ++b) {
        const int ctas = dsa::kernels::aligned_ctas(batch.units(b), U, G, B);
        if (!dsa::kernels::aligned_share_fits(batch.units(b), ctas, U, G)) return {};
        REQUIRE(first_cta + ctas <= G);  // at most G CTAs in all
        REQUIRE(ctas <= batch.units(b));  // none without units
        for (int part = 0; part < ctas; ++part)
            plans[size_t(first_cta + part)] =
                dsa::kernels::aligned_plan_of_part(b, batch.prefix[size_t(b)], batch.units(b), first_cta, ctas, part);
        first_cta += ctas;
    }
    return plans;
}

std::vector<CtaPlan> even_plans(const Batch& batch, int grid) {
    const int U = batch.U(), G = std::min(grid, U);
    std::vector<CtaPlan> plans;
    for (int c = 0; c < grid; ++c)
        plans.push_back(dsa::kernels::even_plan_of_cta(c, batch.B(), U, G, [&](int b) { return batch.prefix[size_t(b)]; }));
    return plans;
}

// What the kernel relies on, for any plan: the CTAs' unit ranges tile [0, U) in CTA order (empty ones
// anywhere); a CTA's units are b_first's [u0, end_a), b_last's [start_b, u1) and whole sequences between;
// first_lo..first_hi (last_lo..last_hi) are exactly the CTAs holding units of b_first (b_last).
void check_plans(const Batch& batch, const std::vector<CtaPlan>& plans) {
    const int B = batch.B();
    std::vector<int> lo(size_t(B), -1), hi(size_t(B), -1);
    int next = 0;
    for (size_t c = 0; c < plans.size(); ++c) {
        const CtaPlan& p = plans[c];
        if (p.u0 == p.u1) continue;
        REQUIRE(p.u0 == next);
        REQUIRE(p.u0 < p.u1);
        next = p.u1;
        REQUIRE(batch.prefix[size_t(p.b_first)] <= p.u0);
        REQUIRE(p.u0 < batch.prefix[size_t(p.b_first) + 1]);
        REQUIRE(batch.prefix[size_t(p.b_last)] < p.u1);
        REQUIRE(p.u1 <= batch.prefix[size_t(p.b_last) + 1]);
        CHECK(p.end_a == std::min(p.u1, batch.prefix[size_t(p.b_first) + 1]));
        CHECK(p.start_b == (p.b_last != p.b_first ? batch.prefix[size_t(p.b_last)] : p.end_a));
        for (int b = p.b_first; b <= p.b_last; ++b) {
            if (batch.units(b) == 0) continue;
            if (lo[size_t(b)] < 0) lo[size_t(b)] = int(c);
            hi[size_t(b)] = int(c);
        }
    }
    REQUIRE(next == batch.U());
    for (size_t c = 0; c < plans.size(); ++c) {
        const CtaPlan& p = plans[c];
        if (p.u0 == p.u1) continue;
        CHECK(p.first_lo == lo[size_t(p.b_first)]);
        CHECK(p.first_hi == hi[size_t(p.b_first)]);
        CHECK(p.last_lo == lo[size_t(p.b_last)]);
        CHECK(p.last_hi == hi[size_t(p.b_last)]);
    }
}

int largest_share(const std::vector<CtaPlan>& plans) {
    int most = 0;
    for (const CtaPlan& p : plans) most = std::max(most, p.u1 - p.u0);
    return most;
}

// Equal, random or power-of-two unit counts (up to 2^21: U stays an int for 300 sequences), some sequences empty.
std::vector<int> random_units(std::mt19937& rng, int B) {
    std::vector<int> units;
    const int shape = int(rng() % 3);
    for (int b = 0; b < B; ++b) {
        const int pick = int(rng() % 6);
        units.push_back(pick == 0 ? 0 : shape == 0 ? 128 : shape == 1 ? 1 + int(rng() % 300) : int(1u << (rng() % 22)));
    }
    return units;
}

}  // namespace

TEST_CASE("decode plans: every unit scored once, segments and ticket ranges where the kernel expects them",
          "[cpu][decode_plan]") {
    std::mt19937 rng(5);
    for (int trial = 0; trial < 3000; ++trial) {
        const int grid = 1 + int(rng() % 256);
        const int B = 1 + int(rng() % (trial % 2 ? 300 : grid + 1));
        const Batch batch = batch_of(random_units(rng, B));
        if (batch.U() == 0) continue;
        INFO("trial " << trial << ": B " << B << ", grid " << grid << ", U " << batch.U());
        check_plans(batch, even_plans(batch, grid));
        const std::vector<CtaPlan> aligned = aligned_plans(batch, grid);
        if (aligned.empty()) continue;
        check_plans(batch, aligned);
        const int G = std::min(grid, batch.U());
        CHECK(largest_share(aligned) <= (batch.U() + G - 1) / G + dsa::kernels::kAlignedSlackUnits);
        for (const CtaPlan& p : aligned) {  // one sequence per CTA, and its parts' ticket range is its own
            CHECK(p.b_first == p.b_last);
            CHECK(p.end_a == p.u1);
        }
    }
}

TEST_CASE("decode plans: the aligned plan where it costs the busiest CTA little, the even one elsewhere",
          "[cpu][decode_plan]") {
    constexpr int kGrid = 132;  // an H200's SMs
    const auto share = [](const std::vector<CtaPlan>& plans) { return largest_share(plans); };
    // 8 x 8192 tokens (128 units each): 16 CTAs of 8 units per sequence, as balanced as the even plan.
    std::vector<CtaPlan> plans = aligned_plans(batch_of(std::vector<int>(8, 128)), kGrid);
    REQUIRE(!plans.empty());
    CHECK(share(plans) == 8);
    CHECK(plans[16].b_first == 1);
    CHECK(plans[16].first_lo == 16);
    CHECK(plans[16].first_hi == 31);
    CHECK(plans[128].u0 == plans[128].u1);  // 4 CTAs left without units
    // 128 x 4096 (64 units): one CTA per sequence, no split row.
    plans = aligned_plans(batch_of(std::vector<int>(128, 64)), kGrid);
    REQUIRE(!plans.empty());
    CHECK(share(plans) == 64);
    CHECK(plans[5].first_lo == 5);
    CHECK(plans[5].first_hi == 5);
    // 1 x 131072: the aligned plan is the even one.
    plans = aligned_plans(batch_of({2048}), kGrid);
    REQUIRE(!plans.empty());
    CHECK(share(plans) == share(even_plans(batch_of({2048}), kGrid)));
    // 128 x 32768 (512 units): one CTA each would be 15 units over the even plan's 497: the even plan.
    CHECK(aligned_plans(batch_of(std::vector<int>(128, 512)), kGrid).empty());
    // One long sequence beside many short ones (test_gpu.cpp's 40000 tokens among 99 x 2100): the long one's
    // 6 CTAs would carry 105 units each against the even plan's 30.
    std::vector<int> one_long(99, 33);
    one_long.insert(one_long.begin() + 40, 625);
    CHECK(aligned_plans(batch_of(one_long), kGrid).empty());
    // More sequences than CTAs: the even plan.
    CHECK(aligned_plans(batch_of(std::vector<int>(256, 128)), kGrid).empty());
    // The rule at its edge: 132 sequences (one CTA each) of 100 units but one; the even share is
    // ceil(U / 132) = 100 (101 once U passes 13200), the slack 12 units over it.
    for (int extra = 0; extra <= 20; ++extra) {
        std::vector<int> units(132, 100);
        units[7] += extra;
        const Batch batch = batch_of(units);
        const int even = (batch.U() + kGrid - 1) / kGrid;
        INFO("one sequence " << extra << " units over the rest");
        CHECK(aligned_plans(batch, kGrid).empty() == (100 + extra > even + dsa::kernels::kAlignedSlackUnits));
    }
    // Near the largest batch the kernel plans (U close to INT_MAX): no overflow in the rule.
    std::vector<int> huge(64, (INT_MAX - 64) / 64);
    CHECK(!aligned_plans(batch_of(huge), 256).empty());
}
