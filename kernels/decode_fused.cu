// Fused paged decode (sm_90a). One launch per call for batches of at most one sequence per CTA, two above:
//  1. decode_plan_kernel (batches of more than kSelfPlanMax sequences): per sequence its count of 64-token
//     tiles ("units") and their exclusive prefix over the batch; the units are split evenly over the CTAs of
//     step 2 by seq_lens, never by the block table's width (kernels/decode_plan.h). It also clears the
//     tickets, histogram slots and pool counter step 2 accumulates into, and writes the rows of sequences with
//     no tile (pad_unscored): padding, or, when no row of the sequence sees more than k positions and neither
//     scores nor sorted output are asked for, all its positions, unscored.
//     Smaller batches are planned by every CTA of step 2 (below). A batch of at most one sequence per CTA is
//     one cooperative launch, whose CTAs also clear (at entry) and pad (their producer warps, once they have
//     nothing left to issue) themselves, with a grid barrier ordering every CTA's clears before the first
//     part's atomics (a second kernel delayed the fused CTAs' start by ~1.5 us; bench/NOTES.md, sessions 26-28).
//     A larger one launches decode_clear_kernel first, which clears and pads (in one launch, 256x8192 measured
//     2-4 us slower); so does a batch of at most one sequence per CTA where a cooperative launch cannot hold
//     the grid (a device partition smaller than its SM count).
//  2. decode_fused_kernel (alone, or a programmatic dependent launch after the plan or clear kernel): one CTA per
//     SM. Producer warps walk the CTA's tiles and load each by TMA (keys: a 3-D tensor map over [pages, P tokens,
//     128 B], 128B swizzle, so a box lands in wgmma's K-major layout; scales: a bulk copy) into a ring of mbarrier
//     stages. Four consumer warpgroups (two for next_n > 2) take the tiles in turn, each waiting on and freeing only
//     its own tiles' stages: wgmma (64 tokens x H heads x 128 dims per row), then relu, weights, head sum and scale
//     in registers; each score goes to the workspace and, for sequences longer than 8192 tokens, into a
//     shared-memory histogram of its order key's top 11 bits (one shared atomic per warp, tile and row). When a
//     sequence's tiles are done, its rows are selected at once: by this CTA when it owns the whole
//     sequence, else by the last CTA to finish a part of it (a ticket), from the histograms the parts added up in
//     global memory. A CTA scores its two shared sequences first, so their selection overlaps the other CTAs'
//     scoring.
//  Batches of up to kSelfPlanMax sequences are self-planned: every fused CTA scans the batch's unit counts
//  into shared memory and derives its own plan: the even plan's fields (as the plan kernel computes them), each
//  written by the thread that holds its sequence in the scan, which also prefetches the block-table entries of
//  the CTA's first tiles (batches of more sequences than CTAs); then, for a batch of at most one sequence per
//  CTA, the aligned plan where it fits (each CTA within one sequence), whose warp prefetches them instead.
//  Behind the plan kernel, the fused CTA waits for it (griddepcontrol.wait) before reading the plan; behind the
//  plan or clear kernel, before its first ticket or histogram-slot atomic and before it exits, so the call ends
//  after the padding writes.
// Selection of a row with n > k visible positions. Up to 8192 positions: every consumer thread keeps 16 keys (32
// with two consumer warpgroups) in registers, and radix refinement (11 + 11 + 10 bits, stopping once the
// threshold bin holds exactly what is still needed) runs on them; one scan of per-thread counts places the
// result, whose block-table entries come from a shared-memory copy of the row (a sequence of at most 8192
// tokens; else from global memory). Longer rows: the histogram gives
// the bin of the k-th best key; one ordered pass over the scores keeps the keys at or above that bin (in
// position order) in shared memory, where the remaining bits are refined; an ordered pass writes the result. A
// row longer than 32768 split over CTAs is not read whole by its last arrival: each part, before its ticket,
// puts into a candidate pool the keys of its part at or above a lower bound of that bin (from the counts added
// so far), and the last arrival's ordered pass reads the pool (a few k entries per part) instead of the row.
// Ties go to the smaller position, so the output is a pure function of the inputs, as on the CPU.
#include "kernels/decode_fused.h"

#include <algorithm>
#include <climits>
#include <cstdint>

#include <cuda.h>
#include <cub/block/block_scan.cuh>

#include "common/constants.hpp"
#include "common/order_key.h"
#include "common/problem.hpp"
#include "kernels/decode_plan.h"
#include "kernels/group_select.cuh"
#include "kernels/launch_once.cuh"
#include "kernels/score_kernels.cuh"
#include "kernels/select_rows.cuh"
#include "kernels/sm90.cuh"

// In images other than sm_90a the fused kernel's body is compiled out (it only runs there), which leaves its
// device helpers unreferenced: nothing to warn about.
#pragma nv_diag_suppress 177

namespace dsa::kernels {
namespace {

constexpr int kUnitTokens = 64;       // tokens per tile (one page of 64, or two of 32)
constexpr int kFusedStages = 8;       // tiles in flight per CTA
constexpr int kProducerWarps = 4;     // the producer warpgroup's warps; each owns every 4th stage
static_assert(kFusedStages % kProducerWarps == 0, "a stage is always refilled by the same warp");
constexpr int kBins = kSelectBins;    // first-level histogram: the key's top 11 bits
constexpr int kBinShift = 21;
static_assert(kBins == 1 << (32 - kBinShift), "level 1 bins the key's top bits");
constexpr int kListCap = 8192;        // candidates one CTA refines in shared memory
constexpr int kMaxCtas = 256;         // grid bound: histogram slots in the workspace
constexpr int kTicketBad = 1 << 16;   // a part's bad flag in its ticket; the low bits count parts (<= kMaxCtas)
static_assert(kMaxCtas < kTicketBad && int64_t(kMaxCtas) * (1 + kTicketBad) <= INT_MAX);
constexpr int kPlanThreads = 1024;
constexpr int kSmRegisters = 65536;   // sm_90's register file per SM
constexpr int kClearRegisters = 32;   // per thread of decode_clear_kernel
constexpr int kPlanPrefixCache = 8191;  // sequences whose unit prefix the plan kernel searches in shared memory
constexpr int kSelfPlanMax = 1024;      // largest batch whose unit prefix every fused CTA computes itself
constexpr int kMaxSmemPerBlock = 227 * 1024;  // sm_90's opt-in limit of shared memory per block
constexpr int kRegRowMax = 8192;    // rows selected with their keys in the consumers' registers
constexpr int kMinPageSize = 32;    // the smaller of the two page sizes the API accepts (src/api/validate.cpp)
constexpr int kGlobalItems = 16;    // scores per thread per pass step (32 KB with 512 consumers), the next prefetched
// Split rows longer than this go through the candidate pool: below it, the last arrival's one pass over the
// row costs less than the pass every part makes for the pool (measured on H200: bench/NOTES.md, session 7).
constexpr int kPoolRowMin = 32768;
static_assert(kPoolRowMin >= kRegRowMax, "rows selected in registers read their scores whole");
constexpr int64_t kPoolMaxEntries = int64_t(1) << 22;  // candidate pool of long split rows: 32 MB at most
static_assert(kMaxCtas * (kPoolMaxEntries + 1) <= INT_MAX, "a row's pool counts (each <= capacity + 1) sum in an int");
constexpr int kPoolItems = 8;       // pool entries per thread per gather step
constexpr int kPrefetchUnits = 32;  // a producer batch: units of each sequence a self-planned CTA prefetches
static_assert(kPrefetchUnits * (kUnitTokens / kMinPageSize) <= 64, "prefetch_entries_l2 covers at most 64 entries");

// The CTA: one producer warpgroup and the consumer warpgroups. Four consumers while their
// accumulators (32 per MTP row) fit the 104 registers setmaxnreg leaves each; two otherwise. setmaxnreg only
// moves registers within what the CTA got at launch (640 x 96), so an increase beyond it would wait forever.
template <int NN>
struct FusedRoles {
    static constexpr int kConsumerGroups = NN <= 2 ? 4 : 2;
    static constexpr int kConsumers = 128 * kConsumerGroups;
    static constexpr int kThreads = 128 + kConsumers;
    static constexpr int kRegItems = kRegRowMax / kConsumers;  // keys per consumer thread in registers
    static constexpr bool kShrinkProducer = kConsumerGroups == 4;
    static constexpr int kLaunchRegisters = kSmRegisters / kThreads / 8 * 8;  // what __launch_bounds__ lets ptxas use
    // decode_clear_kernel's CTA: what this CTA leaves of its SM's registers, so the two fit side by side.
    static constexpr int kClearThreads = (kSmRegisters - kThreads * kLaunchRegisters) / kClearRegisters;
    static_assert(kClearThreads >= 32 && kClearThreads % 32 == 0);
    static constexpr int kProducerRegisters = 64;
    static constexpr int kConsumerRegisters = 104;
    static_assert(!kShrinkProducer ||
                  128 * kProducerRegisters + kConsumers * kConsumerRegisters <= kThreads * kLaunchRegisters);
};

struct FusedParams {
    PagedProblem pb;
    int page_shift;
    bool self_planned;  // B <= kSelfPlanMax: the fused CTAs plan themselves; unit_prefix and cta_plan are unused
    int* unit_prefix;  // [B + 1]
    CtaPlan* cta_plan;  // [kMaxCtas]
    int* tickets;      // [B]: parts of sequence b done, plus kTicketBad for each part that found a bad entry
    int* hist_slots;   // [kMaxCtas][next_n][kBins]: split sequence b adds into the slot of its first CTA
    float* scores;     // sequence b, row j: at unit_prefix[b] * 64 * next_n + j * units_b * 64
    // Candidate pool of split rows longer than kPoolRowMin (null when no row can be that long): each part's
    // entries ((key << 32) | position, position order) at pool_parts[(c_lo * next_n + j) * kMaxCtas + part]
    // = {offset, count}; count = pool_capacity + 1 marks a part that did not fit. A bad part writes no record:
    // its row is then bad (its ticket says so) and selects nothing.
    uint64_t* pool;
    unsigned long long* pool_used;
    int2* pool_parts;
    int pool_capacity;
    int* error_flag;
};

template <int H, int NN>
struct FusedSmem {
    uint8_t keys[kFusedStages][kUnitTokens * kHeadDim];  // first: 1024-byte aligned stages
    uint8_t q[NN * H * kHeadDim];
    float scales[kFusedStages][kUnitTokens];
    float w[NN * H];
    int hist[NN][kBins];
    union {
        struct alignas(16) {  // candidates in position order: order keys and positions apart, so that a thread's
                              // run of consecutive keys is read as 16-byte words without bank conflicts
            uint32_t key[kListCap];
            uint32_t pos[kListCap];
        } list;
        int hist_next[kBins];     // select_in_registers' second refinement histogram, pool_part's scratch
        typename cub::BlockScan<int, FusedRoles<NN>::kThreads>::TempStorage plan_scan;  // self-planning, at start
    };
    int unit_prefix[kSelfPlanMax + 1];  // self-planned: unit_prefix[0 .. B]
    int seq_len[kSelfPlanMax];          // self-planned: sequence_tokens of sequences [0, B), for the producers
    int32_t seg_table[kRegRowMax / kMinPageSize];  // the segment's block-table row, for rows selected in registers
    CtaPlan plan;                       // this CTA's
    uint64_t picked[kMaxTopk];      // the selected candidate keys, by output slot
    int tile_bad[kFusedStages];     // the stage's tile has a block-table entry out of range (no data loaded)
    uint64_t full[kFusedStages];
    uint64_t empty[kFusedStages];
    int warp_total[2][FusedRoles<NN>::kConsumers / 32];
    int bcast[kSelectBcast];
    int ticket_last;  // this CTA took a split sequence's last ticket: 1, or 2 when a part of it was bad; else 0
    int seg_bad;
    int pool_offset;                // a part's reservation in the pool, broadcast
    int part_at[kMaxCtas];          // the last arrival's view of a pooled row: each part's pool offset ...
    int part_first[kMaxCtas];       // ... and the row's index of its first entry (an exclusive prefix)
    // Single launch: the grid barrier's word as the CTA's arrival found it, and whether the first consumer
    // thread has yet to wait on it (kept here: in registers they made the tile loop spill). Last, so that the
    // two-launch kernel's layout does not depend on them.
    unsigned int clears_arrival;
    int clears_pending;
};

// ---- small device helpers ------------------------------------------------------------------------------

__device__ __forceinline__ CtaPlan load_plan(const CtaPlan* at) {
    const int4* words = reinterpret_cast<const int4*>(at);
    // Written by the plan kernel during this grid: through L2.
    const int4 a = __ldcg(words), b = __ldcg(words + 1), c = __ldcg(words + 2);
    return {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, c.x, c.y, {c.z, c.w}};
}

template <int Consumers>
__device__ __forceinline__ void consumer_sync() {
    asm volatile("bar.sync 1, %0;\n" ::"n"(Consumers) : "memory");
}
template <int Consumers>
struct ConsumerSync {
    __device__ void operator()() const { consumer_sync<Consumers>(); }
};

// Brings the lines holding the block-table entries [first, last] (at most 64: three lines of 128 bytes) into
// L2: a hint, no value. Each address given is one of the entries', so all are valid.
__device__ __forceinline__ void prefetch_entries_l2(const int32_t* first, const int32_t* last) {
    const uint64_t a = reinterpret_cast<uint64_t>(first), z = reinterpret_cast<uint64_t>(last);
    const uint64_t second = (a | 127) + 1;  // the next line's start
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(a));
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(second < z ? second : z));
    asm volatile("prefetch.global.L2 [%0];\n" ::"l"(z));
}
// The block-table entries of units [ua, ub) (counted from its first unit) of sequence b, of `tokens` tokens,
// up to its last page (P = 1 << page_shift: shifts, no division), brought into L2 for a CTA's first tiles.
__device__ __forceinline__ void prefetch_unit_entries_l2(const PagedProblem& pb, int page_shift, int b, int64_t tokens,
                                                         int ua, int ub) {
    const int32_t* row = pb.block_table + int64_t(b) * pb.block_table_stride;
    const int pages_per_unit = kUnitTokens >> page_shift;
    const int pages = int((tokens - 1) >> page_shift) + 1;  // pages_holding(tokens, P)
    prefetch_entries_l2(row + ua * pages_per_unit, row + min(ub * pages_per_unit, pages) - 1);
}

