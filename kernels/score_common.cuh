// Pieces shared by the scoring kernels: where a group of query rows finds its keys, and how a tile of
// 128 tokens is staged in shared memory. A "group" is the set of query rows that read the same keys:
// the next_n rows of one paged sequence, or one ragged row.
#pragma once

#include <cstdint>

#include "common/problem.hpp"

namespace dsa::kernels {

constexpr int kTileTokens = 128; // tokens per shared-memory tile
constexpr int kScoreThreads = 128;
constexpr int kTileBytes = kTileTokens * kHeadDim;

// Row-major 128-byte rows with the 16-byte chunks XOR-swizzled by (row % 8): both the per-thread row reads
// of the portable kernel and the 8-row ldmatrix reads of the tensor-core kernel are bank-conflict free.
__device__ __forceinline__ uint32_t swizzled_offset(int row, int chunk) {
    return uint32_t(row) * kHeadDim + uint32_t((chunk ^ (row & 7)) << 4);
}

__device__ __forceinline__ uint32_t smem_address(const void* p) {
    return uint32_t(__cvta_generic_to_shared(p));
}

// 16-byte asynchronous copy; src_bytes 0 zero-fills the destination without reading the source.
__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_4(void* dst, const void* src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_address(dst)), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int Pending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(Pending)); }

// Paged keys of sequence b (SPEC section 1). Positions whose page entry is out of range are zero-filled and
// never read; the selection kernel finds the same entries and turns that row into padding.
struct PagedGroups {
    PagedProblem pb;
    int64_t score_stride;  // floats between the score rows of two query rows
    int page_shift;        // log2(page_size): positions split into page and offset by shifts, never divisions

    __device__ int count() const { return pb.batch_size; }
    __device__ int rows(int) const { return pb.shape.next_n; }
    __device__ int64_t first_row(int g) const { return int64_t(g) * pb.shape.next_n; }
    // A seq_len outside its range is clamped here, so nothing outside the block table is read; the selection
    // kernel finds it out of range and writes the sequence's rows as padding.
    __device__ int64_t tokens(int g) const {
        const int64_t len = pb.seq_lens[g];
        const int64_t cap = int64_t(pb.max_pages) * pb.shape.page_size;
        return len < 0 ? 0 : (len > cap ? cap : len);
    }
    // Visible positions of row j, given tokens(g) (no memory read).
    __device__ int64_t visible(int64_t n_tokens, int j) const { return visible_positions(n_tokens, pb.shape.next_n, j); }
    // Base of token p's page, or null when its block-table entry is out of range.
    __device__ const uint8_t* page_base(int g, int64_t p) const {
        const int32_t page = __ldg(pb.block_table + int64_t(g) * pb.block_table_stride + (uint32_t(p) >> page_shift));
        return page_entry_in_range(page, pb.num_pages) ? pb.k_cache + int64_t(page) * pb.page_stride_bytes : nullptr;
    }
    __device__ uint32_t offset_in_page(int64_t p) const { return uint32_t(p) & ((1u << page_shift) - 1u); }
    __device__ const uint8_t* key(int, int64_t p, const uint8_t* base) const { return base + offset_in_page(p) * kHeadDim; }
    __device__ const float* scale(int, int64_t p, const uint8_t* base) const {
        return reinterpret_cast<const float*>(base + (kHeadDim << page_shift)) + offset_in_page(p);
    }
};

// Ragged keys of row r: keys [row_start[r], row_end[r]) of the contiguous K (SPEC section 2).
struct RaggedGroups {
    RaggedProblem pb;
    int64_t score_stride;

    __device__ int count() const { return pb.num_rows; }
    __device__ int rows(int) const { return 1; }
    __device__ int64_t first_row(int g) const { return g; }
    __device__ bool window_ok(int g) const { return ragged_window_in_range(pb.row_start[g], pb.row_end[g], pb.num_keys); }
    __device__ int64_t tokens(int g) const { return window_ok(g) ? int64_t(pb.row_end[g]) - pb.row_start[g] : 0; }
    __device__ int64_t visible(int64_t n_tokens, int) const { return n_tokens; }
    // The row's first key; key() and scale() derive everything from it without further reads.
    __device__ const uint8_t* page_base(int g, int64_t) const { return pb.k + int64_t(__ldg(pb.row_start + g)) * kHeadDim; }
    __device__ const uint8_t* key(int, int64_t p, const uint8_t* base) const { return base + p * kHeadDim; }
    __device__ const float* scale(int, int64_t p, const uint8_t* base) const {
        return pb.k_scale + (base - pb.k) / kHeadDim + p;
    }
};

// Stages tokens [tile_begin, tile_begin + 128) of group g: keys swizzled into `keys`, scales into `scales`.
// Consecutive threads copy consecutive 16-byte chunks (8 threads a token), so each warp instruction reads
// 512 contiguous bytes. Tokens past the group's end or on a bad page are zero-filled, never read.
template <class Groups>
__device__ __forceinline__ void stage_key_tile(const Groups& groups, int g, int64_t tile_begin, int64_t n_tokens,
                                               uint8_t* keys, float* scales) {
    constexpr int kChunksPerToken = kHeadDim / 16;
    constexpr int kTokensPerPass = kScoreThreads / kChunksPerToken;
    constexpr int kPasses = kTileTokens / kTokensPerPass;
    const int chunk = threadIdx.x % kChunksPerToken;
    // All page lookups first, so their latencies overlap instead of queueing in front of each copy.
    const uint8_t* base[kPasses];
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
        const int64_t p = tile_begin + pass * kTokensPerPass + threadIdx.x / kChunksPerToken;
        base[pass] = p < n_tokens ? groups.page_base(g, p) : nullptr;
    }
#pragma unroll
    for (int pass = 0; pass < kPasses; ++pass) {
        const int token = pass * kTokensPerPass + threadIdx.x / kChunksPerToken;
        const int64_t p = tile_begin + token;
        const uint8_t* b = base[pass];
        cp_async_16(keys + swizzled_offset(token, chunk), b ? groups.key(g, p, b) + chunk * 16 : groups.pb.q, b ? 16 : 0);
        if (chunk == 0)
            cp_async_4(scales + token, b ? static_cast<const void*>(groups.scale(g, p, b)) : groups.pb.q, b ? 4 : 0);
    }
}

// Stages the group's query rows (fp8, swizzled, [rows * H] rows of 128 bytes) and weights.
template <class Groups>
__device__ __forceinline__ void stage_queries(const Groups& groups, int g, int heads, uint8_t* q_smem, float* w_smem) {
    const int rows = groups.rows(g);
    const int64_t row0 = groups.first_row(g);
    const uint8_t* q = groups.pb.q + row0 * heads * kHeadDim;
    for (int idx = threadIdx.x; idx < rows * heads * (kHeadDim / 16); idx += blockDim.x) {
        const int qrow = idx / (kHeadDim / 16), chunk = idx % (kHeadDim / 16);
        cp_async_16(q_smem + swizzled_offset(qrow, chunk), q + int64_t(qrow) * kHeadDim + chunk * 16, 16);
    }
    const float* w = groups.pb.weights + row0 * heads;
    for (int idx = threadIdx.x; idx < rows * heads; idx += blockDim.x) w_smem[idx] = w[idx];
}

// relu that keeps NaN (fmaxf would turn it into 0), matching the CPU backend.
__device__ __forceinline__ float relu_keep_nan(float x) { return (x > 0.0f || x != x) ? x : 0.0f; }

}  // namespace dsa::kernels
