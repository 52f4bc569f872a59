// Fused prefill top-k over a contiguous K (SPEC section 2), sm_90a. One persistent launch: one CTA per SM,
// two warpgroups, each working on its own "jobs" (4 consecutive query rows) from start to finish:
//  - The job's keys are the union of its rows' windows, streamed in 64-key tiles by TMA (a 2-D tensor map
//    over [num_keys, 128 B], 128B swizzle) into a ring of mbarrier stages; one thread of the warpgroup
//    issues them kPrefillStages - 1 tiles ahead. The 4 rows' queries (4 x H x 128 B) are one TMA box.
//  - wgmma m64 x (4 H) x k32: keys as M, the 4 rows' heads as N, so K is read once per 4 rows; the
//    epilogue applies relu, the weights, the head sum (a 4-lane transpose-reduce, after which lane q holds
//    row q's scores) and the key scale in registers.
//  - Each row keeps a candidate buffer (4096 entries in the workspace, in position order), a threshold (a
//    score enters when its order key is at or above it) and a shared-memory histogram of the buffer's keys.
//    A tile's scores are appended while the next tile's wgmma runs. When a buffer fills, the warpgroup keeps
//    its best k in place (level 1 from the histogram, then radix refinement of the order key, ties to the
//    smaller position) and raises the threshold to what the k-th best needs, so most tiles of long windows
//    store nothing. At the job's end each row is selected exactly from its buffer and written out by one warp
//    (warp j of the warpgroup for row j, the job's rows side by side: kernels/warp_select.cuh), or, for sorted
//    output, by the warpgroup one row after another (the ranking sort needs the whole warpgroup).
//  - A row longer than the buffer compacts first at 1024 candidates (by its warp, as its final selection) and
//    keeps fewer than k: an estimate, from the keys seen so far, of its window's (k + 4 sigma)-th best, so the
//    buffer rarely fills again (one cheap compaction per row instead of one full one per ~e-fold of the
//    window) and ends with ~k + 4 sqrt(k window / 1024) candidates. Exact whenever at least k keys reach the
//    estimate; a job with a row left short (keys far from identically distributed along the window) is scored
//    again without estimates, and its warpgroup makes no more.
// A row that needs no scores (its window holds at most k keys, and neither scores nor sorted output are
// asked for) is written as its whole window and takes no part in its job's tiles.
// Every row is computed by one warpgroup alone, in position order, so the result is a pure function of the
// inputs, bit-identical to the CPU backend on tie-free inputs. Jobs are dealt out longest first (the last
// rows of a causal sequence have the longest windows) in a snake order over the warpgroups, which balances
// a causal triangle without any global counter. Scores never leave the chip except as candidates; the
// workspace is independent of S x N.
#include "kernels/prefill_fused.h"

#include <climits>
#include <cstdint>

#include <cuda.h>

#include "common/constants.hpp"
#include "common/order_key.h"
#include "common/problem.hpp"
#include "kernels/group_select.cuh"
#include "kernels/prefill_common.cuh"
#include "kernels/score_common.cuh"
#include "kernels/sm90.cuh"
#include "kernels/warp_select.cuh"

// In images other than sm_90a the kernel's body is compiled out (it only runs there), which leaves its
// device helpers unreferenced: nothing to warn about.
#pragma nv_diag_suppress 177