// A plain load of a value other CTAs may be adding to at the same time (gpu scope, no ordering).
__device__ __forceinline__ int load_relaxed_gpu(const int* p) {
    int v;
    asm volatile("ld.relaxed.gpu.global.s32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
    return v;
}

// Adds v to *p at gpu scope and returns the old value; acquire-release: what happened before it (this thread's
// writes, and those a CTA barrier ordered before it) is visible to whoever acquires a later value, and what
// follows it sees what earlier releasers wrote.
__device__ __forceinline__ int fetch_add_acq_rel_gpu(int* p, int v) {
    int old;
    asm volatile("atom.acq_rel.gpu.global.add.s32 %0, [%1], %2;\n" : "=r"(old) : "l"(p), "r"(v) : "memory");
    return old;
}

__device__ __forceinline__ int64_t sequence_tokens(const PagedProblem& pb, int b) {
    const int64_t len = pb.seq_lens[b];
    return seq_len_in_range(len, pb.max_pages, pb.shape.page_size) ? len : -1;  // -1: bad input
}

// ---- planning ------------------------------------------------------------------------------------------

// Units (64-token tiles) of a sequence of `tokens` tokens (sequence_tokens: -1 for a bad length): none for an
// empty sequence, a bad length, or rows that need no scores (the last row sees every token; pad_unscored
// writes them).
__device__ __forceinline__ int units_of(const PagedProblem& pb, int64_t tokens) {
    return tokens > 0 && !row_needs_no_scores(pb.shape, pb.out, tokens) ? int((tokens + kUnitTokens - 1) / kUnitTokens)
                                                                         : 0;
}
__device__ __forceinline__ int sequence_units(const PagedProblem& pb, int b) {
    return units_of(pb, sequence_tokens(pb, b));
}

// The exclusive prefix of the units of sequences [first, first + Threads * Items), Items consecutive ones per
// thread (none past the batch), into `before`, and their sequence_tokens (0 past the batch) into `tokens`;
// returns their total.
template <int Threads, int Items>
__device__ int scan_units(const PagedProblem& pb, int first, typename cub::BlockScan<int, Threads>::TempStorage& storage,
                          int (&before)[Items], int64_t (&tokens)[Items]) {
    int units[Items];
#pragma unroll
    for (int t = 0; t < Items; ++t) {
        const int b = first + int(threadIdx.x) * Items + t;
        tokens[t] = b < pb.batch_size ? sequence_tokens(pb, b) : 0;
        units[t] = units_of(pb, tokens[t]);
    }
    int total = 0;
    cub::BlockScan<int, Threads>(storage).ExclusiveSum(units, before, total);
    return total;
}

// What the fused kernel's atomics start from; each CTA of the plan or clear kernel, or of the fused kernel itself
// in a single launch: its histogram slot, a share of tickets (which carry the parts' bad flags), the pool counter.
template <int NN>
__device__ void clear_counters(const FusedParams& p, int grid_ctas) {
    const PagedProblem& pb = p.pb;
    if (blockIdx.x < unsigned(grid_ctas)) {
        int4* slot = reinterpret_cast<int4*>(p.hist_slots + int64_t(blockIdx.x) * NN * kBins);
        for (int i = threadIdx.x; i < NN * kBins / 4; i += blockDim.x) slot[i] = make_int4(0, 0, 0, 0);
    }
    if (blockIdx.x == 0 && threadIdx.x == 0 && p.pool_used) *p.pool_used = 0;
    for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < pb.batch_size; b += gridDim.x * blockDim.x) p.tickets[b] = 0;
}

// The rows the fused kernel's tiles never reach, those of the sequences with no tile, by one warp per sequence
// (this warp: sequences first, first + stride, ...): padding, or every visible position when the rows need no
// scores (a block-table entry out of range makes the sequence bad, as in the fused kernel: padding and the error
// flag). With Unroll > 1 (the single launch's producer warps) each lane keeps Unroll block-table loads in flight:
// one round trip per 32 Unroll positions instead of per 32. The plan and clear kernels take 1 (their 64 and 32
// registers a thread): plain strided loops, which ptxas unrolls itself; the rounds at Unroll 1 made the clear
// kernel 12% slower on 256x2000_table2560, all padding (bench/NOTES.md, session 29).
template <int NN, int Unroll>
__device__ void pad_unscored(const FusedParams& p, int first, int stride) {
    const PagedProblem& pb = p.pb;
    const int B = pb.batch_size, k = pb.shape.topk;
    const int lane = threadIdx.x % 32;
    for (int b = first; b < B; b += stride) {
        if (sequence_units(pb, b) > 0) continue;
        const int64_t tokens = sequence_tokens(pb, b);
        const int32_t* table = pb.block_table + int64_t(b) * pb.block_table_stride;
        bool bad = tokens < 0;
        const int64_t pages = pages_holding(tokens, pb.shape.page_size);
        if constexpr (Unroll == 1) {
            for (int64_t i = lane; i < pages; i += 32) bad |= !page_entry_in_range(table[i], pb.num_pages);
        } else {
#pragma unroll 1
            for (int64_t i0 = 0; i0 < pages; i0 += 32 * Unroll) {
#pragma unroll
                for (int u = 0; u < Unroll; ++u) {
                    const int64_t i = i0 + lane + 32 * u;
                    if (i < pages) bad |= !page_entry_in_range(table[i], pb.num_pages);
                }
            }
        }
        bad = __any_sync(0xffffffffu, bad);
        if (bad && lane == 0) *p.error_flag = 1;
#pragma unroll 1
        for (int j = 0; j < NN; ++j) {
            const int64_t r = int64_t(b) * NN + j;
            const int n = bad ? 0 : int(visible_positions(tokens, NN, j));
            int32_t* const out_idx = pb.out.indices + r * k;
            if constexpr (Unroll == 1) {
#pragma unroll 1
                for (int i = lane; i < n; i += 32) out_idx[i] = paged_index(pb, table, p.page_shift, uint32_t(i));
            } else {
#pragma unroll 1
                for (int i0 = 0; i0 < n; i0 += 32 * Unroll) {
                    int32_t index[Unroll];
#pragma unroll
                    for (int u = 0; u < Unroll; ++u) {
                        const int i = i0 + lane + 32 * u;
                        index[u] = i < n ? paged_index(pb, table, p.page_shift, uint32_t(i)) : 0;
                    }
#pragma unroll
                    for (int u = 0; u < Unroll; ++u)
                        if (i0 + lane + 32 * u < n) out_idx[i0 + lane + 32 * u] = index[u];
                }
            }
#pragma unroll 1
            for (int i = n + lane; i < k; i += 32) {
                out_idx[i] = -1;
                if (pb.out.scores) pb.out.scores[r * k + i] = padding_score();
            }
        }
    }
}

