// Exact top-k of one candidate list by one warp, with no barrier but the warp's own: a warpgroup selects four
// lists side by side instead of one after another behind 128-thread barriers. A list is n (order key, position)
// pairs in global memory, in position order (keys: common/order_key.h, larger ranks first); ties go to the
// earlier entry. Level 1 comes from a histogram of the keys' top bits that the caller kept; lower bits are
// refined 10 at a time over the list, each level one pass of the warp over it, until the threshold bin holds
// exactly what is still needed; one more pass hands the kept entries to a sink in position order.
#pragma once

#include <cstdint>

namespace dsa::kernels {

constexpr int kWarpSelectBins = 1024;  // a warp refinement level: 10 bits of the key (4 KB of shared memory)
constexpr int kWarpSelectLoads = 8;    // 16-byte loads (two entries each) a lane makes for one span of a pass
// Entries a pass reads at once (a span; the next one's loads go out while one is used): a list's storage must be
// readable up to n rounded up to this. (16 loads a span measured slower than 8: bench/NOTES.md, session 31.)
constexpr int kWarpSelectSpan = 32 * 2 * kWarpSelectLoads;

// The bin of hist (nbins bins: kWarpSelectBins, or at most 32, larger keys in higher bins) holding the
// need-th largest key (0 < need <= the total), the count in the bins above it and the bin's own count, on
// every lane. Lane l sums the l-th run of bins from the top; the lane whose run holds it walks the run.
// Packed: each bin's count is its low 16 bits (the high ones count something else: pair_write_row).
template <bool Packed = false>
__device__ inline void warp_find_bin(const int* hist, int nbins, int need, int& bin, int& above, int& count) {
    constexpr int kMask = Packed ? 0xffff : -1;
    constexpr int kPer = kWarpSelectBins / 32;
    const int lane = int(threadIdx.x % 32);
    const bool whole = nbins == kWarpSelectBins;  // else a narrow last level: at most one bin a lane
    const int top = whole ? nbins - lane * kPer : nbins - lane;  // this lane's run ends below bin `top`
    const int4* run = whole ? reinterpret_cast<const int4*>(hist + top - kPer) : nullptr;  // 16-byte aligned
    int local = 0;
    if (whole) {
        // Each lane starts at its own word of the run: a quarter-warp's 16-byte reads fall in distinct banks.
#pragma unroll
        for (int j = 0; j < kPer / 4; ++j) {
            const int4 v = run[(j + lane) % (kPer / 4)];
            local += (v.x & kMask) + (v.y & kMask) + (v.z & kMask) + (v.w & kMask);
        }
    } else if (top > 0) {
        local = hist[top - 1] & kMask;
    }
    int inclusive = local;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
        const int x = __shfl_up_sync(0xffffffffu, inclusive, off);
        if (lane >= off) inclusive += x;
    }
    const bool holds = inclusive - local < need && need <= inclusive;
    int my_bin = top - 1, my_above = inclusive - local, my_count = local;  // the narrow case's one bin
    if (holds && whole) {
        int h[kPer];
#pragma unroll
        for (int j = 0; j < kPer / 4; ++j) {
            const int4 v = run[j];
            h[4 * j] = v.x & kMask;
            h[4 * j + 1] = v.y & kMask;
            h[4 * j + 2] = v.z & kMask;
            h[4 * j + 3] = v.w & kMask;
        }
        int acc = my_above;
        bool found = false;
#pragma unroll
        for (int i = kPer - 1; i >= 0; --i) {
            if (!found) {
                if (acc + h[i] >= need) {
                    my_bin = top - kPer + i;
                    my_above = acc;
                    my_count = h[i];
                    found = true;
                } else {
                    acc += h[i];
                }
            }
        }
    }
    const int from = __ffs(__ballot_sync(0xffffffffu, holds)) - 1;
    bin = __shfl_sync(0xffffffffu, my_bin, from);
    above = __shfl_sync(0xffffffffu, my_above, from);
    count = __shfl_sync(0xffffffffu, my_count, from);
}

// One warp's selection over the list `list` of n entries (.x the order key, .y the position), 16-byte aligned and
// readable up to n rounded up to kWarpSelectSpan entries (what lies past n is never used).
struct WarpSelect {
    const uint2* list;
    int n;
    int lane = int(threadIdx.x % 32);

    // f(i, e) for each lane's pair of entries i and i + 1 (e: their two uint2 words as one uint4; either may be
    // past n), lane l taking entries 2 l and 2 l + 1 of each run of 64. Every load of a span is issued before
    // the first use.
    template <class F>
    __device__ void for_each_run(F f) const {
        uint4 next[kWarpSelectLoads];
        load_span(0, next);
        for (int base = 0; base < n; base += kWarpSelectSpan) {
            uint4 v[kWarpSelectLoads];
            take_span(base, v, next);
#pragma unroll
            for (int m = 0; m < kWarpSelectLoads; ++m) {
                if (base + 64 * m >= n) break;  // uniform: the runs past the list
                f(base + 64 * m + 2 * lane, v[m]);
            }
        }
    }

    // The span at base into v from next, where load_span put it, and the loads of the span after it (if any) into
    // next, to be in flight while v is used.
    __device__ void take_span(int base, uint4 (&v)[kWarpSelectLoads], uint4 (&next)[kWarpSelectLoads]) const {
#pragma unroll
        for (int m = 0; m < kWarpSelectLoads; ++m) v[m] = next[m];
        if (base + kWarpSelectSpan < n) load_span(base + kWarpSelectSpan, next);
    }

