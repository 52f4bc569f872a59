#include "cpu/cpu_topk.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "common/constants.hpp"
#include "common/fp8.h"
#include "common/order_key.h"
#include "cpu/parallel.hpp"

namespace dsa::cpu {
namespace {

constexpr int kTokenTile = 4;       // tokens scored together so each q load feeds four dot products
constexpr int64_t kChunk = 2048;    // tokens per scoring task
constexpr int64_t kGroupScores = int64_t(1) << 25;  // score floats buffered per group of sequences

// Eight fp32 lanes; GCC/Clang lower this to SSE pairs or one AVX register. Lane-wise sums keep a fixed
// summation order, so results do not depend on the instruction set.
typedef float f32x8 __attribute__((vector_size(32)));

inline f32x8 load8(const float* p) {
    f32x8 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

inline float sum_lanes(f32x8 v) {
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

// Query rows of one call site, dequantised once: qf [nq, H, D], wf [nq, H].
struct QueryBlock {
    int nq = 0;
    int heads = 0;
    std::vector<float> qf;
    const float* weights = nullptr;

    void load(const uint8_t* q, const float* w, int rows, int num_heads) {
        nq = rows;
        heads = num_heads;
        weights = w;
        const Fp8Table& table = fp8_table();
        qf.resize(size_t(rows) * num_heads * kHeadDim);
        for (size_t i = 0; i < qf.size(); ++i) qf[i] = table.value[q[i]];
    }
};

// Scores `count` (<= kTokenTile) tokens for every query row: out[j * out_stride + t] =
// scale[t] * sum_h w[j][h] * relu(q[j][h] . k[t]).
void score_tile(const QueryBlock& qb, const uint8_t* const* keys, const float* scales, int count,
                float* out, int64_t out_stride) {
    const Fp8Table& table = fp8_table();
    alignas(32) float kf[kTokenTile][kHeadDim];
    for (int t = 0; t < kTokenTile; ++t)
        for (int d = 0; d < kHeadDim; ++d) kf[t][d] = t < count ? table.value[keys[t][d]] : 0.0f;

    for (int j = 0; j < qb.nq; ++j) {
        float total[kTokenTile] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (int h = 0; h < qb.heads; ++h) {
            const float* qh = &qb.qf[(size_t(j) * qb.heads + h) * kHeadDim];
            f32x8 acc[kTokenTile] = {};
            for (int d = 0; d < kHeadDim; d += 8) {
                const f32x8 qv = load8(qh + d);
                for (int t = 0; t < kTokenTile; ++t) acc[t] += qv * load8(&kf[t][d]);
            }
            const float w = qb.weights[size_t(j) * qb.heads + h];
            for (int t = 0; t < kTokenTile; ++t) {
                const float dot = sum_lanes(acc[t]);
                // relu written so a NaN dot stays NaN (std::max would drop it).
                total[t] += w * (dot > 0.0f || dot != dot ? dot : 0.0f);
            }
        }
        for (int t = 0; t < count; ++t) out[j * out_stride + t] = scales[t] * total[t];
    }
}

// Picks the top k of scores[0, n) by the ranking rule (order_key.h) and writes k results:
// indices[i] = index_of(p), scores_out[i] = scores[p]; then -1 / -inf padding.
void select_row(const float* scores, int64_t n, const TopkShape& shape,
                const std::function<int32_t(int64_t)>& index_of, int32_t* indices, float* scores_out,
                std::vector<uint64_t>& candidates) {
    const int k = shape.topk;
    const int64_t taken = std::min<int64_t>(n, k);
    candidates.resize(size_t(n));
    for (int64_t p = 0; p < n; ++p) candidates[size_t(p)] = candidate_key(scores[p], uint32_t(p));
    auto first_ranked = [](uint64_t a, uint64_t b) { return a > b; };
    // Unsorted results come in ascending position order, as on the GPU, so both backends agree bit for bit.
    auto first_position = [](uint64_t a, uint64_t b) { return candidate_position(a) < candidate_position(b); };
    if (n > k) std::nth_element(candidates.begin(), candidates.begin() + k, candidates.end(), first_ranked);
    std::sort(candidates.begin(), candidates.begin() + taken, shape.sorted ? +first_ranked : +first_position);
    for (int64_t i = 0; i < taken; ++i) {
        const uint64_t candidate = candidates[size_t(i)];
        indices[i] = index_of(candidate_position(candidate));
        if (scores_out) scores_out[i] = score_from_order_key(uint32_t(candidate >> 32));
    }
    for (int64_t i = taken; i < k; ++i) {
        indices[i] = -1;
        if (scores_out) scores_out[i] = padding_score();
    }
}

// The group of items starting at `begin` (of `count`) whose scores, need(i) floats each, stay under
// kGroupScores (at least one item): offset[i - begin] = where item i's scores start. Returns the group's end
// and sets total to its score count.
template <class Need>
int32_t next_group(int32_t begin, int32_t count, Need need, std::vector<int64_t>& offset, int64_t& total) {
    int32_t end = begin;
    total = 0;
    offset.clear();
    while (end < count) {
        const int64_t n = need(end);
        if (end > begin && total + n > kGroupScores) break;
        offset.push_back(total);
        total += n;
        ++end;
    }
    return end;
}

}  // namespace

void topk_paged(const PagedProblem& pb, int threads) {
    const TopkShape& shape = pb.shape;
    const int next_n = shape.next_n;
    const int P = shape.page_size;
    const int H = shape.num_heads;
    const int64_t scale_offset = int64_t(P) * kHeadDim;

    // Sequences are processed in groups whose score buffers stay under kGroupScores floats.
    int32_t group_begin = 0;
    std::vector<float> scores;
    std::vector<int64_t> offset;  // start of each sequence's [next_n, seq_len] scores in `scores`
    while (group_begin < pb.batch_size) {
        int64_t total = 0;
        const int32_t group_end = next_group(
            group_begin, pb.batch_size, [&](int32_t b) { return int64_t(pb.seq_lens[b]) * next_n; }, offset, total);
        scores.resize(size_t(total));

        // Scoring tasks: (sequence, chunk of kChunk tokens).
        std::vector<std::pair<int32_t, int64_t>> tasks;
        for (int32_t b = group_begin; b < group_end; ++b)
            for (int64_t p = 0; p < pb.seq_lens[b]; p += kChunk) tasks.emplace_back(b, p);

        parallel_for(int64_t(tasks.size()), threads, [&](int64_t task) {
            const auto [b, chunk_begin] = tasks[size_t(task)];
            const int64_t seq_len = pb.seq_lens[b];
            const int64_t chunk_end = std::min(seq_len, chunk_begin + kChunk);
            const int64_t row0 = int64_t(b) * next_n;
            thread_local QueryBlock qb;
            qb.load(pb.q + row0 * H * kHeadDim, pb.weights + row0 * H, next_n, H);
            float* out = scores.data() + offset[size_t(b - group_begin)];
            for (int64_t p = chunk_begin; p < chunk_end; p += kTokenTile) {
                const int count = int(std::min<int64_t>(kTokenTile, chunk_end - p));
                const uint8_t* keys[kTokenTile];
                float scales[kTokenTile];
                for (int t = 0; t < count; ++t) {
                    const int64_t pos = p + t;
                    const int64_t page = pb.block_table[b * pb.block_table_stride + pos / P];
                    const uint8_t* base = pb.k_cache + page * pb.page_stride_bytes;
                    keys[t] = base + (pos % P) * kHeadDim;
                    std::memcpy(&scales[t], base + scale_offset + (pos % P) * kScaleBytes, sizeof(float));
                }
                score_tile(qb, keys, scales, count, out + p, seq_len);
            }
        });

        const int64_t rows_begin = int64_t(group_begin) * next_n;
        const int64_t rows_end = int64_t(group_end) * next_n;
        parallel_for(rows_end - rows_begin, threads, [&](int64_t i) {
            const int64_t r = rows_begin + i;
            const int32_t b = int32_t(r / next_n);
            const int j = int(r % next_n);
            const int64_t seq_len = pb.seq_lens[b];
            const bool logical = shape.index_mode == IndexMode::PagedLogical;
            thread_local std::vector<uint64_t> candidates;
            select_row(scores.data() + offset[size_t(b - group_begin)] + j * seq_len,
                       visible_positions(seq_len, next_n, j), shape,
                       [&](int64_t p) {
                           if (logical) return int32_t(p);
                           // Indexed per returned position only: with no page at all, block_table may be NULL.
                           return int32_t(int64_t(pb.block_table[b * pb.block_table_stride + p / P]) * P + p % P);
                       },
                       pb.out.indices + r * shape.topk, pb.out.scores ? pb.out.scores + r * shape.topk : nullptr,
                       candidates);
        });
        group_begin = group_end;
    }
}

void topk_ragged(const RaggedProblem& pb, int threads) {
    const TopkShape& shape = pb.shape;
    const int H = shape.num_heads;

    int32_t group_begin = 0;
    std::vector<float> scores;
    std::vector<int64_t> offset;
    while (group_begin < pb.num_rows) {
        int64_t total = 0;
        const int32_t group_end = next_group(
            group_begin, pb.num_rows, [&](int32_t r) { return int64_t(pb.row_end[r]) - pb.row_start[r]; }, offset,
            total);
        scores.resize(size_t(total));

        std::vector<std::pair<int32_t, int64_t>> tasks;
        for (int32_t r = group_begin; r < group_end; ++r)
            for (int64_t p = 0; p < int64_t(pb.row_end[r]) - pb.row_start[r]; p += kChunk) tasks.emplace_back(r, p);

        parallel_for(int64_t(tasks.size()), threads, [&](int64_t task) {
            const auto [r, chunk_begin] = tasks[size_t(task)];
            const int64_t start = pb.row_start[r];
            const int64_t chunk_end = std::min<int64_t>(pb.row_end[r] - start, chunk_begin + kChunk);
            thread_local QueryBlock qb;
            qb.load(pb.q + int64_t(r) * H * kHeadDim, pb.weights + int64_t(r) * H, 1, H);
            float* out = scores.data() + offset[size_t(r - group_begin)];
            for (int64_t p = chunk_begin; p < chunk_end; p += kTokenTile) {
                const int count = int(std::min<int64_t>(kTokenTile, chunk_end - p));
                const uint8_t* keys[kTokenTile];
                for (int t = 0; t < count; ++t) keys[t] = pb.k + (start + p + t) * kHeadDim;
                score_tile(qb, keys, pb.k_scale + start + p, count, out + p, 0);
            }
        });

        parallel_for(int64_t(group_end - group_begin), threads, [&](int64_t i) {
            const int32_t r = group_begin + int32_t(i);
            const int64_t start = pb.row_start[r];
            const bool absolute = shape.index_mode == IndexMode::RaggedAbsolute;
            thread_local std::vector<uint64_t> candidates;
            select_row(scores.data() + offset[size_t(i)], int64_t(pb.row_end[r]) - start, shape,
                       [&](int64_t p) { return int32_t(absolute ? start + p : p); },
                       pb.out.indices + int64_t(r) * shape.topk,
                       pb.out.scores ? pb.out.scores + int64_t(r) * shape.topk : nullptr, candidates);
        });
        group_begin = group_end;
    }
}

}  // namespace dsa::cpu