namespace dsa::kernels {
namespace {

constexpr int kJobRows = 4;          // query rows per job: wgmma N = 4 x H
constexpr int kPrefillTile = 64;     // keys per tile (wgmma M)
constexpr int kPrefillStages = 5;    // key tiles per warpgroup ring (what shared memory leaves room for)
constexpr int kWgThreads = 128;
constexpr int kPrefillThreads = 2 * kWgThreads;
constexpr int kSelectItems = kCandidateCap / kWgThreads;  // candidates per thread in a selection
// A final selection of at most 3072 candidates runs with 24 per thread: a quarter less per-item work (the
// loads, the refinement's counts, keep_in_order's unrolled items) for most rows' last selection.
constexpr int kSmallSelectItems = kSelectItems * 3 / 4;
constexpr int kCompactAt = kCandidateCap - kPrefillTile;  // past this, the next tile might not fit
static_assert(kJobRows == kWgThreads / 32, "a job's final selections: one warp per row");

constexpr int kOutItems = kMaxTopk / kWgThreads;           // output slots per thread

// Where sh.w keeps weight i = j H + head (row j): the epilogue's lane quad q reads heads 8 x + 2 q (+1) of two
// chunks x = 2 y and 2 y + 1 at once, so those four sit together, and the quads' fours side by side (one 16-byte
// read per lane, the warp's 64 bytes without bank conflicts).
template <int H>
__host__ __device__ constexpr int weight_slot(int i) {
    static_assert(H % 16 == 0, "the epilogue takes a row's chunks of 8 heads in pairs");
    const int row = i / H, head = i % H, x = head / 8, q = head % 8 / 2;
    return row * H + (x / 2) * 16 + q * 4 + (x % 2) * 2 + head % 2;
}

template <int H>
struct alignas(1024) WarpgroupSmem {
    uint8_t keys[kPrefillStages][kPrefillTile * kHeadDim];  // 1024-byte aligned: wgmma's swizzle atoms
    uint8_t q[kJobRows * H * kHeadDim];
    union alignas(16) {
        int hist[2][kSelectBins];  // the refinement levels' histograms, in turn
        uint64_t sort[kMaxTopk];
        int warp_hist[kWgThreads / 32][kWarpSelectBins];  // a warp's selection or compaction of its row
    } scratch;
    alignas(16) float w[kJobRows * H];  // in weight_slot order
    int row_hist[kJobRows][kRowBins];  // of the candidates in each row's buffer
    uint64_t full[kPrefillStages];
    uint64_t empty[kPrefillStages];
    uint64_t q_full;
    int counts[2][4][kJobRows];  // per tile parity, warp and row: candidates (a = 0) | (a = 1) << 16
    int compacted[kJobRows];      // a compaction's result per row: the candidates kept (0: not compacted) ...
    uint32_t raised[kJobRows];    // ... and the threshold a later candidate must reach
    int estimated;               // bit j: row j's threshold is an estimate, not yet known to reach its k-th best
    int rescoring;               // the current job is being scored again, without estimates
    int estimates_off;           // a job of this warpgroup was scored again: no more estimates (inputs whose
                                 // first keys outscore the rest would have every long job scored twice)
    int warp_total[2][kWgThreads / 32];  // GroupSelect's scan carries
    int bcast[kSelectBcast];
};

template <int H>
struct PrefillSmem {
    WarpgroupSmem<H> wg[2];
};

__device__ __forceinline__ uint64_t order_candidate(uint2 c) { return (uint64_t(c.x) << 32) | uint64_t(~c.y); }

// One warpgroup's view of its shared memory, and the selection of its rows' candidates.
template <int H>
struct Warpgroup {
    WarpgroupSmem<H>& sh;
    int id;    // 0 or 1
    int t;     // thread in the warpgroup
    int warp;  // warp in the warpgroup
    int lane;
    GroupSelect<kWgThreads, WarpgroupSync> group{WarpgroupSync{id}, t, sh.warp_total, sh.bcast};

    __device__ void sync() const { group.sync(); }