// Batches of more than kSelfPlanMax sequences.
template <int NN>
__global__ void __launch_bounds__(kPlanThreads) decode_plan_kernel(FusedParams p, int grid_ctas) {
    grid_dependents_launch();  // the fused kernel may start its prologue; it waits for this grid's writes
    clear_counters<NN>(p, grid_ctas);
    pad_unscored<NN, 1>(p, blockIdx.x * (kPlanThreads / 32) + threadIdx.x / 32, gridDim.x * (kPlanThreads / 32));
    if (blockIdx.x != 0) return;

    // CTA 0: unit prefix, then the first and last sequence of every fused CTA.
    const PagedProblem& pb = p.pb;
    const int B = pb.batch_size;
    __shared__ typename cub::BlockScan<int, kPlanThreads>::TempStorage scan;
    __shared__ int prefix_cache[kPlanPrefixCache + 1];  // unit_prefix[0 .. kPlanPrefixCache], for the searches
    constexpr int kItems = 4;
    int carry = 0;
    for (int first = 0; first < B; first += kPlanThreads * kItems) {
        int before[kItems];
        int64_t tokens[kItems];  // unused here
        const int total = scan_units<kPlanThreads>(pb, first, scan, before, tokens);
#pragma unroll
        for (int t = 0; t < kItems; ++t) {
            const int b = first + threadIdx.x * kItems + t;
            if (b < B) p.unit_prefix[b] = carry + before[t];
            if (b < B && b <= kPlanPrefixCache) prefix_cache[b] = carry + before[t];
        }
        carry += total;
        __syncthreads();  // scan storage reused
    }
    if (threadIdx.x == 0) {
        p.unit_prefix[B] = carry;
        if (B <= kPlanPrefixCache) prefix_cache[B] = carry;
    }
    __syncthreads();
    const int U = carry;
    const int G = min(grid_ctas, U);
    auto prefix_at = [&](int b) { return b <= kPlanPrefixCache ? prefix_cache[b] : p.unit_prefix[b]; };
    for (int c = threadIdx.x; c < grid_ctas; c += blockDim.x) p.cta_plan[c] = even_plan_of_cta(c, B, U, G, prefix_at);
}

// Self-planned batches of more sequences than CTAs: the fused CTAs need no plan, only the clears and the
// padding, which this kernel does before them (PDL), as the single launch does not for such batches (256x8192
// measured 2-4 us slower in one launch: bench/NOTES.md, session 28). No shared memory and at most kClearRegisters
// registers a thread, so a fused CTA starts on the SM beside this one (__maxnreg__: __launch_bounds__ cannot ask
// for 32 registers at 32 threads a CTA).
template <int NN>
__global__ void __maxnreg__(kClearRegisters) decode_clear_kernel(FusedParams p, int grid_ctas) {
    grid_dependents_launch();  // the fused kernel may start its prologue; it waits for this grid's writes
    clear_counters<NN>(p, grid_ctas);
    pad_unscored<NN, 1>(p, blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, gridDim.x * (blockDim.x / 32));
}

// A sequence's units as the aligned plan reads them: its first unit, its count, and its sequence_tokens.
struct SequenceUnits {
    int unit0, units, tokens;
};

// The aligned plan of a self-planned CTA of a batch of at most G sequences among U units (kernels/decode_plan.h),
// by one warp: written over *plan only when every sequence's share fits; returns whether it did (the same on
// every lane). sequence_of(b) is called by every lane at once (b = first + lane, past the batch or not: zeros
// there), so it may shuffle. The lane holding this CTA's sequence also prefetches into L2 the block-table entries
// of the CTA's first kPrefetchUnits units, as the scan does for the even plan of a larger batch. (A batch of at
// most G sequences whose aligned plan does not fit keeps the even plan with no prefetch.)
template <class SequenceOf>
__device__ bool aligned_plan_by_warp(const PagedProblem& pb, int page_shift, int c, int G, int U, SequenceOf sequence_of,
                                     CtaPlan* plan) {
    const int lane = threadIdx.x % 32, B = pb.batch_size;
    bool fits = true, mine = false;
    CtaPlan own{};
    SequenceUnits own_sequence{};
    int ctas_before = 0;
    for (int first = 0; fits && first < B; first += 32) {
        const int b = first + lane;
        const SequenceUnits s = sequence_of(b);
        const int ctas = aligned_ctas(s.units, U, G, B);
        fits = __all_sync(0xffffffffu, aligned_share_fits(s.units, ctas, U, G));
        int inc = ctas;  // inclusive scan of the CTA counts over the lanes
#pragma unroll
        for (int off = 1; off < 32; off <<= 1) {
            const int x = __shfl_up_sync(0xffffffffu, inc, off);
            if (lane >= off) inc += x;
        }
        const int first_cta = ctas_before + inc - ctas;
        if (c >= first_cta && c < first_cta + ctas) {
            own = aligned_plan_of_part(b, s.unit0, s.units, first_cta, ctas, c - first_cta);
            own_sequence = s;
            mine = true;
        }
        ctas_before += __shfl_sync(0xffffffffu, inc, 31);
    }
    if (!fits) return false;
    if (lane == 0 && c >= ctas_before) *plan = CtaPlan{};  // no units in this CTA
    if (!mine) return true;
    *plan = own;
    const int unit = own.u0 - own_sequence.unit0;
    prefetch_unit_entries_l2(pb, page_shift, own.b_first, own_sequence.tokens, unit,
                             unit + min(own.u1 - own.u0, kPrefetchUnits));
    return true;
}

// ---- selection (the consumer threads) -------------------------------------------------------------------

template <int H, int NN>
struct Selector {
    static constexpr int kConsumerThreads = FusedRoles<NN>::kConsumers;
    static constexpr int kRegItems = FusedRoles<NN>::kRegItems;
    FusedSmem<H, NN>& sh;
    int ct;  // consumer thread
    GroupSelect<kConsumerThreads, ConsumerSync<kConsumerThreads>> group{{}, ct, sh.warp_total, sh.bcast};
    __device__ static void consumer_sync() { kernels::consumer_sync<kConsumerThreads>(); }

    __device__ int exclusive_scan(int v, int& total) { return group.exclusive_scan(v, total); }
    // The bin holding the need-th largest key of `hist` (nbins bins, need <= total), the count above it, and
    // its own count; hist may be rewritten once this returns.
    __device__ void find_bin(const int* hist, int nbins, int need, int& bin, int& above, int& count) {
        group.find_bin(hist, nbins, need, bin, above, count);
    }

    // Order keys of V consecutive items starting at i0, and the position item i stands for.
    struct GlobalSource {
        const float* s;
        template <int V>
        __device__ void load(int i0, int n, uint32_t (&key)[V]) const {
            float4 f[V / 4];
#pragma unroll
            for (int q = 0; q < V / 4; ++q)  // all loads first: one memory round trip per tile
                f[q] = i0 + 4 * q < n ? __ldcg(reinterpret_cast<const float4*>(s + i0) + q) : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
            for (int q = 0; q < V / 4; ++q) {
                key[4 * q + 0] = score_order_key(f[q].x);
                key[4 * q + 1] = score_order_key(f[q].y);
                key[4 * q + 2] = score_order_key(f[q].z);
                key[4 * q + 3] = score_order_key(f[q].w);
            }
        }
        __device__ uint32_t position(int i) const { return uint32_t(i); }
    };
    struct ListSource {
        const uint32_t* keys;  // sh.list.key (16-byte aligned): read in whole 16-byte words below n, inside the list
        const uint32_t* positions;
        template <int V>
        __device__ void load(int i0, int n, uint32_t (&key)[V]) const {
            static_assert(V % 4 == 0, "i0 is a multiple of V: whole, aligned words");
#pragma unroll
            for (int q = 0; q < V / 4; ++q) {
                const uint4 w = i0 + 4 * q < n ? *reinterpret_cast<const uint4*>(keys + i0 + 4 * q) : make_uint4(0u, 0u, 0u, 0u);
                const uint32_t x[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
                for (int c = 0; c < 4; ++c) key[4 * q + c] = i0 + 4 * q + c < n ? x[c] : 0u;
            }
        }
        __device__ uint32_t position(int i) const { return positions[i]; }
    };

