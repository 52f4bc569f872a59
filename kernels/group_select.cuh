// The radix-selection steps of the fused kernels, run together by a group of Threads threads (the decode
// kernel's 256 or 512 consumer threads, or one prefill warpgroup of 128) whose barrier is `sync`. Keys are the
// 32-bit order keys of common/order_key.h (larger ranks first); each thread holds Items of them in
// registers, thread t items [t * Items, (t + 1) * Items). Ties go to the earlier item (the smaller position).
//
// Padding: a group with fewer real items (n) than Threads * Items gives the rest key 0, so that no pass
// tests bounds per item. Key 0 is NaN's, below every other score's key, and the padding comes after every
// real item, so in the selection's order (larger key, then earlier item) the padding is last: with n > k
// none of it is among the first k, and an exact selection over all items keeps what it keeps over the real
// ones. Counts may include the padding or not (prefill's level 1 counts real items only): the threshold
// bin and the count above it are the same either way (the k-th item is real; nothing is below key 0), only
// a bin's count (ties) can be larger, which only postpones refine's stop; keep_in_order keeps the first
// `need` equal items in item order, and need never exceeds the real ones equal to the threshold, which come
// before any padding. A row with n <= k keeps every real item and must keep no padding: not selected here.
#pragma once

#include <cstdint>

namespace dsa::kernels {

constexpr int kSelectBins = 2048;  // a refinement level: up to 11 bits of the key
constexpr int kSelectBcast = 3;    // ints of find_bin's result broadcast: bin, count above, bin's count

template <int Threads, class Sync>
struct GroupSelect {
    static constexpr int kWarps = Threads / 32;

    Sync sync;
    int t;                      // thread in the group
    int (*warp_total)[kWarps];  // [2][kWarps] shared: a scan's warp sums, by call parity
    int* bcast;                 // [kSelectBcast] shared
    int parity = 0;

