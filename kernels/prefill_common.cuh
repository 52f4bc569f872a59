// The row-level pieces of the fused prefill kernel (prefill_pairs.cu): the row candidate buffer's size and
// histogram, the early compaction's estimate, the threshold a keep leaves behind, a job's rows and windows, the TMA
// maps, the grid and the launch, a warpgroup's barrier, what one warp does to a row's buffer (keep its best), and
// how a row's results are stored.
#pragma once

#include <algorithm>
#include <climits>
#include <cstdint>

#include <cuda.h>

#include "common/order_key.h"
#include "common/problem.hpp"
#include "kernels/launch_once.cuh"
#include "kernels/sm90.cuh"
#include "kernels/warp_select.cuh"

namespace dsa::kernels {

constexpr int kCandidateCap = 4096;  // candidates a row buffers before keeping its best k
static_assert(kCandidateCap % kWarpSelectSpan == 0, "a row's buffer is readable up to its count rounded up a span");
constexpr int kRowBins = 1024;  // each row's running histogram of its buffer: the order key's top 10 bits
constexpr int kRowBinShift = 22;
static_assert(kRowBins == kWarpSelectBins, "a row's histogram is the warp selection's level 1");
// A row longer than the buffer compacts first once it holds kEstimateAt candidates, keeping an estimate of its
// window's (k + kEstimateSigmas sigma)-th best.
constexpr int kEstimateAt = 1024;
constexpr float kEstimateSigmas = 4.0f;

// How many of the n keys seen so far of a row's window should reach an estimate of the window's
// (k + kEstimateSigmas sigma)-th best: r0 + kEstimateSigmas sqrt(r0), r0 = k n / window (the share of k those n
// keys hold). Fast approximations (no IEEE slow paths in the loop's code): an estimate either way.
__device__ __forceinline__ int estimate_rank(int k, int n, int window) {
    const float r0 = __fdividef(float(k) * float(n), float(window));
    return int(ceilf(r0 + kEstimateSigmas * r0 * rsqrtf(r0)));
}

// A read-only global load the compiler keeps where it is written (volatile): issued before a wait, its
// latency overlaps the wait.
__device__ __forceinline__ float load_global_nc(const float* p) {
    float v;
    asm volatile("ld.global.nc.f32 %0, [%1];\n" : "=f"(v) : "l"(p));
    return v;
}

// The threshold a candidate arriving after a row kept its best must reach to matter, from the keep's threshold
// prefix (the key's bits above shift): above the last kept key, or that key's bin when the refinement stopped
// early (a lower bound, which only lets a few more through). The largest key is +inf's: no overflow.
__device__ __forceinline__ uint32_t threshold_after_keep(uint32_t prefix, int shift) {
    return shift == 0 ? prefix + 1u : prefix << shift;
}

// A prefill kernel's parameters besides its TMA maps.
struct PrefillParams {
    RaggedProblem pb;
    uint2* candidates;  // [slots][the job's rows][kCandidateCap] of (order key, key number): a warpgroup's slot
    int num_jobs;
    int* error_flag;
};

// A job: rows [r0, r0 + rows) and the union [lo, lo + tile x tiles) of the windows of its scored rows.
template <int Rows>
struct PrefillJob {
    int r0, rows;
    int start[Rows], end[Rows];  // empty for a row past the end or with a bad window
    int ok;                      // bit j: row j's window obeys the data rule
    int unscored;                // bit j: row j returns its whole window without scores
    int lo, tiles;
};

// Reads into job the rows [r0, r0 + Rows) of pb (fewer at the end), their windows in tiles of Tile keys. A bad
// window leaves its row empty and sets *error_flag where `report` (one of the threads that read the same job).
template <int Rows, int Tile>
__device__ __forceinline__ void read_prefill_job(PrefillJob<Rows>& job, const RaggedProblem& pb, int r0,
                                                 int* error_flag, bool report) {
    job.r0 = r0;
    job.rows = min(Rows, pb.num_rows - r0);
    job.ok = job.unscored = 0;
    int lo = INT_MAX, hi = 0;
#pragma unroll
    for (int j = 0; j < Rows; ++j) {
        job.start[j] = job.end[j] = 0;
        if (j >= job.rows) continue;
        const int s = __ldg(pb.row_start + r0 + j), e = __ldg(pb.row_end + r0 + j);
        if (!ragged_window_in_range(s, e, pb.num_keys)) {
            if (report) *error_flag = 1;
            continue;
        }
        job.ok |= 1 << j;
        job.start[j] = s;
        job.end[j] = e;
        if (row_needs_no_scores(pb.shape, pb.out, e - s)) {
            job.unscored |= 1 << j;
            continue;
        }
        if (e > s) {
            lo = min(lo, s);
            hi = max(hi, e);
        }
    }
    job.lo = lo;
    job.tiles = hi > lo ? (hi - lo + Tile - 1) / Tile : 0;
}

// The TMA maps of a prefill kernel (host side): the keys in boxes of key_rows keys, the queries in boxes of a job's
// query_rows rows of `heads` heads; rows of 128 bytes with the 128B swizzle.
inline cudaError_t encode_prefill_maps(const RaggedProblem& pb, int heads, int key_rows, int query_rows,
                                       CUtensorMap* key_map, CUtensorMap* q_map) {
    const cuuint64_t row_stride[1] = {cuuint64_t(kHeadDim)};
    const cuuint64_t key_dims[2] = {cuuint64_t(kHeadDim), cuuint64_t(pb.num_keys)};
    const cuuint32_t key_box[2] = {cuuint32_t(kHeadDim), cuuint32_t(key_rows)};
    const cudaError_t err = encode_rows_128b(key_map, 2, pb.k, key_dims, row_stride, key_box);
    if (err != cudaSuccess) return err;
    const cuuint64_t q_dims[2] = {cuuint64_t(kHeadDim), cuuint64_t(pb.num_rows) * cuuint64_t(heads)};
    const cuuint32_t q_box[2] = {cuuint32_t(kHeadDim), cuuint32_t(query_rows * heads)};
    return encode_rows_128b(q_map, 2, pb.q, q_dims, row_stride, q_box);
}

// A prefill kernel's grid (host side): jobs of `rows` query rows, `slots` of them worked at once by a CTA (its
// warpgroups, each with a candidate buffer per row), at most one CTA an SM.
struct PrefillGrid {
    int rows;
    int slots;
    int64_t jobs(const RaggedProblem& pb) const { return (int64_t(pb.num_rows) + rows - 1) / rows; }
    int ctas(const RaggedProblem& pb, int sm_count) const {
        return int(std::max<int64_t>(1, std::min<int64_t>(sm_count, (jobs(pb) + slots - 1) / slots)));
    }
    size_t workspace_bytes(const RaggedProblem& pb, int sm_count) const {
        return pb.rows() == 0 ? 0 : size_t(ctas(pb, sm_count)) * slots * rows * kCandidateCap * sizeof(uint2);
    }
};

// Launches Kernel, one of the prefill kernels, over `grid` with `threads` threads and `smem` bytes of dynamic shared
// memory: its TMA maps (keys in boxes of key_rows), its parameters and its shared-memory allowance.
template <auto Kernel>
cudaError_t launch_prefill_kernel(const RaggedProblem& pb, PrefillGrid grid, int heads, int key_rows, int threads,
                                  int smem, int sm_count, void* workspace, int* error_flag, cudaStream_t stream) {
    CUtensorMap key_map, q_map;
    cudaError_t err = encode_prefill_maps(pb, heads, key_rows, grid.rows, &key_map, &q_map);
    if (err != cudaSuccess) return err;
    PrefillParams params;
    params.pb = pb;
    params.candidates = static_cast<uint2*>(workspace);
    params.num_jobs = int(grid.jobs(pb));
    params.error_flag = error_flag;
    err = allow_dynamic_smem<Kernel>(smem);
    if (err != cudaSuccess) return err;
    Kernel<<<grid.ctas(pb, sm_count), threads, smem, stream>>>(key_map, q_map, params);
    return cudaGetLastError();
}

// A warpgroup's barrier: named barrier 1 + id over its 128 threads.
struct WarpgroupSync {
    int id;
    __device__ void operator()() const { asm volatile("bar.sync %0, 128;\n" ::"r"(1 + id) : "memory"); }
};

// Output slot `slot` of a row: its index and, where scores are asked for, its score. Streaming stores (__stcs:
// evicted first from L2): nothing here reads the outputs again, and they must not push the rows' candidate buffers
// out of L2.
__device__ __forceinline__ void store_output(int32_t* out_idx, float* out_score, int slot, int32_t index,
                                             float score) {
    __stcs(out_idx + slot, index);
    if (out_score) __stcs(out_score + slot, score);
}
// A row's output slots first, first + Stride, ... below k (streaming stores, as store_output's): its window's
// positions (a row that needs no scores), then padding.
template <int Stride>
__device__ __forceinline__ void write_row_window(int32_t* out_idx, int k, int start, int end, int32_t base,
                                                 int first) {
    for (int i = first; i < k; i += Stride) __stcs(out_idx + i, start + i < end ? start + i - base : -1);
}
// The same slots: all `taken` (<= k) candidates of buf, then padding.
template <int Stride>
__device__ __forceinline__ void write_row_candidates(int32_t* out_idx, float* out_score, int k, const uint2* buf,
                                                     int taken, int32_t base, int first) {
    for (int i = first; i < k; i += Stride) {
        const uint2 c = i < taken ? __ldcg(buf + i) : make_uint2(0u, 0u);
        __stcs(out_idx + i, i < taken ? int32_t(c.y) - base : -1);
        if (out_score) __stcs(out_score + i, i < taken ? score_from_order_key(c.x) : padding_score());
    }
}

// Keeps the best `keep` (< n) of the n candidates of buf in place, in position order, and row_hist with them, by
// the calling warp alone. Returns threshold_after_keep.
__device__ __forceinline__ uint32_t warp_keep_best(uint2* buf, int n, int keep, int* row_hist, int* warp_hist,
                                                   int lane) {
    const WarpSelect list{buf, n};
    const WarpSelect::Threshold th = list.threshold<kRowBinShift>(keep, row_hist, warp_hist);
    list.keep_in_order(keep, th,
                       [&](int slot, uint32_t key, uint32_t position) { buf[slot] = make_uint2(key, position); });
    __syncwarp();  // row_hist's reads (level 1) are done
    // What stays: every bin above bin1 whole, keep - above1 of bin1, nothing below.
    for (int i = lane; i <= th.bin1; i += 32) row_hist[i] = i == th.bin1 ? keep - th.above1 : 0;
    return threshold_after_keep(th.prefix, th.shift);
}

}  // namespace dsa::kernels