    // The threshold of the best k of the n (k < n <= kCandidateCap) candidates of buf, which this thread's
    // key/pos hold from here on (items [t * kSelectItems, ...), key 0 past n): level 1 comes from row_hist
    // (the top-10-bit histogram of buf), the lower bits are refined 11 + 11 at a time, stopping once the
    // threshold bin holds exactly what is still needed. GroupSelect::keep_in_order then keeps them in
    // position order, among equal keys the earlier (smaller) positions.
    struct Threshold {
        uint32_t prefix;
        int shift, need;
        int bin1, above1;  // level 1: the bin of the k-th key and the count above it
    };
    // Items per thread: kSelectItems, or fewer for n <= Items * kWgThreads.
    template <int Items>
    __device__ Threshold best_threshold(const uint2* buf, int n, int k, const int* row_hist,
                                        uint32_t (&key)[Items], uint32_t (&pos)[Items]) {
        static_assert(Items % 2 == 0 && Items <= kSelectItems, "pairs of candidates, 16-byte aligned per thread");
        const int i0 = t * Items;
        const uint4* const pairs = reinterpret_cast<const uint4*>(buf + i0);
        if (i0 + Items <= n) {
            // Unpredicated, from one base: the loads issue back to back. (Predicated and zero-filled, each
            // waited for the previous one to release the registers ptxas then reused for its address.)
#pragma unroll
            for (int e = 0; e < Items; e += 2) {  // in flight while level 1 is found
                const uint4 v = __ldcg(pairs + e / 2);
                key[e] = v.x;
                pos[e] = v.y;
                key[e + 1] = v.z;
                pos[e + 1] = v.w;
            }
        } else {  // the thread holding entry n - 1, and those past it
#pragma unroll
            for (int e = 0; e < Items; e += 2) {
                uint4 v = make_uint4(0u, 0u, 0u, 0u);
                if (i0 + e < n) v = __ldcg(pairs + e / 2);
                key[e] = v.x;
                pos[e] = v.y;
                key[e + 1] = i0 + e + 1 < n ? v.z : 0u;  // an odd n's last pair: entry n is stale, padded as the rest
                pos[e + 1] = v.w;
            }
        }
        // refine's first histogram starts at zero: scratch's last use (a row's sort, or the previous compaction)
        // ended behind a barrier, and find_bin's barriers order this clear before refine's counts.
        for (int i = t; i < kSelectBins; i += kWgThreads) sh.scratch.hist[0][i] = 0;
        Threshold th;
        int ties;
        group.find_bin(row_hist, kRowBins, k, th.bin1, th.above1, ties);
        int above = th.above1;
        th.need = k - above;
        th.shift = kRowBinShift;
        th.prefix = uint32_t(th.bin1);
        group.refine(key, th.prefix, th.shift, th.need, above, ties, sh.scratch.hist[0], sh.scratch.hist[1]);
        return th;
    }

    // Keeps the best k of the n (k < n <= kCandidateCap) candidates of buf in place, in position order, and
    // row_hist with them. Returns threshold_after_keep.
    __device__ uint32_t keep_best(uint2* buf, int n, int k, int* row_hist) {
        const Threshold th = keep_best_in_scratch(buf, n, k, row_hist);
        // Every read of buf is behind the barriers above, so the kept items move down in place.
        for (int i = t; i < k; i += kWgThreads) {
            const uint64_t c = sh.scratch.sort[i];
            buf[i] = make_uint2(uint32_t(c >> 32), candidate_position(c));
        }
        // What stays: every bin above bin1 whole, k - above1 of bin1, nothing below.
        for (int i = t; i < kRowBins; i += kWgThreads)
            if (i <= th.bin1) row_hist[i] = i == th.bin1 ? k - th.above1 : 0;
        __threadfence_block();
        sync();
        return threshold_after_keep(th.prefix, th.shift);
    }

    // The best k of the n (k < n <= kCandidateCap) candidates of buf into sh.scratch.sort[0, k), in position
    // order, as order_candidate words; visible to the whole warpgroup on return. Through shared memory, so that
    // what follows writes global memory in whole lines (kept straight from registers, each thread's items went
    // to scattered slots: one 4- or 8-byte store per item).
    template <int Items = kSelectItems>
    __device__ Threshold keep_best_in_scratch(const uint2* buf, int n, int k, const int* row_hist) {
        uint32_t key[Items], pos[Items];
        const Threshold th = best_threshold(buf, n, k, row_hist, key, pos);
        // find_bin's reads of scratch are behind its last barrier, so the kept items may land there.
        group.keep_in_order(key, th.prefix, th.shift, th.need,
                            [&](int slot, int e) { sh.scratch.sort[slot] = order_candidate(make_uint2(key[e], pos[e])); });
        sync();
        return th;
    }

    // Writes row r as every position of its window [start, end) (no more than k), in order, then padding. No
    // scores: only rows that need none come here.
    __device__ void write_window(const RaggedProblem& pb, int64_t r, int start, int end, int32_t base) const {
        const int k = pb.shape.topk;
        int32_t* out_idx = pb.out.indices + r * k;
        for (int i = t; i < k; i += kWgThreads) out_idx[i] = start + i < end ? start + i - base : -1;
    }

    // Writes row r as the best k of the n (n > k) candidates of buf, from the selection's scratch: in position
    // order, or through the sort. Indices are key numbers less `base`.
    template <int Items = kSelectItems>
    __device__ void write_best(const RaggedProblem& pb, int64_t r, const uint2* buf, int n, const int* row_hist,
                               int32_t base) {
        const int k = pb.shape.topk;
        keep_best_in_scratch<Items>(buf, n, k, row_hist);
        write_scratch(pb, r, k, base, pb.shape.sorted && k > 1);
    }

