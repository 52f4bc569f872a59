// Descriptions of one top-k call, shared by every backend and the kernels, and the data rules of SPEC
// section 4 that host checks and kernels both apply. src/api/validate.cpp builds them from the public
// structs; the multi-GPU paths derive per-rank problems from a validated one.
#pragma once

#include <cstdint>

#include "common/constants.hpp"
#include "common/host_device.h"

namespace dsa {

enum class IndexMode { PagedGlobalSlot, PagedLogical, RaggedRelative, RaggedAbsolute };

struct TopkShape {
    int num_heads = 64;
    int head_dim = kHeadDim;
    int page_size = 64;
    int topk = 2048;
    int next_n = 1;
    bool sorted = false;
    IndexMode index_mode = IndexMode::PagedGlobalSlot;
};

struct TopkOutputs {
    int32_t* indices = nullptr;  // [rows, topk]
    float* scores = nullptr;     // [rows, topk] or null
};

// SPEC section 1. Pointers are in the backend's memory (host for the CPU backend).
struct PagedProblem {
    TopkShape shape;
    int32_t batch_size = 0;
    int32_t max_pages = 0;
    int64_t block_table_stride = 0;
    int64_t num_pages = 0;
    int64_t page_stride_bytes = 0;
    const uint8_t* q = nullptr;
    const uint8_t* k_cache = nullptr;
    const float* weights = nullptr;
    const int32_t* seq_lens = nullptr;
    const int32_t* block_table = nullptr;
    TopkOutputs out;
    int output_device = -1;  // dsa_topk only: where `out` lives (DSA_MEMORY_HOST = -1, or a GPU id)

    DSA_HOST_DEVICE int64_t rows() const { return int64_t(batch_size) * shape.next_n; }
};

// SPEC section 2.
struct RaggedProblem {
    TopkShape shape;
    int32_t num_rows = 0;
    int64_t num_keys = 0;
    const uint8_t* q = nullptr;
    const uint8_t* k = nullptr;
    const float* k_scale = nullptr;
    const float* weights = nullptr;
    const int32_t* row_start = nullptr;
    const int32_t* row_end = nullptr;
    TopkOutputs out;

    int64_t rows() const { return num_rows; }
};

// Visible positions of MTP row j of a sequence of seq_len tokens: [0, visible) (SPEC section 1).
DSA_HOST_DEVICE int64_t visible_positions(int64_t seq_len, int next_n, int j) {
    const int64_t n = seq_len - next_n + j + 1;
    return n < 0 ? 0 : (n > seq_len ? seq_len : n);
}

// A row that sees at most k positions returns every one of them (SPEC section 1), in position order when
// unsorted; unless scores or the sorted order are asked for, nothing about it depends on its scores, so the
// fused kernels write it without computing any.
DSA_HOST_DEVICE bool row_needs_no_scores(const TopkShape& shape, const TopkOutputs& out, int64_t visible) {
    return !shape.sorted && out.scores == nullptr && visible <= shape.topk;
}

// The paged data rule (SPEC section 4), written once for the host checks and the kernels: a sequence's
// length lies in [0, max_pages * page_size], and each of the pages_holding(length) pages it occupies has
// a block-table entry in [0, num_pages). Entries past those pages are never read.
DSA_HOST_DEVICE bool seq_len_in_range(int64_t seq_len, int32_t max_pages, int page_size) {
    return seq_len >= 0 && seq_len <= int64_t(max_pages) * page_size;
}
DSA_HOST_DEVICE int64_t pages_holding(int64_t seq_len, int page_size) { return (seq_len + page_size - 1) / page_size; }
DSA_HOST_DEVICE bool page_entry_in_range(int64_t entry, int64_t num_pages) { return entry >= 0 && entry < num_pages; }

// The ragged data rule (SPEC section 4): 0 <= row_start <= row_end <= num_keys.
DSA_HOST_DEVICE bool ragged_window_in_range(int64_t row_start, int64_t row_end, int64_t num_keys) {
    return row_start >= 0 && row_start <= row_end && row_end <= num_keys;
}

}  // namespace dsa