    // Item i (in order) is taken when (key >> shift) > thr, or == thr and fewer than need_eq equal items came
    // before it; sink(slot, key, position) with slot = its rank among the taken items.
    template <int V, class Source, class Sink>
    __device__ void ordered_pass(const Source& src, int n, int shift, uint32_t thr, int need_eq, Sink sink) {
        int gt_base = 0, eq_base = 0;
        uint32_t key[V];
        src.template load<V>(ct * V, n, key);
        for (int tile = 0; tile < n; tile += kConsumerThreads * V) {
            const int i0 = tile + ct * V;
            uint32_t next[V];  // the next step's loads go out before this step's scan
            src.template load<V>(i0 + kConsumerThreads * V, n, next);
            int gt = 0, eq = 0;
#pragma unroll
            for (int e = 0; e < V; ++e) {
                const uint32_t top = key[e] >> shift;
                const bool in = i0 + e < n;
                gt += in && top > thr;
                eq += in && top == thr;
            }
            int total;
            const int before = exclusive_scan(gt | (eq << 16), total);
            int gt_before = gt_base + (before & 0xffff), eq_before = eq_base + (before >> 16);
#pragma unroll
            for (int e = 0; e < V; ++e) {
                if (i0 + e >= n) break;
                const uint32_t top = key[e] >> shift;
                if (top > thr) {
                    sink(gt_before + min(eq_before, need_eq), key[e], src.position(i0 + e));
                    ++gt_before;
                } else if (top == thr) {
                    if (eq_before < need_eq) sink(gt_before + eq_before, key[e], src.position(i0 + e));
                    ++eq_before;
                }
            }
            gt_base += total & 0xffff;
            eq_base += total >> 16;
#pragma unroll
            for (int e = 0; e < V; ++e) key[e] = next[e];
        }
    }

    // Histogram of bits [bshift, bshift + width) of the keys whose bits above pshift equal prefix.
    template <int V, class Source>
    __device__ void hist_pass(const Source& src, int n, int pshift, uint32_t prefix, int bshift, uint32_t bmask,
                              int* hist) {
        for (int i = ct; i < kBins; i += kConsumerThreads) hist[i] = 0;
        consumer_sync();
        uint32_t key[V];
        src.template load<V>(ct * V, n, key);
        for (int tile = 0; tile < n; tile += kConsumerThreads * V) {
            const int i0 = tile + ct * V;
            uint32_t next[V];
            src.template load<V>(i0 + kConsumerThreads * V, n, next);
#pragma unroll
            for (int e = 0; e < V; ++e)
                if (i0 + e < n && (key[e] >> pshift) == prefix) atomicAdd(&hist[(key[e] >> bshift) & bmask], 1);
#pragma unroll
            for (int e = 0; e < V; ++e) key[e] = next[e];
        }
        consumer_sync();
    }

    // Refines (prefix, pbits) one level (11 or 10 more bits) over `src`; need/above as in find_bin.
    template <int V, class Source>
    __device__ void refine(const Source& src, int n, uint32_t& prefix, int& pbits, int& need, int& above,
                           int& ties, int* hist) {
        const int width = min(11, 32 - pbits);
        const int bshift = 32 - pbits - width;
        hist_pass<V>(src, n, 32 - pbits, prefix, bshift, (1u << width) - 1u, hist);
        int bin, up;
        find_bin(hist, 1 << (width == 11 ? 11 : 10), need, bin, up, ties);
        above += up;
        need -= up;
        prefix = (prefix << width) | uint32_t(bin);
        pbits += width;
    }

    // ---- long split rows: the candidate pool ----
    // A part of a long split row (this CTA's positions [lo, hi) of a row with scores s) puts into the pool every
    // key whose level-1 bin is at or above `floor_bin`: the bin of the k-th best key of a histogram that is
    // nowhere above the row's, bin by bin (the larger of this part's own count and what the row's parts have
    // added to `slot` so far). So floor_bin never exceeds the bin of the row's k-th best key, whatever the
    // order of the parts or how much of their adds this read sees: the pool always holds every key the row's
    // selection can keep, in position order part by part, and the last arrival selects from it instead of
    // reading the whole row. Parts of fewer than k positions that arrive early keep all of them; others keep
    // about k. own_hist: this part's level-1 histogram; scratch: kBins ints.
    __device__ void pool_part(const float* s, int lo, int hi, int k, const int* slot, const int* own_hist,
                              int* scratch, const FusedParams& p, int2* record) {
        constexpr int kPer = kBins / kConsumerThreads;
        int seen = 0;
#pragma unroll
        for (int e = 0; e < kPer; ++e) {
            const int v = max(load_relaxed_gpu(slot + ct * kPer + e), own_hist[ct * kPer + e]);
            scratch[ct * kPer + e] = v;
            seen += v;
        }
        int total;
        exclusive_scan(seen, total);  // its barrier also publishes scratch
        int floor_bin = 0, above, ties;
        if (total >= k) find_bin(scratch, kBins, k, floor_bin, above, ties);
        int kept = 0;
#pragma unroll
        for (int e = 0; e < kPer; ++e) kept += ct * kPer + e >= floor_bin ? own_hist[ct * kPer + e] : 0;
        int count;
        exclusive_scan(kept, count);
        if (ct == 0) {
            const unsigned long long at = atomicAdd(p.pool_used, (unsigned long long)count);
            const bool fits = count == 0 || at + count <= (unsigned long long)p.pool_capacity;
            sh.pool_offset = fits ? int(at) : -1;
            *record = make_int2(fits ? int(at) : 0, fits ? count : p.pool_capacity + 1);
        }
        consumer_sync();
        const int offset = sh.pool_offset;
        if (offset < 0 || count == 0) return;
        uint64_t* out = p.pool + offset;
        ordered_pass<kGlobalItems>(GlobalSource{s + lo}, hi - lo, kBinShift, uint32_t(floor_bin), INT_MAX,
                                   [&](int slot_, uint32_t key, uint32_t pos) {
                                       out[slot_] = (uint64_t(key) << 32) | uint32_t(lo + int(pos));
                                   });
    }

    // The last arrival of a pooled row reads its parts' records into sh.part_at / sh.part_first; returns the
    // number of pool entries, or -1 when a part did not fit (the row is then read from its scores).
    __device__ int load_pool_parts(const int2* records, int parts, int pool_capacity) {
        int2 r = make_int2(0, 0);
        if (ct < parts) r = __ldcg(records + ct);
        int total;
        const int first = exclusive_scan(r.y, total);  // counts <= capacity + 1 each: no overflow for kMaxCtas parts
        if (ct < parts) {
            sh.part_at[ct] = r.x;
            sh.part_first[ct] = first;
        }
        consumer_sync();
        return total <= pool_capacity ? total : -1;
    }

    // Appends to sh.list, in order, the pool entries (parts in order, `total` in all) whose key bits above
    // `shift` are at least thr: exactly the above + ties keys select_row counted, since the pool holds every
    // key of the row at or above the level-1 threshold bin, so the list's bound holds.
    __device__ void gather_pool(const uint64_t* pool, int parts, int total, int shift, uint32_t thr) {
        int base = 0;
        for (int step = 0; step < total; step += kConsumerThreads * kPoolItems) {
            const int i0 = step + ct * kPoolItems;
            int part = 0;  // the last part whose entries start at or before i0 (empty parts start where the next does)
            for (int lo = 0, hi = parts - 1; lo < hi;) {
                const int mid = (lo + hi + 1) / 2;
                if (sh.part_first[mid] <= i0) lo = part = mid;
                else hi = mid - 1;
            }
            uint64_t e[kPoolItems];
            int kept = 0;
#pragma unroll
            for (int x = 0; x < kPoolItems; ++x) {
                const int i = i0 + x;
                while (part + 1 < parts && sh.part_first[part + 1] <= i) ++part;
                e[x] = i < total ? __ldcg(pool + sh.part_at[part] + (i - sh.part_first[part])) : 0;
            }
#pragma unroll
            for (int x = 0; x < kPoolItems; ++x) kept += i0 + x < total && (uint32_t(e[x] >> 32) >> shift) >= thr;
            int stepped;
            int at = base + exclusive_scan(kept, stepped);
#pragma unroll
            for (int x = 0; x < kPoolItems; ++x)
                if (i0 + x < total && (uint32_t(e[x] >> 32) >> shift) >= thr) {
                    sh.list.key[at] = uint32_t(e[x] >> 32);
                    sh.list.pos[at++] = uint32_t(e[x]);
                }
            base += stepped;
        }
    }

    // Rows of at most kRegRowMax positions: thread ct holds the keys of positions
    // [ct * kRegItems, (ct + 1) * kRegItems) in registers through every refinement step, so the row's scores
    // are read once, and the emitted slots follow from one scan of per-thread counts. Positions past n hold
    // key 0 (GroupSelect's padding). hist and sh.hist_next take the refinement levels in turn, level 1
    // included; hist is zero on entry unless hist_filled.
    template <class Emit>
    __device__ void select_in_registers(int n, int k, const float* s, int* hist, bool hist_filled, Emit emit) {
        const int i0 = ct * kRegItems;
        const float4* const src = reinterpret_cast<const float4*>(s + i0);
        uint32_t key[kRegItems];
        if (i0 + kRegItems <= n) {
            // Unpredicated, every load before the first conversion: one L2 round trip. (Predicated, ptxas
            // reused the first load's registers for the third, which then waited for the first to land.)
            float4 f[kRegItems / 4];
#pragma unroll
            for (int q = 0; q < kRegItems / 4; ++q) f[q] = __ldcg(src + q);
#pragma unroll
            for (int q = 0; q < kRegItems / 4; ++q) {
                key[4 * q + 0] = score_order_key(f[q].x);
                key[4 * q + 1] = score_order_key(f[q].y);
                key[4 * q + 2] = score_order_key(f[q].z);
                key[4 * q + 3] = score_order_key(f[q].w);
            }
        } else {  // the thread holding position n - 1, and those past it
#pragma unroll
            for (int q = 0; q < kRegItems / 4; ++q) {
                const float4 f = i0 + 4 * q < n ? __ldcg(src + q) : make_float4(0.f, 0.f, 0.f, 0.f);
                const float x[4] = {f.x, f.y, f.z, f.w};
#pragma unroll
                for (int c = 0; c < 4; ++c) key[4 * q + c] = i0 + 4 * q + c < n ? score_order_key(x[c]) : 0u;
            }
        }
        if (n <= k) {  // every position is taken, in position order, and no padding (so no GroupSelect)
#pragma unroll
            for (int e = 0; e < kRegItems; ++e)
                if (i0 + e < n) emit(i0 + e, key[e], uint32_t(i0 + e));
            return;
        }
        if (hist_filled) {  // the segment's level-1 histogram of this row, not needed here
            for (int i = ct; i < kBins; i += kConsumerThreads) hist[i] = 0;
            consumer_sync();
        }
        // Level 1 from the keys in hand: every item, padding included, has the empty prefix (shift 32).
        uint32_t prefix = 0;
        int shift = 32, need = k, above = 0, ties = kConsumerThreads * kRegItems;
        group.refine(key, prefix, shift, need, above, ties, hist, sh.hist_next);
        group.keep_in_order(key, prefix, shift, need, ties, [&](int slot, int e) { emit(slot, key[e], uint32_t(i0 + e)); });
    }