    // Writes row r from the `taken` candidates in sh.scratch.sort[0, taken): in their order (they must be behind
    // a barrier already), or ranked (sorted descending by key, then ascending position; the padding's barrier
    // orders them). Indices are key numbers less `base`; padding follows.
    __device__ void write_scratch(const RaggedProblem& pb, int64_t r, int taken, int32_t base, bool ranked) {
        const int k = pb.shape.topk;
        int32_t* out_idx = pb.out.indices + r * k;
        float* out_score = pb.out.scores ? pb.out.scores + r * k : nullptr;
        uint64_t* sort = sh.scratch.sort;
        if (ranked) {
            int size = 1;
            while (size < taken) size <<= 1;
            for (int i = taken + t; i < size; i += kWgThreads) sort[i] = 0u;  // key 0, position ~0: ranks last
            sync();
            group.sort_descending(sort, size);
        }
        for (int i = t; i < taken; i += kWgThreads) {
            const uint64_t c = sort[i];
            out_idx[i] = int32_t(candidate_position(c)) - base;
            if (out_score) out_score[i] = score_from_order_key(uint32_t(c >> 32));
        }
        for (int i = taken + t; i < k; i += kWgThreads) {
            out_idx[i] = -1;
            if (out_score) out_score[i] = padding_score();
        }
        sync();  // scratch is reused by the next row
    }

