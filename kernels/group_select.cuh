// The radix-selection steps of the fused kernels, run together by a group of Threads threads (the decode
// kernel's 256 or 512 consumer threads, or one prefill warpgroup of 128) whose barrier is `sync`. Keys are the
// 32-bit order keys of common/order_key.h (larger ranks first); each thread holds Items of them in
// registers, items [i0, i0 + Items) of n. Ties go to the earlier item (the smaller position).
#pragma once

#include <cstdint>

namespace dsa::kernels {

constexpr int kSelectBins = 2048;  // a refinement level: up to 11 bits of the key

template <int Threads, class Sync>
struct GroupSelect {
    static constexpr int kWarps = Threads / 32;

    Sync sync;
    int t;                      // thread in the group
    int (*warp_total)[kWarps];  // [2][kWarps] shared: a scan's warp sums, by call parity
    int* bcast;                 // [2] shared
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
    // (need <= the total), and the count in the bins above it.
    __device__ void find_bin(const int* hist, int nbins, int need, int& bin, int& above) {
        const int per = nbins / Threads;
        const int lo = (Threads - 1 - t) * per;
        int local = 0;
        for (int i = 0; i < per; ++i) local += hist[lo + i];
        int total;
        const int excl = exclusive_scan(local, total);
        if (excl < need && need <= excl + local) {
            int acc = excl;
            for (int i = per - 1; i >= 0; --i) {
                const int h = hist[lo + i];
                if (acc + h >= need) {
                    bcast[0] = lo + i;
                    bcast[1] = acc;
                    break;
                }
                acc += h;
            }
        }
        sync();
        bin = bcast[0];
        above = bcast[1];
        sync();
    }

    // Narrows the threshold prefix (the key's bits above `shift`) 11 bits at a time over the keys in
    // registers, until the threshold bin holds exactly the `need` items still needed or every bit is known.
    // `above` counts the items above the threshold; hist (kSelectBins ints) is scratch.
    template <int Items>
    __device__ void refine(const uint32_t (&key)[Items], int i0, int n, uint32_t& prefix, int& shift, int& need,
                           int& above, int& ties, int* hist) {
        while (ties > need && shift > 0) {
            const int width = shift < 11 ? shift : 11, bshift = shift - width;
            for (int i = t; i < kSelectBins; i += Threads) hist[i] = 0;
            sync();
#pragma unroll
            for (int e = 0; e < Items; ++e)
                if (i0 + e < n && (key[e] >> shift) == prefix) atomicAdd(&hist[(key[e] >> bshift) & ((1u << width) - 1u)], 1);
            sync();
            int bin, up;
            find_bin(hist, 1 << width, need, bin, up);
            above += up;
            need -= up;
            ties = hist[bin];
            sync();
            prefix = (prefix << width) | uint32_t(bin);
            shift = bshift;
        }
    }

    // The items kept by the threshold (key >> shift above prefix, or equal and among the first `need` equal
    // ones), in item order: keep(slot, e) for item i0 + e, slot = its rank among the kept.
    template <int Items, class Keep>
    __device__ void keep_in_order(const uint32_t (&key)[Items], int i0, int n, uint32_t prefix, int shift, int need,
                                  Keep keep) {
        int gt = 0, eq = 0;
#pragma unroll
        for (int e = 0; e < Items; ++e) {
            const bool in = i0 + e < n;
            gt += in && (key[e] >> shift) > prefix;
            eq += in && (key[e] >> shift) == prefix;
        }
        int total;
        const int before = exclusive_scan(gt | (eq << 16), total);
        int gt_before = before & 0xffff, eq_before = before >> 16;
#pragma unroll
        for (int e = 0; e < Items; ++e) {
            if (i0 + e >= n) break;
            const uint32_t top = key[e] >> shift;
            if (top > prefix) {
                keep(gt_before + min(eq_before, need), e);
                ++gt_before;
            } else if (top == prefix) {
                if (eq_before < need) keep(gt_before + eq_before, e);
                ++eq_before;
            }
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