    // Selects row r: n visible positions, scores s; hist holds the level-1 histogram of the row's keys (their
    // top 11 bits) when the segment kept one (hist_filled; always for rows longer than kRegRowMax), else
    // zeros; shorter rows build their own in it. A long split row's keys at or above its level-1 threshold
    // bin are also in `pool` (pool_total entries, parts in sh.part_at / part_first) unless pool is null.
    template <class IndexOf>
    __device__ void select_row(int64_t r, int n, const float* s, int* hist, bool hist_filled, IndexOf index_of,
                               const PagedProblem& pb, const uint64_t* pool = nullptr, int pool_parts = 0,
                               int pool_total = 0) {
        const int k = pb.shape.topk;
        const bool sorted = pb.shape.sorted;
        int32_t* out_idx = pb.out.indices + r * k;
        float* out_score = pb.out.scores ? pb.out.scores + r * k : nullptr;
        // Every emitted candidate lands in sh.picked[slot]; the output is written from there at the end.
        auto emit = [&](int slot, uint32_t key, uint32_t pos) { sh.picked[slot] = (uint64_t(key) << 32) | uint64_t(~pos); };
        int taken = n < k ? n : k;
        if (n <= kRegRowMax) {
            select_in_registers(n, k, s, hist, hist_filled, emit);
        } else {
            const GlobalSource global{s};
            int bin, above, ties;
            find_bin(hist, kBins, k, bin, above, ties);
            int need = k - above, pbits = 11;
            uint32_t prefix = uint32_t(bin);
            while (above + ties > kListCap && pbits < 32) refine<kGlobalItems>(global, n, prefix, pbits, need, above, ties, hist);
            if (above + ties <= kListCap) {
                const int m = above + ties;
                if (pool) {
                    gather_pool(pool, pool_parts, pool_total, 32 - pbits, prefix);
                } else {
                    ordered_pass<kGlobalItems>(global, n, 32 - pbits, prefix, INT_MAX, [&](int slot, uint32_t key, uint32_t pos) {
                        sh.list.key[slot] = key;
                        sh.list.pos[slot] = pos;
                    });
                }
                consumer_sync();
                const ListSource local{sh.list.key, sh.list.pos};
                // Once the threshold bin holds exactly the items still needed, all of them are taken.
                while (pbits < 32 && ties > need) refine<8>(local, m, prefix, pbits, need, above, ties, hist);
                ordered_pass<8>(local, m, 32 - pbits, prefix, need, emit);
            } else {
                ordered_pass<kGlobalItems>(global, n, 0, prefix, need, emit);  // exact ties beyond the list: stream them
            }
        }
        consumer_sync();
        if (sorted) {
            // Bitonic sort of the candidate keys, descending (larger key ranks first).
            int size = 1;
            while (size < taken) size <<= 1;
            for (int i = taken + ct; i < size; i += kConsumerThreads) sh.picked[i] = 0u;
            consumer_sync();
            group.sort_descending(sh.picked, size);
        }
        // Position order (as emitted) or rank order (sorted); each thread's block-table reads go out together.
        constexpr int kOut = kMaxTopk / kConsumerThreads;
        int32_t index[kOut];
#pragma unroll
        for (int e = 0; e < kOut; ++e) {
            const int i = ct + e * kConsumerThreads;
            index[e] = i < taken ? index_of(candidate_position(sh.picked[i])) : -1;
        }
#pragma unroll
        for (int e = 0; e < kOut; ++e) {
            const int i = ct + e * kConsumerThreads;
            if (i < taken) {
                out_idx[i] = index[e];
                if (out_score) out_score[i] = score_from_order_key(uint32_t(sh.picked[i] >> 32));
            }
        }
        for (int i = taken + ct; i < k; i += kConsumerThreads) {
            out_idx[i] = -1;
            if (out_score) out_score[i] = padding_score();
        }
        consumer_sync();
    }
};

// ---- the fused kernel ----------------------------------------------------------------------------------

// SingleLaunch (self-planned and launched alone, cooperatively; B <= the grid): the fused CTAs also clear the
// counters (clear_counters; the grid barrier orders the clears before the parts' first ticket or histogram-slot
// atomic) and pad the sequences with no tile (pad_unscored), which the kernel before them does otherwise. A
// template argument, not a flag: as a flag, its code, untaken, made the two-launch kernel 2.5% slower on 256x8192
// (bench/NOTES.md, session 29); so each path has its own kernel.
template <int H, int NN, bool SingleLaunch>
__global__ void __launch_bounds__(FusedRoles<NN>::kThreads, 1)
    decode_fused_kernel(const __grid_constant__ CUtensorMap key_map, FusedParams p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using Roles = FusedRoles<NN>;
    constexpr int kConsumerThreads = Roles::kConsumers;
    constexpr int kGroups = Roles::kConsumerGroups;
    using Smem = FusedSmem<H, NN>;
    using Math = WgmmaTileMath<H>;
    extern __shared__ __align__(128) uint8_t fused_smem_raw[];
    Smem& sh = *reinterpret_cast<Smem*>(fused_smem_raw + ((1024 - smem_address(fused_smem_raw) % 1024) % 1024));
    const PagedProblem& pb = p.pb;
    const int P = pb.shape.page_size;
    const int B = pb.batch_size;

    if (threadIdx.x == 0) {
        for (int s = 0; s < kFusedStages; ++s) {
            mbar_init(&sh.full[s], 1);
            mbar_init(&sh.empty[s], 4);  // one arrival per warp of the tile's warpgroup
        }
        mbar_init_fence();
    }
    if (threadIdx.x == 32) tensormap_prefetch(&key_map);
    const int c = blockIdx.x;
    // Self-planned, the unit prefix is this CTA's own scan. The even plan's fields (even_plan_of_cta's) are written
    // before the scan's barrier publishes them, with no search: thread 0 writes the unit range; the thread whose
    // sequence holds unit u0 (u1 - 1) writes b_first, end_a and its CTA range (b_last, start_b and theirs): that
    // sequence is the last one whose prefix is at most u0 (u1 - 1), the one even_plan_of_cta's searches find. A CTA
    // without units (c >= G) gets zeros. In a batch of more sequences than CTAs, the thread of each sequence the CTA
    // holds also prefetches into L2 the block-table entries of the CTA's first kPrefetchUnits units of it, which the
    // producers load first: the table may have left L2 between two calls, and this is one DRAM round trip fewer after
    // the barrier. A batch of at most G sequences takes the aligned plan where it fits instead (aligned_plan_by_warp,
    // whose warp prefetches): from warp 0's registers before the barrier where warp 0 holds the whole batch, else
    // from shared memory behind a second barrier.
    bool aligned_after_barrier = false;  // the aligned plan still to try, from shared memory
    if (p.self_planned) {
        if constexpr (SingleLaunch) clear_counters<NN>(p, int(gridDim.x));  // published by the grid barrier after the scan
        constexpr int kItems = kSelfPlanMax / Roles::kThreads + 1;  // covers sequences 0 .. kSelfPlanMax
        int before[kItems];
        int64_t tokens[kItems];
        const int U = scan_units<Roles::kThreads>(pb, 0, sh.plan_scan, before, tokens);
        const int G = min(int(gridDim.x), U);
        const bool aligned_batch = B <= G;
        // A batch that warp 0's lanes hold whole (kItems sequences each) gets its aligned plan from warp 0's
        // registers, before the barrier; where it fits, warp 0 skips the even plan's fields (the other warps hold
        // no sequence of it). Thread 0's walk of its sequences and the aligned plan behind a second barrier took
        // ~4,000 cycles of single-thread latency together (bench/NOTES.md, session 25).
        bool aligned = false;
        if (aligned_batch && B <= 32 * kItems && threadIdx.x < 32) {
            auto from_registers = [&](int b) {  // sequence b: lane b / kItems, item b % kItems (b < 32 kItems)
                int unit0 = 0, tok = 0;
#pragma unroll
                for (int t = 0; t < kItems; ++t) {
                    const int u = __shfl_sync(0xffffffffu, before[t], b / kItems);
                    const int n = __shfl_sync(0xffffffffu, int(tokens[t]), b / kItems);
                    if (t == b % kItems) unit0 = u, tok = n;
                }
                return b < B ? SequenceUnits{unit0, units_of(pb, tok), tok} : SequenceUnits{};
            };
            aligned = aligned_plan_by_warp(pb, p.page_shift, c, G, U, from_registers, &sh.plan);
        }
        aligned_after_barrier = aligned_batch && B > 32 * kItems;
        const bool has_units = c < G;
        const int u0 = has_units ? int(unit_begin(c, U, G)) : 0, u1 = has_units ? int(unit_begin(c + 1, U, G)) : 0;
        if (threadIdx.x == 0 && !aligned) {
            sh.plan.u0 = u0;
            sh.plan.u1 = u1;
            if (!has_units) sh.plan = CtaPlan{};
        }
#pragma unroll
        for (int t = 0; t < kItems; ++t) {
            const int b = int(threadIdx.x) * kItems + t;
            if (b <= B) sh.unit_prefix[b] = before[t];  // b == B: the total (no units past the batch)
            if (b < B) sh.seq_len[b] = int(tokens[t]);
            const int lo = before[t], hi = lo + units_of(pb, tokens[t]);  // [prefix(b), prefix(b + 1)): none past B
            if (aligned || !has_units || lo >= hi) continue;
            if (lo <= u0 && u0 < hi) {
                sh.plan.b_first = b;
                sh.plan.end_a = min(u1, hi);
                sh.plan.first_lo = cta_of(lo, U, G);
                sh.plan.first_hi = cta_of(hi - 1, U, G);
            }
            if (lo < u1 && u1 <= hi) {
                sh.plan.b_last = b;
                sh.plan.start_b = lo <= u0 ? u1 : lo;  // b_last == b_first: start_b = end_a = u1
                sh.plan.last_lo = cta_of(lo, U, G);
                sh.plan.last_hi = cta_of(hi - 1, U, G);
            }
            const int ua = max(lo, u0), ub = min(hi, min(u1, ua + kPrefetchUnits));
            if (!aligned_batch && ua < ub) prefetch_unit_entries_l2(pb, p.page_shift, b, tokens[t], ua - lo, ub - lo);
        }
    }
    __syncthreads();
    // Single launch: the first consumer thread arrives at the grid barrier for the CTA's clears (ordered before it
    // by the barrier above), and waits on it at the end of the CTA's first split segment.
    if (SingleLaunch && threadIdx.x == 128) {
        sh.clears_arrival = grid_barrier_arrive();
        sh.clears_pending = 1;
    }
    // The unit prefix, for every role: unit_prefix[b] is sequence b's first unit, [B] the batch's total.
    auto prefix_at = [&](int b) { return p.self_planned ? sh.unit_prefix[b] : __ldcg(p.unit_prefix + b); };
    if (!p.self_planned) {
        grid_dependency_wait();  // the plan kernel's outputs
        if (threadIdx.x == 0) sh.plan = load_plan(p.cta_plan + c);
        __syncthreads();
    } else if (aligned_after_barrier) {
        if (threadIdx.x < 32) {
            const int U = sh.unit_prefix[B];
            auto from_shared = [&](int b) {
                return b < B ? SequenceUnits{sh.unit_prefix[b], sh.unit_prefix[b + 1] - sh.unit_prefix[b], sh.seq_len[b]}
                             : SequenceUnits{};
            };
            aligned_plan_by_warp(pb, p.page_shift, c, min(int(gridDim.x), U), U, from_shared, &sh.plan);
        }
        __syncthreads();
    }
    // The plan's fields are read from shared memory where they are used: kept in registers, they made the
    // producers spill.
    const CtaPlan& plan = sh.plan;
    const int &u0 = plan.u0, &u1 = plan.u1;
    // Single launch: the producer warps write the rows of sequences with no tile once they have nothing left to issue
    // (a CTA without units at once): the padding of a short sequence, ~2 us of dependent block-table loads, held up
    // the scan's barrier of its CTA at entry, and the call's end wherever it delayed a part of a long sequence.
    auto pad_when_single_launch = [&]() {
        if (SingleLaunch && threadIdx.x < 128)
            pad_unscored<NN, 8>(p, int(blockIdx.x) * kProducerWarps + int(threadIdx.x) / 32, int(gridDim.x) * kProducerWarps);
    };
    // Behind the plan or clear kernel, every thread waits for it before it exits, so the call ends after its padding.
    if (u0 >= u1) {
        pad_when_single_launch();
        grid_dependency_wait();
        return;
    }

    if (threadIdx.x < 128) {
        // ---- producer warps ----
        // Each walks every tile and issues those of its stages (tile i by warp i % 4, the stage count a
        // multiple of 4): one warp alone spends ~1,200 cycles of dependent issue work per tile, 2.5x what the
        // K stream allows.
        if constexpr (Roles::kShrinkProducer) warpgroup_registers_shrink<Roles::kProducerRegisters>();
        const int lane = threadIdx.x % 32, producer_warp = threadIdx.x / 32;
        const int &b_first = plan.b_first, &b_last = plan.b_last, &end_a = plan.end_a, &start_b = plan.start_b;
        const int pages_per_unit = kUnitTokens / P;
        // The K cache is read once per call: its lines go first, so that the stream does not evict the scores
        // the parts and the selections read back, the block table, or the next call's hot inputs.
        const uint64_t stream_policy = l2_evict_first_policy();
        int i = 0;  // tiles issued
        // Lanes hold a window of 32 sequences (cur_b + lane): unit range and length, so a batch of 32 tiles
        // finds its sequences by shuffles. The next batch's block-table entries load while this batch's
        // tiles are issued, and the window moves ahead before it runs out, so no issue waits on memory.
        int cur_b = 0, start_l = 0, end_l = 0, len_l = 0;
        auto load_window = [&](int first) {
            cur_b = first;
            const int sb = first + lane;
            start_l = sb < B ? prefix_at(sb) : INT_MAX;
            end_l = sb < B ? prefix_at(sb + 1) : INT_MAX;
            len_l = sb >= B ? 0 : p.self_planned ? sh.seq_len[sb] : __ldcg(pb.seq_lens + sb);
        };
        struct Batch {
            int nb, npages, e0, e1;
        };
        auto plan_batch = [&](int base, int ub) {
            Batch t{};
            const int u = base + lane;
            int cnt;
            for (;;) {
                cnt = 0;
#pragma unroll
                for (int l = 0; l < 32; ++l) cnt += __shfl_sync(0xffffffffu, end_l, l) <= u;
                t.nb = __popc(__ballot_sync(0xffffffffu, u < ub && cnt < 32));
                if (t.nb > 0) break;
                load_window(cur_b + 32);  // 32 sequences (empty ones) end before this tile
            }
            const int at = min(cnt, 31);
            const int seq_start = __shfl_sync(0xffffffffu, start_l, at);
            const int64_t tokens = __shfl_sync(0xffffffffu, len_l, at);
            if (lane < t.nb) {
                const int unit = u - seq_start;
                const int64_t left = tokens - int64_t(unit) * kUnitTokens;
                t.npages = int(((left < kUnitTokens ? left : kUnitTokens) + P - 1) / P);
                const int32_t* row =
                    pb.block_table + int64_t(cur_b + at) * pb.block_table_stride + int64_t(unit) * pages_per_unit;
                t.e0 = __ldg(row);
                t.e1 = t.npages > 1 ? __ldg(row + 1) : 0;
            }
            const int last_at = __shfl_sync(0xffffffffu, at, t.nb - 1);
            if (last_at >= 16) load_window(cur_b + last_at);  // used by the next batch, not this one
            return t;
        };
        auto issue = [&](const Batch& t) {
            for (int x = 0; x < t.nb; ++x, ++i) {
                if (i % kProducerWarps != producer_warp) continue;
                const int e0 = __shfl_sync(0xffffffffu, t.e0, x);
                const int e1 = __shfl_sync(0xffffffffu, t.e1, x);
                const int np = __shfl_sync(0xffffffffu, t.npages, x);
                const bool bad = !page_entry_in_range(e0, pb.num_pages) || (np > 1 && !page_entry_in_range(e1, pb.num_pages));
                if (lane == 0) {
                    const int s = i % kFusedStages;
                    if (i >= kFusedStages) mbar_wait(&sh.empty[s], uint32_t((i / kFusedStages - 1) & 1));
                    sh.tile_bad[s] = bad;
                    if (bad) {
                        mbar_arrive(&sh.full[s]);
                    } else {
                        mbar_expect_tx(&sh.full[s], uint32_t(np * P * kTokenBytes));
                        for (int pg = 0; pg < np; ++pg) {
                            const int page = pg == 0 ? e0 : e1;
                            tma_load_3d(sh.keys[s] + pg * P * kHeadDim, &key_map, page, &sh.full[s], stream_policy);
                            bulk_load(&sh.scales[s][pg * P], pb.k_cache + int64_t(page) * pb.page_stride_bytes + P * kHeadDim,
                                      uint32_t(P * kScaleBytes), &sh.full[s], stream_policy);
                        }
                    }
                }
                __syncwarp();
            }
        };
        auto emit_interval = [&](int ua, int ub, int first_b) {
            if (ua >= ub) return;
            load_window(first_b);
            Batch cur = plan_batch(ua, ub);
            for (int base = ua + cur.nb;; base += cur.nb) {
                const bool more = base < ub;
                Batch next{};
                if (more) next = plan_batch(base, ub);
                issue(cur);
                if (!more) break;
                cur = next;
            }
        };
        emit_interval(u0, end_a, b_first);
        if (b_last != b_first) emit_interval(start_b, u1, b_last);
        emit_interval(end_a, start_b, b_first + 1);
        pad_when_single_launch();
        grid_dependency_wait();
        return;
    }

    // ---- consumer warpgroups ----
    // Warpgroup g scores the CTA's tiles i with i % kGroups == g and touches no other tile's barriers: the
    // segments (this CTA's part of one sequence) follow from the plan in the producers' order, so only their
    // starts and ends are CTA-wide steps.
    if constexpr (Roles::kShrinkProducer) warpgroup_registers_grow<Roles::kConsumerRegisters>();
    const int ct = threadIdx.x - 128;
    // From the unsigned thread index: ptxas cannot tell that ct >= 0, and carried its sign through the tile loop.
    const int wg = int((threadIdx.x - 128) / 128);
    const int warp_in_wg = int(threadIdx.x / 32 % 4), lane = int(threadIdx.x % 32);
    const int quad_row = lane >> 2, quad_col = lane & 3;
    Selector<H, NN> sel{sh, ct};

    // A sequence short enough to be selected in registers has its block-table row in shared memory.
    auto table_in_shared = [](int64_t tokens) { return tokens > 0 && tokens <= kRegRowMax; };
    // A segment's query rows (fp8, 128B-swizzled for wgmma) by cp.async, and its weights; and its block-table
    // row when table_in_shared (same cp.async group, so it adds no wait), which the selection's output reads
    // instead of global memory.
    auto load_queries = [&](int b) {
        const uint8_t* q = pb.q + int64_t(b) * NN * H * kHeadDim;
        for (int idx = ct; idx < NN * H * (kHeadDim / 16); idx += kConsumerThreads) {
            const int qrow = idx / (kHeadDim / 16), chunk = idx % (kHeadDim / 16);
            cp_async_16(sh.q + swizzled_offset(qrow, chunk), q + int64_t(qrow) * kHeadDim + chunk * 16, 16);
        }
        const int64_t tokens = sequence_tokens(pb, b);  // -1 for a bad length (such a sequence has no tiles)
        if (pb.shape.index_mode != IndexMode::PagedLogical && table_in_shared(tokens)) {
            const int32_t* table = pb.block_table + int64_t(b) * pb.block_table_stride;
            for (int i = ct; i < pages_holding(tokens, P); i += kConsumerThreads) cp_async_4(sh.seg_table + i, table + i, 4);
        }
        cp_async_commit();
        const float* w = pb.weights + int64_t(b) * NN * H;
        for (int idx = ct; idx < NN * H; idx += kConsumerThreads) sh.w[idx] = w[idx];
    };
    const int &b_first = plan.b_first, &b_last = plan.b_last, &end_a = plan.end_a, &start_b = plan.start_b;
    load_queries(b_first);  // before the first segment's setup: its latency overlaps the pipeline's start
    int tile_base = 0;      // the CTA's tile index of the segment's first tile
    // Operand descriptors of stage 0's keys and of the queries; the address field (bits 0-13, 16-byte units)
    // of any other stage or k-step is an add away, with no carry out of it inside shared memory.
    const uint64_t key_desc = Math::descriptor(sh.keys[0]), q_desc = Math::descriptor(sh.q);

    // The segments in the producers' order: the shared first and last sequences, then the whole ones between.
    // Segment k scores this CTA's units [ua, ub) of sequence b, then selects b's rows if they are complete.
    const int middle_first = b_last != b_first ? 2 : 1;  // k of sequence b_first + 1
    for (int k = 0;; ++k) {
        int b, ua, ub, seg_prefix, seg_end;
        if (k < middle_first) {
            b = k == 0 ? b_first : b_last;
            ua = k == 0 ? u0 : start_b;
            ub = k == 0 ? end_a : u1;
            seg_prefix = prefix_at(b);
            seg_end = prefix_at(b + 1);
        } else {
            b = b_first + 1 + k - middle_first;
            if (b >= b_last) break;
            ua = seg_prefix = prefix_at(b);
            ub = seg_end = prefix_at(b + 1);
            if (ua >= ub) continue;  // an empty sequence
        }
        const int seg_units = seg_end - seg_prefix;
        const int64_t seg_tokens = pb.seq_lens[b];
        const bool seg_split = !(seg_prefix >= u0 && seg_prefix + seg_units <= u1);
        const bool seg_hist = seg_tokens > kRegRowMax;  // shorter rows are selected in registers, histogram included
        if (tile_base > 0) load_queries(b);
        for (int idx = ct; idx < NN * kBins; idx += kConsumerThreads) (&sh.hist[0][0])[idx] = 0;
        if (ct == 0) sh.seg_bad = 0;
        cp_async_wait<0>();
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        consumer_sync<kConsumerThreads>();

        float* seg_scores = p.scores + int64_t(seg_prefix) * kUnitTokens * NN;
        const int tile_end = tile_base + ub - ua;
        const int64_t unit_of_tile = ua - seg_prefix - tile_base;  // tile i scores unit unit_of_tile + i of b
        const int r0 = warp_in_wg * 16 + quad_row;
        for (int i = tile_base + (wg - tile_base % kGroups + kGroups) % kGroups; i < tile_end; i += kGroups) {
            const int s = i % kFusedStages;
            mbar_wait(&sh.full[s], uint32_t((i / kFusedStages) & 1));
            if (sh.tile_bad[s]) {
                if (ct % 128 == 0) sh.seg_bad = 1;
                __syncwarp();
                if (lane == 0) mbar_arrive(&sh.empty[s]);
                continue;
            }
            float d[NN][Math::kAcc];
#pragma unroll
            for (int j = 0; j < NN; ++j) Math::fence_accumulators(d[j]);
            Math::wgmma_fence();
#pragma unroll
            for (int j = 0; j < NN; ++j)
#pragma unroll
                for (int ks = 0; ks < 4; ++ks) {
                    const uint64_t a = key_desc + uint64_t((s * int(sizeof(sh.keys[0])) + ks * 32) >> 4);
                    const uint64_t bq = q_desc + uint64_t((j * H * kHeadDim + ks * 32) >> 4);
                    if (ks == 0) Math::template wgmma<0>(d[j], a, bq);
                    else Math::template wgmma<1>(d[j], a, bq);
                }
            wgmma_commit();
            const float sc0 = sh.scales[s][r0], sc1 = sh.scales[s][r0 + 8];  // read while the wgmma runs
            wgmma_wait<0>();
#pragma unroll
            for (int j = 0; j < NN; ++j) Math::fence_accumulators(d[j]);
            __syncwarp();
            if (lane == 0) mbar_arrive(&sh.empty[s]);
            const int64_t p0 = (unit_of_tile + i) * kUnitTokens + r0;
#pragma unroll
            for (int j = 0; j < NN; ++j) {
                // Two independent chains per token, so the FMAs' latency overlaps.
                float chain[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
#pragma unroll
                for (int x = 0; x < H / 8; ++x) {
                    // Weights from shared memory: kept in registers, they made the accumulators spill.
                    const float2 w = *reinterpret_cast<const float2*>(&sh.w[j * H + x * 8 + 2 * quad_col]);
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        float& c = chain[half][x & 1];
                        c = fmaf(w.x, relu_nan(d[j][x * 4 + 2 * half]), fmaf(w.y, relu_nan(d[j][x * 4 + 2 * half + 1]), c));
                    }
                }
                float part[2] = {chain[0][0] + chain[0][1], chain[1][0] + chain[1][1]};
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    part[half] += __shfl_xor_sync(0xffffffffu, part[half], 1);
                    part[half] += __shfl_xor_sync(0xffffffffu, part[half], 2);
                }
                // Lane quad_col 0 reports token r0, lane 1 token r0 + 8.
                const int64_t visible = visible_positions(seg_tokens, NN, j);
                const int64_t pos = p0 + (quad_col == 1 ? 8 : 0);
                const float score = quad_col == 1 ? sc1 * part[1] : sc0 * part[0];
                if (quad_col < 2 && pos < visible) {
                    seg_scores[int64_t(j) * seg_units * kUnitTokens + pos] = score;
                    // The part's level-1 histogram, complete at the barrier after the tile loop. A plain
                    // increment: the atomic unit merges a warp's equal bins (ATOMS.POPC.INC); grouping them
                    // first with __match_any_sync cost as much as the rest of the epilogue (session 6).
                    if (seg_hist) atomicAdd(&sh.hist[j][score_order_key(score) >> kBinShift], 1);
                }
            }
        }
        tile_base = tile_end;

        // ---- the segment's tiles are all scored ----
        // Single launch: the atomics of a split segment (below) must follow every CTA's clears: the first consumer
        // thread waits for the grid barrier once, before the first such segment's barrier here, which orders the
        // wait before every consumer's atomics (the round trip overlaps the other warps' last epilogues).
        if (SingleLaunch && ct == 0 && seg_split && sh.clears_pending) {  // only this thread touches clears_pending
            grid_barrier_wait(sh.clears_arrival);
            sh.clears_pending = 0;
        }
        consumer_sync<kConsumerThreads>();
        bool bad = sh.seg_bad != 0;
        // Row j's scores, this CTA's part of them ([part_begin, part_end(j)): the part starts at a unit, so it
        // is 16-byte aligned), the CTAs holding parts of the sequence, and row j's pool records.
        auto row_scores = [&](int j) { return seg_scores + int64_t(j) * seg_units * kUnitTokens; };
        const int part_begin = (ua - seg_prefix) * kUnitTokens;
        auto part_end = [&](int j) {
            return int(min(int64_t(ub - seg_prefix) * kUnitTokens, visible_positions(seg_tokens, NN, j)));
        };
        // The CTAs holding parts of b (a middle sequence is this CTA's alone).
        const int c_lo = k == 0 ? plan.first_lo : k < middle_first ? plan.last_lo : int(blockIdx.x);
        const int c_hi = k == 0 ? plan.first_hi : k < middle_first ? plan.last_hi : int(blockIdx.x);
        auto pool_records = [&](int j) { return p.pool_parts + (int64_t(c_lo) * NN + j) * kMaxCtas; };
        if (seg_split) {
            // The clears of tickets, slots and the pool counter precede the atomics below: the plan or clear kernel's
            // (griddepcontrol.wait), or, in a single launch, every fused CTA's (the grid barrier, waited for above).
            grid_dependency_wait();
            int* slot = p.hist_slots + int64_t(c_lo) * NN * kBins;
            for (int idx = ct; seg_hist && idx < NN * kBins; idx += kConsumerThreads) {
                const int v = (&sh.hist[0][0])[idx];
                if (v) atomicAdd(slot + idx, v);
            }
            if (seg_tokens > kPoolRowMin && p.pool && !bad) {
                for (int j = 0; j < NN; ++j) {
                    if (visible_positions(seg_tokens, NN, j) <= kPoolRowMin) continue;
                    int2* record = pool_records(j) + (int(blockIdx.x) - c_lo);
                    if (part_end(j) <= part_begin) {  // the part holds none of this row's positions (an MTP
                        if (ct == 0) *record = make_int2(0, 0);  // row's last tokens)
                        continue;
                    }
                    sel.pool_part(row_scores(j), part_begin, part_end(j), pb.shape.topk, slot + j * kBins, sh.hist[j],
                                  sh.hist_next, p, record);
                }
            }
            // The barrier orders every thread's scores and histogram adds before thread 0's ticket, whose
            // release publishes them; for the last arrival its acquire orders the reads below (behind the
            // next barrier) after every part's. ticket_last is rewritten only at the next split segment's
            // end, behind barriers every thread reaches after reading it. The ticket also carries the parts'
            // bad flags, so the last arrival learns the sequence's state from it, without a second round trip.
            consumer_sync<kConsumerThreads>();
            if (ct == 0) {
                const int before = fetch_add_acq_rel_gpu(p.tickets + b, bad ? 1 + kTicketBad : 1);
                const bool last = (before & (kTicketBad - 1)) == c_hi - c_lo;
                sh.ticket_last = last ? 1 + (bad || before >= kTicketBad) : 0;  // 2: last, and the sequence is bad
            }
            consumer_sync<kConsumerThreads>();
            if (!sh.ticket_last) continue;
            bad = sh.ticket_last == 2;
            for (int idx = ct; seg_hist && idx < NN * kBins; idx += kConsumerThreads) (&sh.hist[0][0])[idx] = __ldcg(slot + idx);
            consumer_sync<kConsumerThreads>();
        }
        const int32_t* table =
            table_in_shared(seg_tokens) ? sh.seg_table : pb.block_table + int64_t(b) * pb.block_table_stride;
        auto index_of = [&](uint32_t pos) { return paged_index(pb, table, p.page_shift, pos); };
        for (int j = 0; j < NN; ++j) {
            const int64_t r = int64_t(b) * NN + j;
            const int n = bad ? 0 : int(visible_positions(seg_tokens, NN, j));
            if (bad && ct == 0) *p.error_flag = 1;
            const uint64_t* pool = nullptr;
            int parts = 0, pool_total = 0;
            if (seg_split && n > kPoolRowMin && p.pool) {
                parts = c_hi - c_lo + 1;
                pool_total = sel.load_pool_parts(pool_records(j), parts, p.pool_capacity);
                if (pool_total >= 0) pool = p.pool;
            }
            sel.select_row(r, n, row_scores(j), sh.hist[j], seg_hist, index_of, pb, pool, parts, pool_total);
        }
    }
    grid_dependency_wait();
#else
    __trap();  // launched only when the sm_90a image is present (decode_fused_available)
#endif
}