    // Writes row r: the `taken` (<= k) candidates of buf (position order), then padding. Indices are key
    // numbers less `base` (the row's start for relative indices, 0 for absolute ones).
    __device__ void write_row(const RaggedProblem& pb, int64_t r, const uint2* buf, int taken, int32_t base) {
        const int k = pb.shape.topk;
        int32_t* out_idx = pb.out.indices + r * k;
        float* out_score = pb.out.scores ? pb.out.scores + r * k : nullptr;
        uint2 c[kOutItems];  // every load in flight before the first store
#pragma unroll
        for (int e = 0; e < kOutItems; ++e) {
            const int i = t + e * kWgThreads;
            c[e] = i < taken ? __ldcg(buf + i) : make_uint2(0u, 0u);
        }
        if (pb.shape.sorted && taken > 1) {
#pragma unroll
            for (int e = 0; e < kOutItems; ++e) {
                const int i = t + e * kWgThreads;
                if (i < taken) sh.scratch.sort[i] = order_candidate(c[e]);
            }
            write_scratch(pb, r, taken, base, true);
            return;
        }
#pragma unroll
        for (int e = 0; e < kOutItems; ++e) {
            const int i = t + e * kWgThreads;
            if (i >= taken) break;
            out_idx[i] = int32_t(c[e].y) - base;
            if (out_score) out_score[i] = score_from_order_key(c[e].x);
        }
        for (int i = taken + t; i < k; i += kWgThreads) {
            out_idx[i] = -1;
            if (out_score) out_score[i] = padding_score();
        }
        sync();  // scratch is reused by the next row
    }
};

using Job = PrefillJob<kJobRows>;

template <int H>
__global__ void __launch_bounds__(kPrefillThreads, 1)
    prefill_fused_kernel(const __grid_constant__ CUtensorMap key_map, const __grid_constant__ CUtensorMap q_map,
                         PrefillParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int kN = kJobRows * H;  // wgmma N: the 4 rows' heads
    constexpr int kAcc = kN / 2;      // accumulators per thread
    constexpr int kChunks = H / 8;  // 8-column accumulator chunks per row
    extern __shared__ __align__(128) uint8_t prefill_smem_raw[];
    auto& smem = *reinterpret_cast<PrefillSmem<H>*>(prefill_smem_raw +
                                                    ((1024 - smem_address(prefill_smem_raw) % 1024) % 1024));
    const int wg_id = int(threadIdx.x) / kWgThreads, t = int(threadIdx.x) % kWgThreads;
    Warpgroup<H> g{smem.wg[wg_id], wg_id, t, t / 32, t % 32};
    WarpgroupSmem<H>& sh = g.sh;
    const int warp = g.warp, lane = g.lane, quad = lane & 3;
    const RaggedProblem& pb = p.pb;
    const int N = int(pb.num_keys), k = pb.shape.topk;

    if (t == 0) {
        for (int s = 0; s < kPrefillStages; ++s) {
            mbar_init(&sh.full[s], 1);
            mbar_init(&sh.empty[s], 4);  // one arrival per warp
        }
        mbar_init(&sh.q_full, 1);
        mbar_init_fence();
        tensormap_prefetch(&key_map);
        tensormap_prefetch(&q_map);
    }
    g.sync();

    const int slot = int(blockIdx.x) * 2 + wg_id, slots = int(gridDim.x) * 2;
    uint2* const candidates = p.candidates + int64_t(slot) * kJobRows * kCandidateCap;
    // Ring positions: the stage and its phase parity, for the consumers and for thread 0's issues.
    uint32_t stage = 0, phase = 0, issue_stage = 0, issue_phase = 0, q_phase = 0;
    bool ring_used = false;  // thread 0: every stage has been issued once (so each reuse waits for its release)

    auto issue_tile = [&](int y) {
        if (ring_used) mbar_wait(&sh.empty[issue_stage], issue_phase ^ 1u);
        mbar_expect_tx(&sh.full[issue_stage], kPrefillTile * kHeadDim);
        tma_load_2d(sh.keys[issue_stage], &key_map, y, &sh.full[issue_stage]);
        if (++issue_stage == kPrefillStages) {
            issue_stage = 0;
            issue_phase ^= 1u;
            ring_used = true;
        }
    };
    // Reads job `round` of this warpgroup's deal, stages its weights and starts its loads; false when none.
    auto begin_job = [&](int round, Job& job) {
        const int64_t dealt = int64_t(round) * slots + ((round & 1) ? slots - 1 - slot : slot);
        if (dealt >= p.num_jobs) return false;
        read_prefill_job<kJobRows, kPrefillTile>(job, pb, (p.num_jobs - 1 - int(dealt)) * kJobRows,  // longest first
                                                 p.error_flag, t == 0);
        for (int i = t; i < kJobRows * H; i += kWgThreads)
            sh.w[weight_slot<H>(i)] = i / H < job.rows ? __ldg(pb.weights + int64_t(job.r0) * H + i) : 0.0f;
        if (t == 0 && job.tiles > 0) {
            mbar_expect_tx(&sh.q_full, kJobRows * H * kHeadDim);
            // A job's queries are read once (256 MB of them at S = 32768): evicted first, so that they do not push
            // the keys every job reads, or the rows' candidate buffers, out of L2.
            tma_load_2d(sh.q, &q_map, job.r0 * H, &sh.q_full, l2_evict_first_policy());
            for (int i = 0; i < min(kPrefillStages - 1, job.tiles); ++i) issue_tile(job.lo + i * kPrefillTile);
        }
        return true;
    };

    Job job;
    bool have = begin_job(0, job);
    if (t == 0) sh.rescoring = sh.estimates_off = 0;
    for (int round = 1; have; ++round) {
        g.sync();  // sh.w of this job
        // After the transpose-reduce lane q holds row q: its window, buffer, count and threshold.
        // A row written without scores takes no candidates: an empty window here.
        const int my_start = quad == 0 ? job.start[0] : quad == 1 ? job.start[1] : quad == 2 ? job.start[2] : job.start[3];
        const int my_end = (job.unscored >> quad) & 1 ? my_start
                           : quad == 0 ? job.end[0] : quad == 1 ? job.end[1] : quad == 2 ? job.end[2] : job.end[3];
        uint2* const my_buf = candidates + quad * kCandidateCap;
        int* const my_hist = sh.row_hist[quad];
        for (int i = t; i < kJobRows * kRowBins; i += kWgThreads) (&sh.row_hist[0][0])[i] = 0;
        if (t == 0) sh.estimated = 0;
        g.sync();
        int count = 0;
        uint32_t threshold = 0;  // 0 until the row's first compaction
        // The row compacts once it holds more candidates than this: early (to an estimate) while its window
        // exceeds the buffer and this warpgroup still estimates.
        const int my_window = my_end - my_start;
        int limit = my_window > kCandidateCap && !sh.estimates_off ? kEstimateAt - 1 : kCompactAt;
        if (job.tiles > 0 && !sh.rescoring) {  // a job scored again has its queries already
            mbar_wait(&sh.q_full, q_phase);
            q_phase ^= 1u;
        }
        // The previous tile's scores (two per lane) wait in registers and are appended while this tile's
        // wgmma runs; the compaction check follows the epilogue, when no accumulator is live.
        uint32_t key0 = 0, key1 = 0;
        int p0 = 0;
        bool pending = false;
        // Appends tile `tile`'s passing scores in position order: warp by warp, within a warp keys a = 0
        // then a = 1, lanes in order.
        auto append = [&](int tile, bool pass0, bool pass1) {
            const unsigned row_lanes = 0x11111111u << quad, below = (1u << lane) - 1u;
            const unsigned m0 = __ballot_sync(0xffffffffu, pass0) & row_lanes;
            const unsigned m1 = __ballot_sync(0xffffffffu, pass1) & row_lanes;
            const int c0 = __popc(m0);
            if (lane < 4) sh.counts[tile & 1][warp][lane] = c0 | (__popc(m1) << 16);
            g.sync();
            int before = 0, added = 0;
#pragma unroll
            for (int w2 = 0; w2 < 4; ++w2) {
                const int x = sh.counts[tile & 1][w2][quad];
                const int n = (x & 0xffff) + (x >> 16);
                before += w2 < warp ? n : 0;
                added += n;
            }
            if (pass0) {
                my_buf[count + before + __popc(m0 & below)] = make_uint2(key0, uint32_t(p0));
                atomicAdd(&my_hist[key0 >> kRowBinShift], 1);
            }
            if (pass1) {
                my_buf[count + before + c0 + __popc(m1 & below)] = make_uint2(key1, uint32_t(p0 + 8));
                atomicAdd(&my_hist[key1 >> kRowBinShift], 1);
            }
            count += added;
        };
        auto passes = [&](uint32_t key, int p) { return p >= my_start && p < my_end && key >= threshold; };
        // Uniform over the warpgroup: every warp holds every row's count. A row's first compaction to an estimate
        // (it holds kEstimateAt candidates) is its warp's, the job's such rows side by side; a full buffer is the
        // warpgroup's, row after row (by warps, the full buffers' compactions measured slower where they are
        // common: prefill_16384_front +5.4%, bench/NOTES.md, session 31).
        auto compact_full_rows = [&]() {
            if (!__any_sync(0xffffffffu, count > limit)) return;
            __threadfence_block();
            g.sync();  // every row's candidates stored
            {
                const int j = warp;
                const int n = __shfl_sync(0xffffffffu, count, j);
                const int row_limit = __shfl_sync(0xffffffffu, limit, j);
                int keep = 0;  // row j not compacted here
                uint32_t raised = 0;
                if (n > row_limit && row_limit < kCompactAt) {
                    // The first compaction of a row longer than the buffer keeps r of the n keys seen, r / n =
                    // (k + 4 sqrt(k n / window)) / window: an estimate of its window's ~(k + 4 sigma)-th best, so
                    // the keys still to come rarely fill the buffer. Exact as long as at least k reach it
                    // (checked at the job's end).
                    keep = min(k, estimate_rank(k, n, __shfl_sync(0xffffffffu, my_window, j)));
                    raised = warp_keep_best(candidates + j * kCandidateCap, n, keep, sh.row_hist[j],
                                            sh.scratch.warp_hist[warp], lane);
                    if (lane == 0) {
                        if (keep < k) atomicOr(&sh.estimated, 1 << j);
                        else atomicAnd(&sh.estimated, ~(1 << j));
                    }
                }
                if (lane == 0) {
                    sh.compacted[j] = keep;
                    sh.raised[j] = raised;
                }
            }
            if (__any_sync(0xffffffffu, count > limit && limit == kCompactAt)) {
                __threadfence_block();
                g.sync();  // the warps' compactions are done with scratch
#pragma unroll 1
                for (int j = 0; j < kJobRows; ++j) {
                    const int n = __shfl_sync(0xffffffffu, count, j);
                    if (n <= __shfl_sync(0xffffffffu, limit, j) || __shfl_sync(0xffffffffu, limit, j) < kCompactAt)
                        continue;  // not full, or compacted by its warp
                    // Keeps the best k of more than k candidates, all at or above any estimate: exact from here on.
                    if (t == 0) atomicAnd(&sh.estimated, ~(1 << j));
                    const uint32_t raised = g.keep_best(candidates + j * kCandidateCap, n, k, sh.row_hist[j]);
                    if (quad == j) {
                        threshold = raised;
                        count = k;
                    }
                }
            }
            __threadfence_block();
            g.sync();  // the warps' compacted rows, their histograms and thresholds
            if (sh.compacted[quad] > 0) {
                threshold = sh.raised[quad];
                count = sh.compacted[quad];
                limit = kCompactAt;
            }
        };
        const uint64_t key_desc = wgmma_descriptor(sh.keys[0]), q_desc = wgmma_descriptor(sh.q);
        constexpr uint32_t kStageDesc = kPrefillTile * kHeadDim / 16;  // descriptor units (16 B) per stage
        for (int tile = 0; tile < job.tiles; ++tile) {
            if (t == 0 && tile + kPrefillStages - 1 < job.tiles)
                issue_tile(job.lo + (tile + kPrefillStages - 1) * kPrefillTile);
            const int q0 = job.lo + tile * kPrefillTile + warp * 16 + (lane >> 2);
            // Issued before the waits below (volatile keeps them there), so the MMA hides their latency;
            // a position past the keys reads the last scale and is never a candidate.
            const float sc0 = load_global_nc(pb.k_scale + min(q0, N - 1));
            const float sc1 = load_global_nc(pb.k_scale + min(q0 + 8, N - 1));
            const uint32_t s = stage;
            mbar_wait(&sh.full[s], phase);
            float d[kAcc];
#pragma unroll
            for (int i = 0; i < kAcc; ++i) asm volatile("" : "+f"(d[i])::"memory");
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < 4; ++ks) {
                const uint64_t a = key_desc + (s * kStageDesc + ks * 2);
                const uint64_t b = q_desc + ks * 2;
                if (ks == 0) wgmma_fp8<kN, 0>(d, a, b);
                else wgmma_fp8<kN, 1>(d, a, b);
            }
            wgmma_commit();
            if (pending) append(tile - 1, passes(key0, p0), passes(key1, p0 + 8));
            wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < kAcc; ++i) asm volatile("" : "+f"(d[i])::"memory");
            __syncwarp();
            if (lane == 0) mbar_arrive(&sh.empty[s]);
            if (++stage == kPrefillStages) {
                stage = 0;
                phase ^= 1u;
            }

            // Keys lane / 4 (a = 0) and lane / 4 + 8 (a = 1) of this warp's 16, one partial sum per row.
            float v[2][kJobRows];
#pragma unroll
            for (int j = 0; j < kJobRows; ++j) {
                float a0 = 0.0f, a1 = 0.0f;
                float4 w4;  // row j's weights of heads 8 x + 2 quad (+1), and the same of chunk x + 1
#pragma unroll
                for (int x = 0; x < kChunks; ++x) {
                    const int c = (j * kChunks + x) * 4;
                    // From shared memory, as registers are all taken by d; one conflict-free 16-byte read per
                    // two chunks (weight_slot).
                    if (x % 2 == 0)
                        w4 = *reinterpret_cast<const float4*>(&sh.w[weight_slot<H>(j * H + x * 8 + 2 * quad)]);
                    const float2 w = x % 2 == 0 ? make_float2(w4.x, w4.y) : make_float2(w4.z, w4.w);
                    a0 = fmaf(w.x, relu_nan(d[c + 0]), a0);
                    a0 = fmaf(w.y, relu_nan(d[c + 1]), a0);
                    a1 = fmaf(w.x, relu_nan(d[c + 2]), a1);
                    a1 = fmaf(w.y, relu_nan(d[c + 3]), a1);
                }
                v[0][j] = a0;
                v[1][j] = a1;
            }
            // Transpose-reduce over the 4 lanes of a quad: lane q ends with row q's sums.
            const bool odd = quad & 1, high = quad & 2;
            float z[2];
#pragma unroll
            for (int a = 0; a < 2; ++a) {
                float u[2];
#pragma unroll
                for (int m = 0; m < 2; ++m) {
                    const float keep = odd ? v[a][2 * m + 1] : v[a][2 * m];
                    const float send = odd ? v[a][2 * m] : v[a][2 * m + 1];
                    u[m] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
                }
                const float keep = high ? u[1] : u[0];
                const float send = high ? u[0] : u[1];
                z[a] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
            }
            key0 = score_order_key(sc0 * z[0]);
            key1 = score_order_key(sc1 * z[1]);
            p0 = q0;
            pending = true;
            compact_full_rows();
        }
        if (pending) {
            append(job.tiles - 1, passes(key0, p0), passes(key1, p0 + 8));
            compact_full_rows();
        }
        __threadfence_block();
        g.sync();  // every candidate stored, every wgmma of this job done
        if (__any_sync(0xffffffffu, ((sh.estimated >> quad) & 1) && count < k)) {
            // An estimate was above its row's k-th best: the same job again, every tile, no estimates. (The
            // next round's first barrier orders every read of sh.estimated before its reset.)
            if (t == 0) {
                sh.rescoring = sh.estimates_off = 1;
                for (int i = 0; i < min(kPrefillStages - 1, job.tiles); ++i) issue_tile(job.lo + i * kPrefillTile);
            }
            --round;
            continue;
        }
        if (t == 0) sh.rescoring = 0;
        const Job done = job;
        have = begin_job(round, job);  // the next job's loads overlap this job's selection
        if (!pb.shape.sorted) {
            // Warp j writes row j. (The next round's first barrier orders these reads and writes of scratch and
            // row_hist before their next use.)
            if (warp < done.rows) {
                const int j = warp;
                const int n = __shfl_sync(0xffffffffu, count, j);
                warp_write_row(pb, int64_t(done.r0) + j, (done.ok >> j) & 1, (done.unscored >> j) & 1, done.start[j],
                               done.end[j], candidates + j * kCandidateCap, n, sh.row_hist[j],
                               pb.shape.index_mode == IndexMode::RaggedAbsolute ? 0 : done.start[j],
                               sh.scratch.warp_hist[warp], lane);
            }
            continue;
        }
#pragma unroll 1
        for (int j = 0; j < done.rows; ++j) {
            const int n = __shfl_sync(0xffffffffu, count, j);
            const int64_t r = int64_t(done.r0) + j;
            uint2* buf = candidates + j * kCandidateCap;
            const int32_t base = pb.shape.index_mode == IndexMode::RaggedAbsolute ? 0 : done.start[j];
            if (!((done.ok >> j) & 1)) {
                g.write_row(pb, r, buf, 0, 0);
                continue;
            }
            if ((done.unscored >> j) & 1) {
                g.write_window(pb, r, done.start[j], done.end[j], base);
                continue;
            }
            if (n > k && n <= kSmallSelectItems * kWgThreads)
                g.template write_best<kSmallSelectItems>(pb, r, buf, n, sh.row_hist[j], base);
            else if (n > k)
                g.write_best(pb, r, buf, n, sh.row_hist[j], base);
            else
                g.write_row(pb, r, buf, n, base);
        }
    }
#else
    __trap();  // launched only when the sm_90a image is present (prefill_fused_available)
#endif
}

