// How the fused decode kernel (kernels/decode_fused.cu) shares a batch's units (64-token tiles) among its
// CTAs: plain arithmetic, compiled for the kernel and, by tests/test_decode_plan.cpp, for the host.
//  - Even plan: CTA c owns units [c*U/G, (c+1)*U/G) of the batch's U units (G = min(grid, U)); a CTA may
//    hold the end of one sequence, whole ones and the start of another, and a sequence may be split over
//    several CTAs. Always balanced, whatever the lengths.
//  - Aligned plan (batches of at most G sequences): sequence b gets ctas_b = (G - B) u_b / U + 1 CTAs
//    (u_b > 0; at most G in all) and each of them an even share of its units, so no CTA holds two
//    sequences: no CTA scores a second sequence after the first one's ticket (a second load of queries, a
//    second ticket and possibly a second selection on the critical path of the row it starts). Taken when
//    its largest share is within kAlignedSlackUnits of the even plan's.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace dsa::kernels {

// Extra units the aligned plan may give its busiest CTA over the even plan's ceil(U / G) and still be
// taken: ~3.5 us of one CTA's stream on an H200, about what a second sequence in a CTA costs the rows it
// ends and starts (a queries load and a ticket, 3 us; a second selection, 8 us; bench/NOTES.md, session 10).
constexpr int kAlignedSlackUnits = 12;

// What a fused CTA needs to start, written by the plan kernel (one load instead of a chain of them) or, for a
// self-planned batch, by the CTA itself.
struct alignas(16) CtaPlan {
    int u0, u1;               // its units [u0, u1); none when u0 == u1
    int b_first, b_last;      // the sequences of units u0 and u1 - 1
    int end_a, start_b;       // its part of b_first ends at end_a; its part of b_last starts at start_b
    int first_lo, first_hi;   // the CTAs holding units of b_first (its ticket counts their parts) ...
    int last_lo, last_hi;     // ... and of b_last
    int reserved[2];          // the size a multiple of 16 bytes: the kernel loads it as int4s
};
static_assert(sizeof(CtaPlan) == 48, "decode_fused.cu's load_plan reads three int4s");

DSA_HOST_DEVICE int64_t unit_begin(int c, int units, int ctas) { return int64_t(c) * units / ctas; }
// The CTA of the even plan whose unit range holds unit u: the largest c with unit_begin(c) <= u.
DSA_HOST_DEVICE int cta_of(int64_t u, int units, int ctas) { return int(((u + 1) * ctas - 1) / units); }

// CTA c's even plan among G CTAs sharing U units of B sequences, from the unit prefix (prefix_at(b), b in
// [0, B]); CTAs c >= G get no units. decode_fused.cu's self-planned CTAs write the same fields during their unit
// scan, without these searches; the GPU test "self-planned and plan-kernel batches give the same rows" holds the
// two to the same result.
template <class PrefixAt>
DSA_HOST_DEVICE CtaPlan even_plan_of_cta(int c, int B, int U, int G, PrefixAt prefix_at) {
    // The sequence holding unit u: the last b with prefix_at(b) <= u (empty sequences come before it).
    auto sequence_of = [&](int u) {
        int lo = 0, hi = B;
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (prefix_at(mid) <= u) lo = mid + 1;
            else hi = mid;
        }
        return lo - 1;
    };
    CtaPlan cp{};
    if (c < G) {
        cp.u0 = int(unit_begin(c, U, G));
        cp.u1 = int(unit_begin(c + 1, U, G));
        cp.b_first = sequence_of(cp.u0);
        cp.b_last = sequence_of(cp.u1 - 1);
        const int first_end = prefix_at(cp.b_first + 1), last_start = prefix_at(cp.b_last);
        cp.end_a = cp.u1 < first_end ? cp.u1 : first_end;
        cp.start_b = cp.b_last != cp.b_first ? last_start : cp.end_a;
        cp.first_lo = cta_of(prefix_at(cp.b_first), U, G);
        cp.first_hi = cta_of(first_end - 1, U, G);
        cp.last_lo = cta_of(last_start, U, G);
        cp.last_hi = cta_of(prefix_at(cp.b_last + 1) - 1, U, G);
    }
    return cp;
}

// The aligned plan's CTAs for a sequence of `units` units, among G CTAs, U units and B <= G sequences (at
// most G in all: the floors sum to at most G - B). At most `units` of them, so each gets at least one.
DSA_HOST_DEVICE int aligned_ctas(int units, int U, int G, int B) {
    return units > 0 ? int(int64_t(G - B) * units / U) + 1 : 0;
}
// Whether that sequence's largest share, ceil(units / ctas), is within the slack of the even plan's ceil(U / G).
DSA_HOST_DEVICE bool aligned_share_fits(int units, int ctas, int U, int G) {
    return units <= int64_t(ctas) * ((int64_t(U) + G - 1) / G + kAlignedSlackUnits);
}
// Part `part` of the `ctas` CTAs of sequence b (units [first, first + units), its CTAs first_cta ...).
DSA_HOST_DEVICE CtaPlan aligned_plan_of_part(int b, int first, int units, int first_cta, int ctas, int part) {
    CtaPlan cp{};
    cp.u0 = first + int(int64_t(units) * part / ctas);
    cp.u1 = first + int(int64_t(units) * (part + 1) / ctas);
    cp.b_first = cp.b_last = b;
    cp.end_a = cp.start_b = cp.u1;
    cp.first_lo = cp.last_lo = first_cta;
    cp.first_hi = cp.last_hi = first_cta + ctas - 1;
    return cp;
}

}  // namespace dsa::kernels