// ---- host side -----------------------------------------------------------------------------------------

struct FusedLayout {
    size_t prefix = 0, cta_plan = 0, tickets = 0, hist = 0, scores = 0, pool = 0, pool_used = 0,
           pool_parts = 0, total = 0;
    int64_t pool_capacity = 0;  // 0: no row can be longer than kPoolRowMin, no pool
};

FusedLayout fused_layout(const PagedProblem& pb) {
    FusedLayout l;
    size_t at = 0;
    auto take = [&](size_t bytes) {
        const size_t here = at;
        at += (bytes + 255) / 256 * 256;
        return here;
    };
    const int64_t B = pb.batch_size, NN = pb.shape.next_n;
    const int64_t units_max = (int64_t(pb.max_pages) * pb.shape.page_size + kUnitTokens - 1) / kUnitTokens;
    l.prefix = take(size_t(B + 1) * 4);
    l.cta_plan = take(size_t(kMaxCtas) * sizeof(CtaPlan));
    l.tickets = take(size_t(B) * 4);
    l.hist = take(size_t(kMaxCtas) * NN * kBins * 4);
    l.scores = take(size_t(B) * units_max * kUnitTokens * NN * 4);
    if (units_max * kUnitTokens > kPoolRowMin) {
        // Every entry of the pool is a position of a long split row: no more than the positions there are.
        l.pool_capacity = std::min(kPoolMaxEntries, B * units_max * kUnitTokens * NN);
        l.pool = take(size_t(l.pool_capacity) * 8);
        l.pool_used = take(8);
        l.pool_parts = take(size_t(kMaxCtas) * NN * kMaxCtas * sizeof(int2));
    }
    l.total = at;
    return l;
}

