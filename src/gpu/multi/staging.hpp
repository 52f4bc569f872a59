// The host side of the multi-GPU owned-cache calls: the caller's host inputs staged as one block in pinned
// memory (one DMA per device), the host outputs' stage after it, and the delivery of results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/constants.hpp"
#include "common/problem.hpp"
#include "gpu/device.hpp"

namespace dsa {

// The inputs of a range of `sequences` sequences as one block, [q | weights | seq_lens | block table
// (dense rows of max_pages)], laid out alike in pinned host memory and on a device, so that a block
// reaches its device in one DMA.
struct InputBlock {
    size_t q_at = 0, weights_at = 0, lens_at = 0, table_at = 0, bytes = 0;
    size_t row_bytes_q = 0, row_bytes_w = 0, width = 0;
    int next_n = 1;

    InputBlock(const PagedProblem& host, int32_t sequences) : next_n(host.shape.next_n) {
        row_bytes_q = size_t(host.shape.num_heads) * kHeadDim;
        row_bytes_w = size_t(host.shape.num_heads) * 4;
        width = size_t(host.max_pages);
        const size_t rows = size_t(sequences) * size_t(next_n);
        ScratchPlan plan;
        q_at = plan.add(rows * row_bytes_q);
        weights_at = plan.add(rows * row_bytes_w);
        lens_at = plan.add(size_t(sequences) * 4);
        table_at = plan.add(size_t(sequences) * width * 4);
        bytes = plan.total;
    }

    // Host memcpy of the caller's sequences [first + from, first + to) into a block at `block` that holds
    // sequences from `first` on.
    void stage(uint8_t* block, const PagedProblem& host, int32_t first, int32_t from, int32_t to) const {
        if (to <= from) return;
        const size_t r0 = size_t(from) * next_n, rows = size_t(to - from) * next_n;
        const size_t src_row = size_t(first + from) * next_n;
        std::memcpy(block + q_at + r0 * row_bytes_q, host.q + src_row * row_bytes_q, rows * row_bytes_q);
        std::memcpy(block + weights_at + r0 * row_bytes_w, reinterpret_cast<const uint8_t*>(host.weights) +
                                                               src_row * row_bytes_w, rows * row_bytes_w);
        std::memcpy(block + lens_at + size_t(from) * 4, host.seq_lens + first + from, size_t(to - from) * 4);
        if (width == 0) return;
        for (int32_t b = from; b < to; ++b)
            std::memcpy(block + table_at + size_t(b) * width * 4,
                        host.block_table + int64_t(first + b) * host.block_table_stride, width * 4);
    }

    // Points pb's inputs at a block in device memory.
    void bind(PagedProblem& pb, uint8_t* block) const {
        pb.q = block + q_at;
        pb.weights = reinterpret_cast<const float*>(block + weights_at);
        pb.seq_lens = reinterpret_cast<const int32_t*>(block + lens_at);
        pb.block_table = reinterpret_cast<const int32_t*>(block + table_at);
        pb.block_table_stride = int64_t(width);
    }
};

// Host outputs pass through pinned memory after the input blocks: [indices | scores] of all rows.
struct OutputStage {
    size_t indices_at = 0, scores_at = 0, bytes = 0;
    OutputStage(const PagedProblem& host, size_t after) {
        const size_t values = size_t(host.rows()) * size_t(host.shape.topk);
        ScratchPlan plan;
        plan.total = after;
        indices_at = plan.add(values * 4);
        scores_at = plan.add(values * 4);
        bytes = plan.total;
    }
};

// Copies rows [row0, row0 + rows) of device results `from` (laid out for all rows) to the caller's
// outputs, through pinned memory for host outputs, and waits for them.
void deliver(Device& d, const PagedProblem& host, const TopkOutputs& from, int64_t row0, int64_t rows,
             uint8_t* pinned, const OutputStage& st);

}  // namespace dsa
