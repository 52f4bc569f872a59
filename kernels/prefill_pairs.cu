// Fused prefill top-k over a contiguous K (SPEC section 2), sm_90a. One persistent launch: one CTA per SM, FOUR
// warpgroups, each working its own jobs of 2 consecutive query rows from start to finish:
//  - The job's keys are the union of its rows' windows, streamed in 64-key tiles by TMA (a 2-D tensor map over
//    [num_keys, 128 B], 128B swizzle) into the warpgroup's own ring of 3 stages, issued by its thread 0; the
//    job's queries (2 x H x 128 B) are one box, loaded when the previous job's tiles are done, during its
//    selections.
//  - wgmma m64 x (2 H) x k32: keys as M, both rows' heads as N, so K is read once per 2 rows; 64 accumulators a
//    thread at H = 64, which leaves room to hold each lane's weights (the heads of its accumulator columns,
//    2 x H / 4 floats) in registers for the whole job instead of reading them from shared memory every tile
//    (that costs +32% in this shape: bench/NOTES.md, session 32).
//  - The epilogue: per (row, key) relu, weight and head sum in one FMA chain, then a 3-shuffle transpose-reduce
//    over the lane quad, after which lane quad q holds row q & 1's score of key a = q >> 1 (keys lane / 4 and
//    lane / 4 + 8 of the warp's 16), and the key scale.
//  - Each row keeps a candidate buffer (kCandidateCap entries in the workspace, in position order), a threshold
//    (a score enters when its order key is at or above it) and a shared-memory histogram of the buffer's keys.
//    A tile's scores are appended while the next tile's wgmma runs. When a buffer fills, the row's warp (warp j
//    for row j, by WarpSelect) keeps its best k in place (level 1 from the histogram, then radix refinement of
//    the order key, ties to the smaller position) and raises the threshold to what the k-th best needs, so most
//    tiles of long windows store nothing.
//  - A row longer than the buffer compacts first at kEstimateAt candidates and keeps fewer than k: an estimate,
//    from the keys seen so far, of its window's (k + 4 sigma)-th best, so the buffer rarely fills again and ends
//    with ~k + 4 sqrt(k window / 1024) candidates. Exact whenever at least k keys reach the estimate; a job with
//    a row left short (keys far from identically distributed along the window) is scored again without
//    estimates, and its warpgroup makes no more.
//  - At the job's end each row is selected exactly from its buffer by two warps (j and j + 2, each half of the
//    buffer: pair_write_row), so that no warp waits idle for it, and written in position order.
// Sorted output: every row is written in position order with its scores (the caller's, or scratch past the
// candidate buffers in the workspace), and rank_rows (kernels/rank_rows.h) then sorts each row into rank order.
// (An in-kernel ranking needs a warpgroup's scratch, which four rings leave no room for, and holds the
// warpgroup from its next job's tiles: the 4-row kernel that ranked in place took 1.5-4.7x the unsorted time on
// an H100, bench/NOTES.md, session 44.)
// A row that needs no scores (its window holds at most k keys, and neither scores nor sorted output are asked
// for) is written as its whole window and takes no part in its job's tiles. Every row is computed by one
// warpgroup alone, in position order, so the result is a pure function of the inputs, bit-identical to the CPU
// backend on tie-free inputs. Jobs are dealt out longest first (the last rows of a causal sequence have the
// longest windows) in a snake order over the warpgroups, which balances a causal triangle without any global
// counter. Scores never leave the chip except as candidates (and a sorted call's kept scores); the workspace is
// independent of S x N.
#include "kernels/prefill_pairs.h"

#include <climits>
#include <cstdint>
#include <type_traits>

#include <cuda.h>

#include "common/constants.hpp"
#include "common/order_key.h"
#include "common/problem.hpp"
#include "kernels/prefill_common.cuh"
#include "kernels/rank_rows.h"
#include "kernels/score_common.cuh"
#include "kernels/sm90.cuh"
#include "kernels/warp_select.cuh"

