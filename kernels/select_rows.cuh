// How the selection kernel sees the rows of a paged or ragged problem: where a row's scores are, how many
// positions it sees, whether its device-side input breaks the data rules of common/problem.hpp, and how a
// position becomes an output index. Shared by the top-k launch and the sharded-cache merge.
#pragma once

#include <cstdint>

#include "common/problem.hpp"

namespace dsa::kernels {

inline int log2_of(int power_of_two) { return __builtin_ctz(unsigned(power_of_two)); }

// The index reported for position p of a paged sequence whose block-table row is `table` (SPEC section 1):
// p itself, or its global slot table[p / P] * P + p % P.
__device__ __forceinline__ int32_t paged_index(const PagedProblem& pb, const int32_t* table, int page_shift, uint32_t p) {
    if (pb.shape.index_mode == IndexMode::PagedLogical) return int32_t(p);
    return (table[p >> page_shift] << page_shift) + int32_t(p & ((1u << page_shift) - 1u));
}

// What the selection kernel needs to know about a row: where its scores are, how many positions it sees,
// whether its device-side input is bad (block-wide call), and how a position becomes an output index.
struct PagedRows {
    PagedProblem pb;
    int64_t score_stride;
    int page_shift;  // log2(page_size)

    __device__ const float* scores(const float* base, int64_t r) const { return base + r * score_stride; }
    // Block-wide: every thread must call it.
    __device__ bool bad(int64_t r) const {
        const int b = int(r / pb.shape.next_n);
        const int64_t len = pb.seq_lens[b];
        int bad_entry = 0;
        if (seq_len_in_range(len, pb.max_pages, pb.shape.page_size)) {
            const int32_t* table = pb.block_table + int64_t(b) * pb.block_table_stride;
            for (int64_t i = threadIdx.x; i < pages_holding(len, pb.shape.page_size); i += blockDim.x)
                bad_entry |= !page_entry_in_range(table[i], pb.num_pages);
        } else {
            bad_entry = 1;
        }
        return __syncthreads_or(bad_entry) != 0;
    }
    __device__ int64_t visible(int64_t r) const {
        return visible_positions(pb.seq_lens[r / pb.shape.next_n], pb.shape.next_n, int(r % pb.shape.next_n));
    }
    __device__ int32_t index_of(int64_t r, uint32_t p) const {
        const int b = int(r / pb.shape.next_n);
        return paged_index(pb, pb.block_table + int64_t(b) * pb.block_table_stride, page_shift, p);
    }
};

struct RaggedRows {
    RaggedProblem pb;
    int64_t score_stride;

    __device__ const float* scores(const float* base, int64_t r) const { return base + r * score_stride; }
    __device__ bool bad(int64_t r) const { return !ragged_window_in_range(pb.row_start[r], pb.row_end[r], pb.num_keys); }
    __device__ int64_t visible(int64_t r) const { return int64_t(pb.row_end[r]) - pb.row_start[r]; }
    __device__ int32_t index_of(int64_t r, uint32_t p) const {
        return pb.shape.index_mode == IndexMode::RaggedAbsolute ? pb.row_start[r] + int32_t(p) : int32_t(p);
    }
};

}  // namespace dsa::kernels