    // The span of entries [base, base + kWarpSelectSpan), this lane's words of it: issued here, used a span later,
    // so that a pass waits for the memory once, not once a span.
    __device__ void load_span(int base, uint4 (&v)[kWarpSelectLoads]) const {
        const uint4* words = reinterpret_cast<const uint4*>(list);
#pragma unroll
        for (int m = 0; m < kWarpSelectLoads; ++m) v[m] = __ldcg(words + (base / 2 + 32 * m + lane));
    }

    // The threshold of the best k (k < n): keys whose bits above `shift` exceed `prefix` are kept, and the first
    // `need` of the `ties` equal to it (all of them when ties == need, as where the refinement stopped before the
    // last bit); bin1 and above1 are level 1's bin and the count above it.
    struct Threshold {
        uint32_t prefix;
        int shift, need, ties;
        int bin1, above1;
    };
    // Level 1 from top_hist (kWarpSelectBins bins of the key's bits above TopShift, counting the list's keys);
    // each further level counts into hist (kWarpSelectBins ints of shared memory, this warp's own): 10 bits,
    // then what is left once fewer than 10 are (at most 5: warp_find_bin's narrow levels).
    template <int TopShift>
    __device__ Threshold threshold(int k, const int* top_hist, int* hist) const {
        static_assert(32 - TopShift == 10 && TopShift % 10 <= 5, "level 1: 10 bits; the last level at most 5");
        Threshold th;
        int ties;
        warp_find_bin(top_hist, kWarpSelectBins, k, th.bin1, th.above1, ties);
        th.prefix = uint32_t(th.bin1);
        th.shift = TopShift;
        th.need = k - th.above1;
        while (ties > th.need && th.shift > 0) {
            const int width = th.shift < 10 ? th.shift : 10, bshift = th.shift - width;
            const uint32_t mask = (1u << width) - 1u;
            __syncwarp();  // the previous level's reads of hist are done
            for (int i = lane; i < (1 << width); i += 32) hist[i] = 0;
            __syncwarp();
            const uint32_t p = th.prefix;
            const int s = th.shift;
            for_each_run([&](int i, const uint4& e) {
                if (i < n && (e.x >> s) == p) atomicAdd(&hist[(e.x >> bshift) & mask], 1);
                if (i + 1 < n && (e.z >> s) == p) atomicAdd(&hist[(e.z >> bshift) & mask], 1);
            });
            __syncwarp();
            int bin, up;
            warp_find_bin(hist, 1 << width, th.need, bin, up, ties);
            th.need -= up;
            th.prefix = (th.prefix << width) | uint32_t(bin);
            th.shift = bshift;
        }
        th.ties = ties;
        return th;
    }

    // keep(slot, key, position) for every entry the threshold keeps (slot: its rank in position order among the
    // kept), k of them. Stops once all k are placed. Each entry's slot is at most its index, and every entry of a
    // span is read before the first keep of it: keep may write the list itself (a compaction in place).
    // placed and equal_seen: the kept entries and the threshold's equal keys before this list, where it is the
    // second part of a longer one (pair_write_row).
    template <class Keep>
    __device__ void keep_in_order(int k, const Threshold& th, Keep keep, int placed = 0, int equal_seen = 0) const {
        const uint32_t prefix = th.prefix;
        const int shift = th.shift, need = th.need;
        const unsigned below = (1u << lane) - 1u;
        const bool every_tie = th.ties == need;  // no rank among the equal keys needed
        uint4 next[kWarpSelectLoads];
        load_span(0, next);
        for (int base = 0; base < n && placed < k; base += kWarpSelectSpan) {
            // Every word of this span is in registers before the first keep: the in-place compaction's writes
            // (at or below their entries' indices) never reach an entry not yet read, in this span or the next.
            uint4 v[kWarpSelectLoads];
            take_span(base, v, next);
#pragma unroll
            for (int m = 0; m < kWarpSelectLoads; ++m) {
                const int i = base + 64 * m + 2 * lane;
                const uint32_t t0 = v[m].x >> shift, t1 = v[m].z >> shift;
                const bool in0 = i < n, in1 = i + 1 < n;
                bool kept0 = in0 && t0 >= prefix, kept1 = in1 && t1 >= prefix;
                if (!every_tie) {  // uniform
                    const bool eq0 = in0 && t0 == prefix, eq1 = in1 && t1 == prefix;
                    const unsigned eq_a = __ballot_sync(0xffffffffu, eq0), eq_b = __ballot_sync(0xffffffffu, eq1);
                    const int eq_rank = equal_seen + __popc(eq_a & below) + __popc(eq_b & below);
                    kept0 = (in0 && t0 > prefix) || (eq0 && eq_rank < need);
                    kept1 = (in1 && t1 > prefix) || (eq1 && eq_rank + int(eq0) < need);
                    equal_seen += __popc(eq_a) + __popc(eq_b);
                }
                const unsigned kept_a = __ballot_sync(0xffffffffu, kept0), kept_b = __ballot_sync(0xffffffffu, kept1);
                const int slot = placed + __popc(kept_a & below) + __popc(kept_b & below);
                if (kept0) keep(slot, v[m].x, v[m].y);
                if (kept1) keep(slot + int(kept0), v[m].z, v[m].w);
                placed += __popc(kept_a) + __popc(kept_b);
            }
        }
    }
};

}  // namespace dsa::kernels