// In images other than sm_90a the kernel's body is compiled out (it only runs there), which leaves its
// device helpers unreferenced: nothing to warn about.
#pragma nv_diag_suppress 177

namespace dsa::kernels {
namespace {

constexpr int kPairRows = 2;      // query rows per job: wgmma N = 2 x H
constexpr int kPairTile = 64;     // keys per tile (wgmma M)
constexpr int kPairStages = 3;    // key tiles per warpgroup ring
constexpr int kWgThreads = 128;
constexpr int kPairWarpgroups = 4;
constexpr int kPairThreads = kPairWarpgroups * kWgThreads;
constexpr int kCompactAt = kCandidateCap - kPairTile;  // past this, the next tile might not fit
static_assert(kPairRows <= kWgThreads / 32, "one warp per row selects");

// What wgmma reads: 1024-byte aligned (the 128B swizzle's atoms), apart from the rest so that the rest of a
// warpgroup's state packs without that alignment's padding (four such paddings would not fit).
template <int H>
struct alignas(1024) PairTiles {
    uint8_t keys[kPairStages][kPairTile * kHeadDim];
    uint8_t q[kPairRows * H * kHeadDim];
};

using PairJob = PrefillJob<kPairRows>;

// 16-byte aligned: warp_find_bin reads the histograms 16 bytes at a time, in each warpgroup's state.
struct alignas(16) PairState {
    int row_hist[kPairRows][kRowBins];         // of the candidates in each row's buffer
    int warp_hist[kPairRows][kWarpSelectBins];  // a row warp's refinement levels (compactions, selection)
    uint64_t full[kPairStages];
    uint64_t q_full;
    int4 counts[2][kPairRows];  // per tile parity and row, one int a warp: the candidates the warp appends
    int compacted[kPairRows];     // a compaction's result per row: the candidates kept (0: not compacted) ...
    uint32_t raised[kPairRows];   // ... and the threshold a later candidate must reach
    int estimated;                // bit j: row j's threshold is an estimate, not yet known to reach its k-th best
    int rescoring;                // the current job is being scored again, without estimates
    int estimates_off;            // a job of this warpgroup was scored again: no more estimates
    int half0_above[kPairRows];   // a final selection's first half: its entries above the threshold's level-1 bin
    // Kept here, not in registers, which the accumulators and weights take nearly all of: the jobs (job n in
    // jobs[n & 1]: the next one is dealt while the last one's rows are written).
    PairJob jobs[2];
};

template <int H>
struct PairSmem {
    PairTiles<H> tiles[kPairWarpgroups];
    PairState state[kPairWarpgroups];
};

template <int H>
constexpr int pair_smem_bytes() {
    return int(sizeof(PairSmem<H>)) + 1024;  // + the slack that aligns the dynamic base to 1024
}
static_assert(sizeof(PairTiles<64>) % 1024 == 0 && sizeof(PairTiles<32>) % 1024 == 0, "each ring 1024-byte aligned");
static_assert(pair_smem_bytes<64>() <= 232448 && pair_smem_bytes<32>() <= 232448,
              "four warpgroups in the 227 KB a CTA may have");

// Named barrier 5 + 2 w + j over the 64 threads of warps j and j + 2 of warpgroup w: the two warps of row j's
// final selection (ids 1-4 are the warpgroups' own).
struct RowPairSync {
    int id;
    __device__ void operator()() const { asm volatile("bar.sync %0, 64;\n" ::"r"(id) : "memory"); }
};

// Sum over the warp of hist[b] >> 16 for the bins b above `bin` (nbins: kWarpSelectBins, or at most 32).
__device__ __forceinline__ int warp_sum_high_above(const int* hist, int nbins, int bin, int lane) {
    int sum = 0;
    for (int b = lane; b < nbins; b += 32)
        if (b > bin) sum += hist[b] >> 16;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    return sum;
}

// Writes row r of a finished job by the two warps of the row side by side, in position order: padding for a bad
// window (ok false), the window itself for a row that needs no scores, else the best k of the n candidates of buf
// (all of them when n <= k, then padding). Indices are key numbers less `base` (the row's start for relative
// indices, 0 for absolute ones). Half 0 takes the first m entries of buf (m a multiple of
// kWarpSelectSpan, about n / 2), half 1 the rest. Every refinement level is one pass of each over its part into
// one histogram whose bins count all entries in their low 16 bits and half 0's in their high 16 bits; at least one
// level is refined, whose pass also counts half 0's entries above level 1's bin, so that half 1 knows how many
// half 0 keeps (and, among equal keys, how many of them come first) and both write at once.
__device__ __forceinline__ void pair_write_row(const RaggedProblem& pb, int64_t r, bool ok, bool unscored, int start,
                                               int end, const uint2* buf, int n, const int* row_hist, int32_t base,
                                               int* hist, int* half0_above, RowPairSync pair_sync, int half,
                                               int lane) {
    const int k = pb.shape.topk;
    int32_t* out_idx = pb.out.indices + r * k;
    float* out_score = pb.out.scores ? pb.out.scores + r * k : nullptr;
    const int first = half * 32 + lane;
    if (unscored) return write_row_window<64>(out_idx, k, start, end, base, first);
    const int taken = ok ? n : 0;
    if (taken <= k) return write_row_candidates<64>(out_idx, out_score, k, buf, taken, base, first);
    // Half 1's part starts 16-byte aligned and stays readable up to its count rounded up a span (the buffer's
    // rule: kCandidateCap is a multiple of the span).
    const int m = ((n + 1) / 2 + kWarpSelectSpan - 1) / kWarpSelectSpan * kWarpSelectSpan;
    const WarpSelect list{half ? buf + m : buf, half ? max(0, n - m) : min(n, m)};
    const int inc = half ? 1 : 0x10001;
    WarpSelect::Threshold th;
    int ties;
    warp_find_bin(row_hist, kWarpSelectBins, k, th.bin1, th.above1, ties);
    th.prefix = uint32_t(th.bin1);
    th.shift = kRowBinShift;
    th.need = k - th.above1;
    int above0 = 0, ties0 = 0;  // half 0's entries above the current bin, and in it
    bool level1 = true;
    do {
        const int width = th.shift < 10 ? th.shift : 10, bshift = th.shift - width;
        const uint32_t mask = (1u << width) - 1u, p = th.prefix;
        const int s = th.shift;
        for (int i = first; i < (1 << width); i += 64) hist[i] = 0;
        pair_sync();
        int above = 0;
        list.for_each_run([&](int i, const uint4& e) {
            if (i < list.n && (e.x >> s) == p) atomicAdd(&hist[(e.x >> bshift) & mask], inc);
            if (i + 1 < list.n && (e.z >> s) == p) atomicAdd(&hist[(e.z >> bshift) & mask], inc);
            if (level1) above += int(i < list.n && (e.x >> s) > p) + int(i + 1 < list.n && (e.z >> s) > p);
        });
        if (level1) {
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) above += __shfl_xor_sync(0xffffffffu, above, off);
            if (half == 0 && lane == 0) *half0_above = above;
        }
        pair_sync();
        if (level1) above0 = *half0_above;
        int bin, up;
        warp_find_bin<true>(hist, 1 << width, th.need, bin, up, ties);
        above0 += warp_sum_high_above(hist, 1 << width, bin, lane);
        ties0 = hist[bin] >> 16;
        th.need -= up;
        th.prefix = (th.prefix << width) | uint32_t(bin);
        th.shift = bshift;
        level1 = false;
        pair_sync();  // both are done reading hist and half0_above
    } while (ties > th.need && th.shift > 0);
    th.ties = ties;
    // Half 0's share: everything above the threshold's bin, and its equal keys first (all of them when the
    // refinement stopped with the bin holding exactly what is needed).
    const int kept0 = above0 + (ties == th.need ? ties0 : min(th.need, ties0));
    list.keep_in_order(
        k, th,
        [&](int slot, uint32_t key, uint32_t position) {
            store_output(out_idx, out_score, slot, int32_t(position) - base, score_from_order_key(key));
        },
        half ? kept0 : 0, half ? ties0 : 0);
}

template <int H>
__global__ void __launch_bounds__(kPairThreads, 1)
    prefill_pairs_kernel(const __grid_constant__ CUtensorMap key_map, const __grid_constant__ CUtensorMap q_map,
                         PrefillParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    static_assert(H % 8 == 0, "the weights come in 8-head chunks");
    constexpr int kN = kPairRows * H;  // wgmma N: the 2 rows' heads
    constexpr int kAcc = kN / 2;       // accumulators per thread
    constexpr int kChunks = H / 8;     // 8-column accumulator chunks per row
    extern __shared__ __align__(128) uint8_t pairs_smem_raw[];
    auto& smem =
        *reinterpret_cast<PairSmem<H>*>(pairs_smem_raw + ((1024 - smem_address(pairs_smem_raw) % 1024) % 1024));
    // Broadcast from lane 0: warp-uniform as far as the compiler can tell, so what derives from it (the
    // warpgroup's shared-memory addresses, the wgmma descriptors) can live in uniform registers.
    const int wg_id = __shfl_sync(0xffffffffu, int(threadIdx.x) / kWgThreads, 0), t = int(threadIdx.x) % kWgThreads;
    // From the unsigned index: no sign fix-ups where the compiler recomputes them.
    const int warp = int(threadIdx.x % kWgThreads / 32u), lane = int(threadIdx.x % 32u), quad = lane & 3;
    // After the epilogue's transpose-reduce this lane holds row `row`'s score of key `half` (0: key lane / 4 of
    // the warp's 16, 1: lane / 4 + 8); the row's candidate count, threshold and window are held by its lanes.
    const int row = quad & 1, half = quad >> 1;
    PairTiles<H>& tiles = smem.tiles[wg_id];
    PairState& sh = smem.state[wg_id];
    const WarpgroupSync sync{wg_id};
    const RaggedProblem& pb = p.pb;
    const int N = int(pb.num_keys), k = pb.shape.topk;

    if (t == 0) {
        for (int s = 0; s < kPairStages; ++s) mbar_init(&sh.full[s], 1);
        mbar_init(&sh.q_full, 1);
        mbar_init_fence();
        tensormap_prefetch(&key_map);
        tensormap_prefetch(&q_map);
    }
    sync();

    const int slot = int(blockIdx.x) * kPairWarpgroups + wg_id, slots = int(gridDim.x) * kPairWarpgroups;
    uint2* const candidates = p.candidates + int64_t(slot) * kPairRows * kCandidateCap;
    // Ring position of the consumers: the stage and its phase parity.
    uint32_t stage = 0, phase = 0, q_phase = 0;

    // Thread 0: the tile of keys from y into the ring, `ahead` stages after the consumers' (tile n of the
    // warpgroup's stream goes to stage n % kPairStages). With no wait for the stage: its last reader was an
    // earlier tile's wgmma, which every warp waited for before a warpgroup barrier that thread 0 has passed since
    // (in the tile loop the held tile's append barrier; for a job's first tiles the barriers between jobs). So
    // the ring has no `empty` barriers, and thread 0 keeps no count of its own (bench/NOTES.md, session 42).
    auto issue_tile = [&](int y, uint32_t ahead) {
        const uint32_t s = stage + ahead < uint32_t(kPairStages) ? stage + ahead : stage + ahead - kPairStages;
        mbar_expect_tx(&sh.full[s], kPairTile * kHeadDim);
        tma_load_2d(tiles.keys[s], &key_map, y, &sh.full[s]);
    };
    // Deals job `round` of this warpgroup's deal (false when none); thread 0 records it in sh.jobs[round & 1]
    // (read by all after a barrier) and starts its loads.
    auto begin_job = [&](int round) {
        const int64_t dealt = int64_t(round) * slots + ((round & 1) ? slots - 1 - slot : slot);
        if (dealt >= p.num_jobs) return false;
        if (t != 0) return true;
        PairJob job;
        read_prefill_job<kPairRows, kPairTile>(job, pb, (p.num_jobs - 1 - int(dealt)) * kPairRows,  // longest first
                                               p.error_flag, true);
        sh.jobs[round & 1] = job;
        if (job.tiles > 0) {
            mbar_expect_tx(&sh.q_full, kPairRows * H * kHeadDim);
            // Queries are read once: evicted first, so that they do not push the keys every job reads, or the
            // rows' candidate buffers, out of L2.
            tma_load_2d(tiles.q, &q_map, job.r0 * H, &sh.q_full, l2_evict_first_policy());
            for (int i = 0; i < min(kPairStages - 1, job.tiles); ++i) issue_tile(job.lo + i * kPairTile, i);
        }
        return true;
    };

    // This lane's weights: row j's heads 8 x + 2 quad and + 1 of chunk x, the columns its accumulators hold
    // (d[4 (j kChunks + x) + {0, 1}] for key a = 0, {2, 3} for a = 1). Zero for a row past the end.
    float2 weight[kPairRows][kChunks];
    auto load_weights = [&](const PairJob& job) {
#pragma unroll
        for (int j = 0; j < kPairRows; ++j) {
            const float* w = pb.weights + int64_t(job.r0 + j) * H + 2 * quad;
#pragma unroll
            for (int x = 0; x < kChunks; ++x)
                weight[j][x] =
                    j < job.rows ? make_float2(__ldg(w + 8 * x), __ldg(w + 8 * x + 1)) : make_float2(0.f, 0.f);
        }
    };

    bool have = begin_job(0);
    if (t == 0) sh.rescoring = sh.estimates_off = 0;
    for (int round = 1; have; ++round) {
        sync();  // the previous job's selections are done with row_hist and the scratch; this job's record
        const PairJob& job = sh.jobs[(round - 1) & 1];
        load_weights(job);
        // A row written without scores takes no candidates: an empty window here.
        const int my_start = row == 0 ? job.start[0] : job.start[1];
        const int my_end = (job.unscored >> row) & 1 ? my_start : row == 0 ? job.end[0] : job.end[1];
        uint2* const my_buf = candidates + row * kCandidateCap;
        int* const my_hist = sh.row_hist[row];
        for (int i = t; i < kPairRows * kRowBins; i += kWgThreads) (&sh.row_hist[0][0])[i] = 0;
        if (t == 0) sh.estimated = 0;
        sync();
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
        // Appends tile `tile`'s passing scores, each row's in position order: warp by warp, within a warp key
        // a = 0 then a = 1, lanes in order (row j's a = 0 lanes are quad j, its a = 1 lanes quad j + 2).
        auto append = [&](int tile, uint32_t key, int key_pos) {
            const bool pass = key_pos >= my_start && key_pos < my_end && key >= threshold;
            const unsigned passed = __ballot_sync(0xffffffffu, pass), below = (1u << lane) - 1u;
            const unsigned first = passed & (0x11111111u << row), second = passed & (0x11111111u << (row + 2));
            if (lane < kPairRows)
                reinterpret_cast<int*>(&sh.counts[tile & 1][lane])[warp] = __popc(passed & (0x55555555u << lane));
            sync();
            const int4 n = sh.counts[tile & 1][row];  // one 16-byte read: the four warps' counts
            const int added = n.x + n.y + n.z + n.w;
            const int before = (warp > 0 ? n.x : 0) + (warp > 1 ? n.y : 0) + (warp > 2 ? n.z : 0);
            if (pass) {
                // Without a branch: a = 1 lanes (half 1) come after all of the row's a = 0 lanes.
                const int at = __popc(first & (half ? ~0u : below)) + __popc(second & (half ? below : 0u));
                // Evicted last from L2: the row's compactions and final selection read the buffer back (-1.3..-2.7%
                // at 4096-32768 on an H100, bench/NOTES.md, session 43).
                store_global(my_buf + count + before + at, make_uint2(key, uint32_t(key_pos)), l2_evict_last_policy());
                atomicAdd(&my_hist[key >> kRowBinShift], 1);
            }
            count += added;
        };
        // Uniform over the warpgroup: every warp holds both rows' counts (lanes 0 and 1). Row j's compactions,
        // the first one to an estimate and the full ones to k, are warp j's; the two rows side by side. The
        // weights are loaded again after one, so that it has their registers.
        auto compact_full_rows = [&]() {
            if (!__any_sync(0xffffffffu, count > limit)) return;
            __threadfence_block();
            sync();  // every row's candidates stored
            if (warp < kPairRows) {
                const int j = warp;
                const int n = __shfl_sync(0xffffffffu, count, j);
                const int row_limit = __shfl_sync(0xffffffffu, limit, j);
                int keep = 0;  // row j not compacted here
                uint32_t raised = 0;
                if (n > row_limit) {
                    // The first compaction of a row longer than the buffer keeps r of the n keys seen, r / n =
                    // (k + 4 sqrt(k n / window)) / window (estimate_rank); exact as long as at least k reach it
                    // (checked at the job's end). A full buffer keeps its best k, all at or above any estimate:
                    // exact from there on.
                    keep = row_limit < kCompactAt ? min(k, estimate_rank(k, n, __shfl_sync(0xffffffffu, my_window, j)))
                                                  : k;
                    raised = warp_keep_best(candidates + j * kCandidateCap, n, keep, sh.row_hist[j], sh.warp_hist[j],
                                            lane);
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
            __threadfence_block();
            sync();  // the compacted rows, their histograms and thresholds
            if (sh.compacted[row] > 0) {
                threshold = sh.raised[row];
                count = sh.compacted[row];
                limit = kCompactAt;
            }
            load_weights(job);
        };
        const uint32_t key_lo = wgmma_descriptor_low(tiles.keys[0]), q_lo = wgmma_descriptor_low(tiles.q);
        constexpr uint32_t kStageDesc = kPairTile * kHeadDim / 16;  // descriptor units (16 B) per stage
        // Issues one tile's MMA at ring stage S, a constant in each of the kPairStages copies, so that every
        // descriptor is a job-invariant value kept in uniform registers instead of being rebuilt every tile. Only
        // this part is copied; the appends, the epilogue and compactions below are not (they would triple the
        // loop's code).
        float d[kAcc];
        auto issue_tile_mma = [&](auto stage_constant) {
            constexpr uint32_t s = decltype(stage_constant)::value;
            mbar_wait(&sh.full[s], phase);
#pragma unroll
            for (int i = 0; i < kAcc; ++i) asm volatile("" : "+f"(d[i])::"memory");
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < 4; ++ks) {
                const uint64_t a = wgmma_descriptor_at(key_lo + (s * kStageDesc + ks * 2));
                const uint64_t b = wgmma_descriptor_at(q_lo + ks * 2);
                if (ks == 0) wgmma_fp8<kN, 0>(d, a, b);
                else wgmma_fp8<kN, 1>(d, a, b);
            }
            wgmma_commit();
        };
        // A tile's scores (this lane's order key) wait in a register and are appended while the next tile's
        // wgmma runs, off the warpgroup's path from one MMA to the next.
        uint32_t held = 0;
        // The position of the key this lane scores in tile `tile` (after the transpose-reduce).
        auto key_position = [&](int tile) { return job.lo + tile * kPairTile + warp * 16 + (lane >> 2) + 8 * half; };
        for (int tile = 0; tile < job.tiles; ++tile) {
            const int pos = key_position(tile);
            // Issued before the waits below (volatile keeps it there), so the MMA hides its latency; a position
            // past the keys reads the last scale and is never a candidate.
            const float scale = load_global_nc(pb.k_scale + min(pos, N - 1));
            static_assert(kPairStages == 3, "one issue_tile_mma copy per stage");
            if (stage == 0) issue_tile_mma(std::integral_constant<uint32_t, 0>{});
            else if (stage == 1) issue_tile_mma(std::integral_constant<uint32_t, 1>{});
            else issue_tile_mma(std::integral_constant<uint32_t, 2>{});
            if (tile > 0) append(tile - 1, held, pos - kPairTile);
            // Tile + 2 into the stage tile - 1 used, which the append's barrier (for a job's first tile, the
            // job's first barrier) has freed: under this tile's MMA.
            if (t == 0 && tile + kPairStages - 1 < job.tiles)
                issue_tile(job.lo + (tile + kPairStages - 1) * kPairTile, kPairStages - 1);
            wgmma_wait<0>();
#pragma unroll
            for (int i = 0; i < kAcc; ++i) asm volatile("" : "+f"(d[i])::"memory");
            if (++stage == uint32_t(kPairStages)) {
                stage = 0;
                phase ^= 1u;
            }

            // Row j's partial sums of keys a = 0 and 1 over this lane's heads: one chain each (head 8 x + 2 quad,
            // then + 1, chunk by chunk), then the quad's sums below. The four chains are independent, which hides
            // the FMAs' latency.
            float v[kPairRows][2];
#pragma unroll
            for (int j = 0; j < kPairRows; ++j) {
#pragma unroll
                for (int a = 0; a < 2; ++a) {
                    float acc = 0.0f;
#pragma unroll
                    for (int x = 0; x < kChunks; ++x) {
                        const int c = (j * kChunks + x) * 4 + 2 * a;
                        acc = fmaf(weight[j][x].x, relu_nan(d[c]), acc);
                        acc = fmaf(weight[j][x].y, relu_nan(d[c + 1]), acc);
                    }
                    v[j][a] = acc;
                }
            }
            // Transpose-reduce over the quad: lane bit 0 picks the row, bit 1 the key.
            const bool row_bit = quad & 1, half_bit = quad & 2;
            float u[2];
#pragma unroll
            for (int a = 0; a < 2; ++a) {
                const float keep = row_bit ? v[1][a] : v[0][a];
                const float send = row_bit ? v[0][a] : v[1][a];
                u[a] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
            }
            const float z = (half_bit ? u[1] : u[0]) + __shfl_xor_sync(0xffffffffu, half_bit ? u[0] : u[1], 2);
            held = score_order_key(scale * z);
            // After this check a row holds at most kCompactAt candidates: room for the held tile's.
            compact_full_rows();
        }
        if (job.tiles > 0) append(job.tiles - 1, held, key_position(job.tiles - 1));
        __threadfence_block();
        sync();  // every candidate stored, every wgmma of this job done
        if (__any_sync(0xffffffffu, ((sh.estimated >> row) & 1) && count < k)) {
            // An estimate was above its row's k-th best: the same job again, every tile, no estimates. (The
            // next round's first barrier orders every read of sh.estimated before its reset.)
            if (t == 0) {
                sh.rescoring = sh.estimates_off = 1;
                for (int i = 0; i < min(kPairStages - 1, job.tiles); ++i) issue_tile(job.lo + i * kPairTile, i);
            }
            --round;
            continue;
        }
        if (t == 0) sh.rescoring = 0;
        const PairJob& done = job;
        have = begin_job(round);  // the next job's loads overlap this job's selections
        // Warps j and j + 2 write row j. (The next round's first barrier orders these reads and writes of the
        // scratch and row_hist before their next use.)
        if ((warp & 1) < done.rows) {
            const int j = warp & 1;
            const int n = __shfl_sync(0xffffffffu, count, j);
            pair_write_row(pb, int64_t(done.r0) + j, (done.ok >> j) & 1, (done.unscored >> j) & 1, done.start[j],
                           done.end[j], candidates + j * kCandidateCap, n, sh.row_hist[j],
                           pb.shape.index_mode == IndexMode::RaggedAbsolute ? 0 : done.start[j], sh.warp_hist[j],
                           &sh.half0_above[j], RowPairSync{5 + 2 * wg_id + j}, warp >> 1, lane);
        }
    }
#else
    __trap();  // launched only when the sm_90a image is present (prefill_pairs_runs)
#endif
}

// ---- host side -----------------------------------------------------------------------------------------

constexpr PrefillGrid kPairGrid{kPairRows, kPairWarpgroups};

template <int H>
cudaError_t launch_pairs(const RaggedProblem& pb, int sm_count, void* workspace, int* error_flag,
                         cudaStream_t stream) {
    return launch_prefill_kernel<prefill_pairs_kernel<H>>(pb, kPairGrid, H, kPairTile, kPairThreads,
                                                          pair_smem_bytes<H>(), sm_count, workspace, error_flag,
                                                          stream);
}

// A sorted call's scores scratch (the rows' scores in position order, for rank_rows), past the candidate buffers:
// its bytes, reserved whether or not the call asks for scores (the workspace query does not see the outputs).
size_t ranked_scores_bytes(const RaggedProblem& pb) {
    return pb.shape.sorted ? size_t(pb.num_rows) * size_t(pb.shape.topk) * sizeof(float) : 0;
}

}  // namespace

bool prefill_pairs_runs(const RaggedProblem& pb, int compute_capability) {
    return DSA_KERNELS_HAVE_SM90A && compute_capability == 90 && pb.num_keys > 0 &&
           pb.num_keys <= INT_MAX - kPairTile && int64_t(pb.num_rows) * pb.shape.num_heads <= INT_MAX &&
           pb.shape.topk <= kMaxTopk && encode_tiled() != nullptr;
}

bool prefill_pairs_inputs_aligned(const RaggedProblem& pb) {
    return reinterpret_cast<uintptr_t>(pb.q) % 16 == 0 && reinterpret_cast<uintptr_t>(pb.k) % 16 == 0;
}

size_t prefill_pairs_workspace_bytes(const RaggedProblem& pb, int sm_count) {
    return kPairGrid.workspace_bytes(pb, sm_count) + ranked_scores_bytes(pb);
}

cudaError_t prefill_pairs_topk(const RaggedProblem& pb, int sm_count, void* workspace, int* error_flag,
                               cudaStream_t stream) {
    if (pb.rows() == 0) return cudaSuccess;
    RaggedProblem scored = pb;  // a sorted call's rows in position order, with scores
    if (pb.shape.sorted && !scored.out.scores)
        scored.out.scores =
            reinterpret_cast<float*>(static_cast<uint8_t*>(workspace) + kPairGrid.workspace_bytes(pb, sm_count));
    const cudaError_t err = pb.shape.num_heads == 64 ? launch_pairs<64>(scored, sm_count, workspace, error_flag, stream)
                                                     : launch_pairs<32>(scored, sm_count, workspace, error_flag, stream);
    if (err != cudaSuccess || !pb.shape.sorted) return err;
    return rank_rows(scored.out.indices, scored.out.scores, pb.num_rows, pb.shape.topk, pb.out.scores != nullptr,
                     stream);
}

}  // namespace dsa::kernels