template <int H, int NN>
cudaError_t launch_fused(const PagedProblem& pb, int sm_count, bool two_launches, const FusedLayout& l, uint8_t* ws,
                         int* error_flag, cudaStream_t stream) {
    CUtensorMap map;
    const cuuint64_t dims[3] = {cuuint64_t(kHeadDim), cuuint64_t(pb.shape.page_size), cuuint64_t(pb.num_pages)};
    const cuuint64_t strides[2] = {cuuint64_t(kHeadDim), cuuint64_t(pb.page_stride_bytes)};
    const cuuint32_t box[3] = {cuuint32_t(kHeadDim), cuuint32_t(pb.shape.page_size), 1};
    cudaError_t err = encode_rows_128b(&map, 3, pb.k_cache, dims, strides, box);
    if (err != cudaSuccess) return err;

    FusedParams params;
    params.pb = pb;
    params.page_shift = log2_of(pb.shape.page_size);
    const int ctas = std::max(1, std::min(sm_count, kMaxCtas));
    params.self_planned = pb.batch_size <= kSelfPlanMax;
    params.unit_prefix = reinterpret_cast<int*>(ws + l.prefix);
    params.cta_plan = reinterpret_cast<CtaPlan*>(ws + l.cta_plan);
    params.tickets = reinterpret_cast<int*>(ws + l.tickets);
    params.hist_slots = reinterpret_cast<int*>(ws + l.hist);
    params.scores = reinterpret_cast<float*>(ws + l.scores);
    params.pool = l.pool_capacity ? reinterpret_cast<uint64_t*>(ws + l.pool) : nullptr;
    params.pool_used = l.pool_capacity ? reinterpret_cast<unsigned long long*>(ws + l.pool_used) : nullptr;
    params.pool_parts = l.pool_capacity ? reinterpret_cast<int2*>(ws + l.pool_parts) : nullptr;
    params.pool_capacity = int(l.pool_capacity);
    params.error_flag = error_flag;

    constexpr int smem = int(sizeof(FusedSmem<H, NN>)) + 1024;
    static_assert(smem <= kMaxSmemPerBlock);
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(unsigned(ctas));
    config.blockDim = dim3(FusedRoles<NN>::kThreads);
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    cudaLaunchAttribute attribute{};
    config.attrs = &attribute;
    config.numAttrs = 1;
    if (params.self_planned && pb.batch_size <= ctas) {
        // One launch, whose grid barrier needs every CTA resident at once: a cooperative launch (one CTA per
        // SM, as the kernel is built for). Where the device cannot hold them all (a partition of it smaller
        // than sm_count) or takes no cooperative launch, the two launches of a larger batch, which need no
        // CTA resident beside another; two_launches takes them on any device, to verify them.
        if (!two_launches) {
            constexpr auto alone = decode_fused_kernel<H, NN, true>;
            err = allow_dynamic_smem<alone>(smem);
            if (err != cudaSuccess) return err;
            attribute.id = cudaLaunchAttributeCooperative;
            attribute.val.cooperative = 1;
            err = cudaLaunchKernelEx(&config, alone, map, params);
            if (err != cudaErrorCooperativeLaunchTooLarge && err != cudaErrorNotSupported) return err;
            (void)cudaGetLastError();  // that launch's error (not sticky), which the fallback replaces
        }
    }
    if (params.self_planned) {
        // The SM's shared memory is split off L1 when its first CTA starts: the clear CTAs (none of their
        // own) ask for the most, so a fused CTA fits beside them.
        constexpr auto clear = decode_clear_kernel<NN>;
        err = set_attribute_once<clear, cudaFuncAttributePreferredSharedMemoryCarveout>(cudaSharedmemCarveoutMaxShared);
        if (err != cudaSuccess) return err;
        clear<<<ctas, FusedRoles<NN>::kClearThreads, 0, stream>>>(params, ctas);
    } else {
        decode_plan_kernel<NN><<<ctas, kPlanThreads, 0, stream>>>(params, ctas);
    }
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
    constexpr auto behind = decode_fused_kernel<H, NN, false>;
    err = allow_dynamic_smem<behind>(smem);
    if (err != cudaSuccess) return err;
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    return cudaLaunchKernelEx(&config, behind, map, params);
}

