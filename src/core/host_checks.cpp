#include "core/host_checks.hpp"

#include <cmath>

#include "common/error.hpp"

namespace dsa {
namespace {

void check_no_nan_weights(const float* weights, int64_t rows, int heads) {
    for (int64_t i = 0; i < rows * heads; ++i)
        require(!std::isnan(weights[i]), DSA_STATUS_INVALID_ARGUMENT, "weights[", i / heads, "][", i % heads,
                "] is NaN");
}

}  // namespace

void check_paged_host_data(const PagedProblem& pb) {
    const int P = pb.shape.page_size;
    for (int32_t b = 0; b < pb.batch_size; ++b) {
        const int64_t len = pb.seq_lens[b];
        require(seq_len_in_range(len, pb.max_pages, P), DSA_STATUS_INVALID_ARGUMENT, "seq_lens[", b, "] is ", len,
                ": it must be in [0, max_pages * page_size] = [0, ", int64_t(pb.max_pages) * P, "]");
        if (len == 0) continue;  // no page to check; block_table may be NULL (max_pages 0): form no row pointer
        const int32_t* table_row = pb.block_table + b * pb.block_table_stride;
        for (int64_t i = 0; i < pages_holding(len, P); ++i)
            require(page_entry_in_range(table_row[i], pb.num_pages), DSA_STATUS_INVALID_ARGUMENT, "block_table[", b,
                    "][", i, "] is ", table_row[i], ": it must be in [0, num_pages) = [0, ", pb.num_pages, ")");
    }
    check_no_nan_weights(pb.weights, pb.rows(), pb.shape.num_heads);
}

void check_ragged_host_data(const RaggedProblem& pb) {
    for (int32_t r = 0; r < pb.num_rows; ++r)
        require(ragged_window_in_range(pb.row_start[r], pb.row_end[r], pb.num_keys), DSA_STATUS_INVALID_ARGUMENT,
                "row ", r, " window [", pb.row_start[r], ", ", pb.row_end[r],
                ") must satisfy 0 <= row_start <= row_end <= num_keys = ", pb.num_keys);
    check_no_nan_weights(pb.weights, pb.rows(), pb.shape.num_heads);
}

void check_slots(const int64_t* slots, int64_t n, const CacheLayout& layout) {
    for (int64_t i = 0; i < n; ++i)
        require(slots[i] >= 0 && slots[i] < layout.num_slots(), DSA_STATUS_INVALID_ARGUMENT, "slots[", i, "] is ",
                slots[i], ": it must be in [0, num_pages * page_size) = [0, ", layout.num_slots(), ")");
}

}  // namespace dsa