// ---- host side -----------------------------------------------------------------------------------------

constexpr PrefillGrid kPrefillGrid{kJobRows, kPrefillThreads / kWgThreads};

template <int H>
cudaError_t launch_prefill(const RaggedProblem& pb, int sm_count, void* workspace, int* error_flag,
                           cudaStream_t stream) {
    return launch_prefill_kernel<prefill_fused_kernel<H>>(pb, kPrefillGrid, H, kPrefillTile, kPrefillThreads,
                                                          int(sizeof(PrefillSmem<H>)) + 1024, sm_count, workspace,
                                                          error_flag, stream);
}

}  // namespace

bool prefill_fused_runs(const RaggedProblem& pb, int compute_capability) {
    return DSA_KERNELS_HAVE_SM90A && compute_capability == 90 && pb.num_keys > 0 &&
           pb.num_keys <= INT_MAX - kPrefillTile && int64_t(pb.num_rows) * pb.shape.num_heads <= INT_MAX &&
           pb.shape.topk <= kMaxTopk && encode_tiled() != nullptr;
}

bool prefill_fused_inputs_aligned(const RaggedProblem& pb) {
    return reinterpret_cast<uintptr_t>(pb.q) % 16 == 0 && reinterpret_cast<uintptr_t>(pb.k) % 16 == 0;
}

size_t prefill_fused_workspace_bytes(const RaggedProblem& pb, int sm_count) {
    return kPrefillGrid.workspace_bytes(pb, sm_count);
}

cudaError_t prefill_fused_topk(const RaggedProblem& pb, int sm_count, void* workspace, int* error_flag,
                               cudaStream_t stream) {
    if (pb.rows() == 0) return cudaSuccess;
    return pb.shape.num_heads == 64 ? launch_prefill<64>(pb, sm_count, workspace, error_flag, stream)
                                    : launch_prefill<32>(pb, sm_count, workspace, error_flag, stream);
}

}  // namespace dsa::kernels