    // Exclusive prefix sum of v in thread order, and the total. One barrier: consecutive calls use the two
    // warp_total buffers in turn, and the barrier of the call between keeps a buffer from being rewritten
    // while it is read.
    __device__ int exclusive_scan(int v, int& total) {
        const int lane = t % 32, warp = t / 32;
        int inc = v;
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const int x = __shfl_up_sync(0xffffffffu, inc, off);
            if (lane >= off) inc += x;
        }
        if (lane == 31) warp_total[parity][warp] = inc;
        sync();
        int before = 0, sum = 0;
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
            const int x = warp_total[parity][w];
            before += w < warp ? x : 0;
            sum += x;
        }
        parity ^= 1;
        total = sum;
        return before + inc - v;
    }

    // The bin of hist (nbins bins, larger keys in higher bins) holding the need-th largest key
    // (need <= the total), the count in the bins above it, and the bin's own count. Two barriers, and none
    // after the read of bcast: the next call writes bcast only after its scan's barrier, which every thread
    // reaches after reading this call's result. Every read of hist is before the second barrier, so hist
    // may be rewritten once this returns.
    // Each thread reads its run of bins once, in 16-byte words where the run allows (hist 16-byte aligned), and
    // searches it in registers: one shared-memory round trip instead of a dependent chain of them.
    __device__ void find_bin(const int* hist, int nbins, int need, int& bin, int& above, int& count) {
        constexpr int kMaxPer = kSelectBins / Threads;  // nbins is a power of two in [Threads, kSelectBins]
        const int per = nbins / Threads;
        const int lo = (Threads - 1 - t) * per;
        int h[kMaxPer];
        if (kMaxPer >= 4 && per >= 4) {
#pragma unroll
            for (int i = 0; i < kMaxPer; i += 4) {
                const int4 v = i < per ? *reinterpret_cast<const int4*>(hist + lo + i) : make_int4(0, 0, 0, 0);
                h[i] = v.x;
                h[i + 1] = v.y;
                h[i + 2] = v.z;
                h[i + 3] = v.w;
            }
        } else {
#pragma unroll
            for (int i = 0; i < kMaxPer; ++i) h[i] = i < per ? hist[lo + i] : 0;
        }
        int local = 0;
#pragma unroll
        for (int i = 0; i < kMaxPer; ++i) local += h[i];
        int total;
        const int excl = exclusive_scan(local, total);
        if (excl < need && need <= excl + local) {
            int acc = excl;
            bool found = false;
#pragma unroll
            for (int i = kMaxPer - 1; i >= 0; --i) {
                if (i < per && !found) {
                    if (acc + h[i] >= need) {
                        bcast[0] = lo + i;
                        bcast[1] = acc;
                        bcast[2] = h[i];
                        found = true;
                    } else {
                        acc += h[i];
                    }
                }
            }
        }
        sync();
        bin = bcast[0];
        above = bcast[1];
        count = bcast[2];
    }

    // Zeroes a histogram of kSelectBins ints (16-byte aligned), 16 bytes a store, unrolled: a loop strided by
    // the group cost a trip count, a remainder and a branch a level (SASS).
    __device__ void clear_bins(int* bins) const {
        constexpr int kWords = kSelectBins / 4;
        static_assert(kWords % Threads == 0 || Threads % kWords == 0, "whole words a thread, or one");
        int4* const words = reinterpret_cast<int4*>(bins);
        if constexpr (kWords >= Threads) {
#pragma unroll
            for (int j = 0; j < kWords / Threads; ++j) words[t + j * Threads] = make_int4(0, 0, 0, 0);
        } else if (t < kWords) {
            words[t] = make_int4(0, 0, 0, 0);
        }
    }

    // The keys whose bits above `shift` (0..32) equal prefix: [lowest, lowest + span].
    struct PrefixRange {
        uint32_t lowest, span;
        __device__ PrefixRange(uint32_t prefix, int shift)
            : lowest(uint32_t(uint64_t(prefix) << shift)), span(uint32_t((uint64_t(1) << shift) - 1u)) {}
    };

    // Narrows the threshold prefix (the key's bits above `shift`; shift 32 is the empty prefix) 11 bits at
    // a time over the keys in registers, until the threshold bin holds exactly the `need` items still
    // needed or every bit is known. `above` counts the items above the threshold, `ties` those equal to it.
    // hist and hist_next (kSelectBins ints each) take the levels in turn, hist first; each level clears the
    // next level's histogram while it counts into its own, so a level costs three barriers. On entry hist
    // must be zero, and every earlier access to either must be behind a barrier every thread has passed.
    template <int Items>
    __device__ void refine(const uint32_t (&key)[Items], uint32_t& prefix, int& shift, int& need, int& above,
                           int& ties, int* hist, int* hist_next) {
        for (int level = 0; ties > need && shift > 0; ++level) {
            // Chosen by parity, not swapped: swapped pointers cost the decode consumers registers (spills).
            int* const level_hist = level & 1 ? hist_next : hist;
            // Last read by the previous level's find_bin, before that call's second barrier.
            int* const next_hist = level & 1 ? hist : hist_next;
            const int width = shift < 11 ? shift : 11, bshift = shift - width;
            clear_bins(next_hist);
            if (shift == 32) {
                // The empty prefix: every key counts, with no test (a tested atomic compiles to a branch and
                // a convergence barrier around it: 8 instructions an item instead of 3, SASS).
#pragma unroll
                for (int e = 0; e < Items; ++e) atomicAdd(&level_hist[key[e] >> bshift], 1);
            } else {
                const PrefixRange range(prefix, shift);
#pragma unroll
                for (int e = 0; e < Items; ++e) {
                    const uint32_t low = key[e] - range.lowest;  // the bits below shift when the prefix matches
                    if (low <= range.span) atomicAdd(&level_hist[low >> bshift], 1);
                }
            }
            sync();
            int bin, up;
            find_bin(level_hist, 1 << width, need, bin, up, ties);
            above += up;
            need -= up;
            prefix = (prefix << width) | uint32_t(bin);
            shift = bshift;
        }
    }

    // The items kept by the threshold (key >> shift above prefix, or equal and among the first `need` of the
    // `ties` equal ones), in item order: keep(slot, e) for item e of this thread, slot = its rank among the kept.
    template <int Items, class Keep>
    __device__ void keep_in_order(const uint32_t (&key)[Items], uint32_t prefix, int shift, int need, int ties,
                                  Keep keep) {
        const PrefixRange range(prefix, shift);
        if (ties == need && range.lowest != 0u) {
            // Every equal item is kept (refine's usual end on distinct keys): the kept are the keys at or above
            // the prefix's lowest, one test an item. A threshold bin that holds key 0 (NaN's and the padding's)
            // takes the general path, whether or not the caller counted the padding.
            int kept = 0;
#pragma unroll
            for (int e = 0; e < Items; ++e) kept += key[e] >= range.lowest;
            int total;
            int slot = exclusive_scan(kept, total);
#pragma unroll
            for (int e = 0; e < Items; ++e)
                if (key[e] >= range.lowest) keep(slot++, e);
            return;
        }
        const uint32_t highest = range.lowest + range.span;
        int gt = 0, eq = 0;
#pragma unroll
        for (int e = 0; e < Items; ++e) {
            gt += key[e] > highest;
            eq += key[e] - range.lowest <= range.span;
        }
        int total;
        const int before = exclusive_scan(gt | (eq << 16), total);
        int gt_before = before & 0xffff, eq_before = before >> 16;
        // Branch-free per item (the kept item's store predicated): an item above the threshold lands after the
        // min(eq_before, need) equal ones before it, an equal one (kept only while eq_before < need) after
        // eq_before of them: the same slot expression.
#pragma unroll
        for (int e = 0; e < Items; ++e) {
            const bool above = key[e] > highest;
            const bool equal = !above && key[e] - range.lowest <= range.span;
            if (above || (equal && eq_before < need)) keep(gt_before + min(eq_before, need), e);
            gt_before += above;
            eq_before += equal;
        }
    }

    // Sorts a[0, size) descending (size a power of two): the larger candidate key ranks first.
    __device__ void sort_descending(uint64_t* a, int size) {
        for (int len = 2; len <= size; len <<= 1) {
            for (int stride = len >> 1; stride > 0; stride >>= 1) {
                for (int x = t; x < size / 2; x += Threads) {
                    const int i = (x / stride) * 2 * stride + x % stride, j = i + stride;
                    const bool descending = (i & len) == 0;
                    const uint64_t u = a[i], v = a[j];
                    if ((u < v) == descending) {
                        a[i] = v;
                        a[j] = u;
                    }
                }
                sync();
            }
        }
    }
};

}  // namespace dsa::kernels