template <int H>
cudaError_t launch_fused_rows(const PagedProblem& pb, int sm_count, bool two_launches, const FusedLayout& l, uint8_t* ws,
                              int* error_flag, cudaStream_t stream) {
    switch (pb.shape.next_n) {
        case 1: return launch_fused<H, 1>(pb, sm_count, two_launches, l, ws, error_flag, stream);
        case 2: return launch_fused<H, 2>(pb, sm_count, two_launches, l, ws, error_flag, stream);
        case 3: return launch_fused<H, 3>(pb, sm_count, two_launches, l, ws, error_flag, stream);
        default: return launch_fused<H, 4>(pb, sm_count, two_launches, l, ws, error_flag, stream);
    }
}

}  // namespace

bool decode_fused_available(const PagedProblem& pb, int compute_capability) {
    return DSA_KERNELS_HAVE_SM90A && compute_capability == 90 && pb.num_pages > 0 &&
           pb.num_pages <= (int64_t(1) << 31) && pb.page_stride_bytes % 16 == 0 &&
           reinterpret_cast<uintptr_t>(pb.k_cache) % 16 == 0 && pb.shape.topk <= kMaxTopk &&
           encode_tiled() != nullptr;
}

size_t decode_fused_workspace_bytes(const PagedProblem& pb) { return pb.rows() == 0 ? 0 : fused_layout(pb).total; }

cudaError_t decode_fused_topk(const PagedProblem& pb, int sm_count, bool two_launches, void* workspace,
                              int* error_flag, cudaStream_t stream) {
    if (pb.rows() == 0) return cudaSuccess;
    const FusedLayout l = fused_layout(pb);
    uint8_t* ws = static_cast<uint8_t*>(workspace);
    return pb.shape.num_heads == 64 ? launch_fused_rows<64>(pb, sm_count, two_launches, l, ws, error_flag, stream)
                                    : launch_fused_rows<32>(pb, sm_count, two_launches, l, ws, error_flag, stream);
}

}  // namespace dsa::kernels
