#include "test_util.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <unordered_set>

namespace dsa_test {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

const double* fp8_values() {
    static const std::vector<double> table = [] {
        std::vector<double> t(256);
        for (int b = 0; b < 256; ++b) t[size_t(b)] = fp8_decode(uint8_t(b));
        return t;
    }();
    return table.data();
}

// Runs fn(row) for rows [0, n) on all hardware threads; rows differ a lot in cost, so they are handed out
// one at a time. The first exception is rethrown.
template <class Fn>
void parallel_rows(int64_t n, Fn&& fn) {
    const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(n, std::thread::hardware_concurrency()));
    std::atomic<int64_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&] {
        for (int64_t r = next++; r < n; r = next++) {
            try {
                fn(r);
            } catch (...) {
                std::lock_guard<std::mutex> lock(error_mutex);
                if (!error) error = std::current_exception();
            }
        }
    };
    std::vector<std::thread> pool;
    for (int64_t t = 1; t < workers; ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

double relu_keep_nan(double x) { return (x > 0.0 || std::isnan(x)) ? x : 0.0; }

// Ranking of two library (fp32) scores with the same rule as the oracle.
bool float_ranks_before(float a, int64_t pos_a, float b, int64_t pos_b) {
    return ranks_before(double(a), pos_a, double(b), pos_b);
}

std::string format_float(double v) {
    std::ostringstream s;
    s.precision(10);
    s << v;
    return s.str();
}

template <class... Parts>
std::string text(Parts&&... parts) {
    std::ostringstream s;
    s.precision(10);
    (s << ... << parts);
    return s.str();
}

// SPEC section 6 key: randn values, per-token scale max(amax, 1e-4) / 448, stored key fp8(k / scale).
void spec6_key(Rng& rng, uint8_t* key, float* scale) {
    double values[kHeadDim];
    double amax = 0.0;
    for (double& v : values) {
        v = rng.normal();
        amax = std::max(amax, std::fabs(v));
    }
    const float s = float(std::max(amax, 1e-4) / 448.0);
    for (int d = 0; d < kHeadDim; ++d) key[d] = fp8_encode(values[d] / double(s));
    *scale = s;
}

void spec6_queries(Rng& rng, uint8_t* q, float* weights, int64_t rows, int heads) {
    for (int64_t i = 0; i < rows * heads * kHeadDim; ++i) q[i] = fp8_encode(std::clamp(rng.normal(), -2.0, 2.0));
    for (int64_t i = 0; i < rows * heads; ++i) weights[i] = float(rng.normal());
}

// ---- tie-free integer data (see fill_tie_free in the header) ----
constexpr int kDigitDims = 6;        // dims 0..2: low base-16 digits of v, dims 3..5: high digits
constexpr int kNoiseDimsPerHead = 16;
constexpr int64_t kNarrowValues = 4096;
constexpr int64_t kWideValues = int64_t(1) << 24;

// Distinct values for `count` keys: a shuffled stride grid with a random offset in each cell.
std::vector<int64_t> distinct_values(Rng& rng, int64_t count, int64_t range) {
    std::vector<int64_t> order(static_cast<size_t>(count));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng.engine());
    const int64_t cell = count > 0 ? range / count : 1;
    for (auto& v : order) v = v * cell + rng.uniform(0, cell - 1);
    return order;
}

void tie_free_key(Rng& rng, int64_t value, uint8_t* key) {
    for (int d = 0; d < kDigitDims; ++d) key[d] = fp8_encode(double((value >> (4 * d)) & 15));
    for (int d = kDigitDims; d < kHeadDim; ++d) key[d] = fp8_encode(double(rng.uniform(-2, 2)));
}

void tie_free_query(Rng& rng, bool wide, int heads, uint8_t* q, float* weights) {
    std::fill(q, q + heads * kHeadDim, fp8_encode(0.0));
    for (int digit = 0; digit < 3; ++digit) {
        q[digit] = fp8_encode(double(1 << (4 * digit)));                // head 0: v mod 4096
        q[kHeadDim + 3 + digit] = fp8_encode(double(1 << (4 * digit)));  // head 1: v / 4096
    }
    weights[0] = 1.0f;
    weights[1] = 4096.0f;
    // Noise heads: |dot| <= 16 * 2, |weight| <= 2 * 4096 over at most 62 heads: < 2^24 - 4096 in all.
    std::vector<int> dims(kHeadDim - kDigitDims);
    std::iota(dims.begin(), dims.end(), kDigitDims);
    for (int h = 2; h < heads; ++h) {
        std::shuffle(dims.begin(), dims.end(), rng.engine());
        for (int i = 0; i < kNoiseDimsPerHead; ++i)
            q[h * kHeadDim + dims[size_t(i)]] = fp8_encode(double(rng.uniform(-1, 1)));
        weights[h] = wide ? (rng.uniform(0, 1) ? 0.0f : -0.0f) : float(4096 * rng.uniform(-2, 2));
    }
}

}  // namespace

// ---- fp8 ------------------------------------------------------------------------------------------------
double fp8_decode(uint8_t byte) {
    const int exponent = (byte >> 3) & 0xF;
    const int mantissa = byte & 0x7;
    if (exponent == 0xF && mantissa == 0x7) return kNaN;
    const double magnitude = exponent == 0 ? std::ldexp(mantissa / 8.0, 1 - 7)  // subnormal: 0.m * 2^(1-bias)
                                           : std::ldexp(1.0 + mantissa / 8.0, exponent - 7);
    return (byte & 0x80) ? -magnitude : magnitude;
}

uint8_t fp8_encode(double value) {
    if (std::isnan(value)) return kFp8NaN;
    const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
    const double magnitude = std::fabs(value);
    if (magnitude >= 448.0) return sign | kFp8Max;
    if (magnitude == 0.0) return sign;
    int binade;
    std::frexp(magnitude, &binade);                // magnitude in [2^(binade-1), 2^binade)
    int exponent = std::max(binade - 1, -6);       // below 2^-6 the subnormal step 2^-9 applies
    double steps = std::nearbyint(std::ldexp(magnitude, 3 - exponent));  // ties to even
    if (steps < 8) return sign | uint8_t(steps);  // subnormal
    if (steps == 16) {                             // rounded up into the next binade
        steps = 8;
        ++exponent;
    }
    return sign | uint8_t(((exponent + 7) << 3) | (int(steps) - 8));
}

// ---- PagedCase ------------------------------------------------------------------------------------------
PagedCase::PagedCase(const PagedLayout& layout_in, std::vector<int32_t> lens, uint64_t seed) : layout(layout_in) {
    const int P = layout.page_size;
    batch_size = int32_t(lens.size());
    seq_lens.assign(lens.begin(), lens.end());
    int64_t needed_max = 0, needed_total = 0;
    for (int32_t b = 0; b < batch_size; ++b) {
        needed_max = std::max(needed_max, pages_of(b));
        needed_total += pages_of(b);
    }
    max_pages = int32_t(needed_max + layout.unused_columns);
    table_stride = max_pages + layout.table_padding;
    num_pages = needed_total + layout.spare_pages;
    page_stride = int64_t(P) * (kHeadDim + 4) + layout.page_padding_bytes;

    Rng rng(seed);
    std::vector<int32_t> physical(static_cast<size_t>(num_pages));
    std::iota(physical.begin(), physical.end(), 0);
    std::shuffle(physical.begin(), physical.end(), rng.engine());
    block_table.assign(size_t(int64_t(batch_size) * table_stride), 0x7FFFFFFF);  // stride padding: junk
    size_t next_page = 0;
    for (int32_t b = 0; b < batch_size; ++b) {
        int32_t* row = block_table.data() + b * table_stride;
        for (int64_t i = 0; i < max_pages; ++i)
            row[i] = i < pages_of(b) ? physical[next_page++]
                                     : (num_pages > 0 ? int32_t(rng.uniform(0, num_pages - 1)) : -1);
    }
    k_cache.assign(size_t(num_pages * page_stride), 0xA5);  // padding bytes stay junk
    q.assign(size_t(rows() * heads() * kHeadDim), 0);
    weights.assign(size_t(rows() * heads()), 0.0f);
    logical_page_of_.resize(size_t(batch_size));
}

dsa_paged_inputs_t PagedCase::inputs() const {
    dsa_paged_inputs_t in;
    dsa_paged_inputs_init(&in);
    in.batch_size = batch_size;
    in.max_pages = max_pages;
    in.block_table_stride = table_stride;
    in.num_pages = num_pages;
    in.page_stride_bytes = page_stride;
    in.q = q.data();
    in.k_cache = k_cache.data();
    in.weights = weights.data();
    in.seq_lens = seq_lens.data();
    in.block_table = block_table.data();
    return in;
}

dsa_topk_params_t PagedCase::params(int topk, uint32_t flags) const {
    dsa_topk_params_t p;
    dsa_topk_params_init(&p);
    p.num_heads = layout.heads;
    p.page_size = layout.page_size;
    p.next_n = layout.next_n;
    p.topk = topk;
    p.flags = flags;
    return p;
}

const uint8_t* PagedCase::page_base(int32_t seq, int64_t pos) const {
    const int64_t page = block_table[size_t(seq * table_stride + pos / layout.page_size)];
    return k_cache.data() + page * page_stride;
}

uint8_t* PagedCase::mutable_key(int32_t seq, int64_t pos) {
    return const_cast<uint8_t*>(page_base(seq, pos)) + (pos % layout.page_size) * kHeadDim;
}

void PagedCase::set_scale(int32_t seq, int64_t pos, float scale) {
    uint8_t* base = const_cast<uint8_t*>(page_base(seq, pos));
    std::memcpy(base + int64_t(layout.page_size) * kHeadDim + (pos % layout.page_size) * 4, &scale, 4);
}

int64_t PagedCase::visible(int64_t row) const {
    const int64_t len = seq_lens[size_t(seq_of(row))];
    const int64_t n = len - layout.next_n + row % layout.next_n + 1;
    return std::clamp<int64_t>(n, 0, len);
}

const uint8_t* PagedCase::key(int64_t row, int64_t pos) const {
    return page_base(seq_of(row), pos) + (pos % layout.page_size) * kHeadDim;
}

float PagedCase::key_scale(int64_t row, int64_t pos) const {
    float s;
    std::memcpy(&s, page_base(seq_of(row), pos) + int64_t(layout.page_size) * kHeadDim + (pos % layout.page_size) * 4, 4);
    return s;
}

int32_t PagedCase::index_of(int64_t row, int64_t pos, uint32_t flags) const {
    if (flags & DSA_TOPK_LOGICAL_INDICES) return int32_t(pos);
    const int P = layout.page_size;
    return int32_t(int64_t(block_table[size_t(seq_of(row) * table_stride + pos / P)]) * P + pos % P);
}

int64_t PagedCase::position_of(int64_t row, int32_t index, uint32_t flags) const {
    const int64_t n = visible(row);
    if (index < 0) return -1;
    if (flags & DSA_TOPK_LOGICAL_INDICES) return index < n ? index : -1;
    const int P = layout.page_size;
    const int32_t b = seq_of(row);
    auto& pages = logical_page_of_[size_t(b)];
    if (pages.empty())
        for (int64_t i = 0; i < pages_of(b); ++i) pages.emplace(block_table[size_t(b * table_stride + i)], i);
    const auto found = pages.find(index / P);
    if (found == pages.end()) return -1;
    const int64_t pos = found->second * P + index % P;
    return pos < n ? pos : -1;
}

// ---- RaggedCase -----------------------------------------------------------------------------------------
RaggedCase::RaggedCase(int heads, int64_t num_keys, const std::vector<std::pair<int32_t, int32_t>>& windows)
    : num_heads(heads) {
    const int64_t S = int64_t(windows.size());
    q.assign(size_t(S * heads * kHeadDim), 0);
    k.assign(size_t(num_keys * kHeadDim), 0);
    k_scale.assign(size_t(num_keys), 1.0f);
    weights.assign(size_t(S * heads), 0.0f);
    for (const auto& [start, end] : windows) {
        row_start.push_back(start);
        row_end.push_back(end);
    }
}

dsa_ragged_inputs_t RaggedCase::inputs() const {
    dsa_ragged_inputs_t in;
    dsa_ragged_inputs_init(&in);
    in.num_rows = int32_t(rows());
    in.num_keys = num_keys();
    in.q = q.data();
    in.k = k.data();
    in.k_scale = k_scale.data();
    in.weights = weights.data();
    in.row_start = row_start.data();
    in.row_end = row_end.data();
    return in;
}

dsa_topk_params_t RaggedCase::params(int topk, uint32_t flags) const {
    dsa_topk_params_t p;
    dsa_topk_params_init(&p);
    p.num_heads = num_heads;
    p.topk = topk;
    p.flags = flags;
    return p;
}

int32_t RaggedCase::index_of(int64_t row, int64_t pos, uint32_t flags) const {
    return int32_t((flags & DSA_TOPK_ABSOLUTE_INDICES) ? row_start[size_t(row)] + pos : pos);
}

int64_t RaggedCase::position_of(int64_t row, int32_t index, uint32_t flags) const {
    const int64_t pos = (flags & DSA_TOPK_ABSOLUTE_INDICES) ? int64_t(index) - row_start[size_t(row)] : index;
    return (index >= 0 && pos >= 0 && pos < visible(row)) ? pos : -1;
}

std::vector<std::pair<int32_t, int32_t>> causal_windows(const std::vector<int32_t>& key_lens,
                                                        const std::vector<int32_t>& query_lens) {
    std::vector<std::pair<int32_t, int32_t>> windows;
    int32_t start = 0;
    for (size_t i = 0; i < key_lens.size(); ++i) {
        for (int32_t t = 0; t < query_lens[i]; ++t)
            windows.emplace_back(start, start + key_lens[i] - query_lens[i] + t + 1);
        start += key_lens[i];
    }
    return windows;
}

PagedLayout layout_of(int heads, int page_size, int next_n) {
    PagedLayout layout;
    layout.heads = heads;
    layout.page_size = page_size;
    layout.next_n = next_n;
    return layout;
}

dsa_paged_inputs_t sub_batch(const dsa_paged_inputs_t& in, int heads, int next_n, int32_t first, int32_t count) {
    dsa_paged_inputs_t out = in;
    const int64_t row0 = int64_t(first) * next_n;
    out.batch_size = count;
    out.q = static_cast<const uint8_t*>(in.q) + row0 * heads * kHeadDim;
    out.weights = in.weights + row0 * heads;
    out.seq_lens = in.seq_lens + first;
    out.block_table = in.block_table + first * in.block_table_stride;
    return out;
}

// ---- generators -----------------------------------------------------------------------------------------
void fill_spec6(PagedCase& c, Rng& rng) {
    const int P = c.layout.page_size;
    // Every token slot of every physical page, so reading a non-visible slot yields plausible keys.
    for (int64_t page = 0; page < c.num_pages; ++page) {
        uint8_t* base = c.k_cache.data() + page * c.page_stride;
        for (int t = 0; t < P; ++t) {
            float scale;
            spec6_key(rng, base + t * kHeadDim, &scale);
            std::memcpy(base + int64_t(P) * kHeadDim + t * 4, &scale, 4);
        }
    }
    spec6_queries(rng, c.q.data(), c.weights.data(), c.rows(), c.heads());
}

void fill_spec6(RaggedCase& c, Rng& rng) {
    for (int64_t i = 0; i < c.num_keys(); ++i) spec6_key(rng, c.mutable_key(i), &c.k_scale[size_t(i)]);
    spec6_queries(rng, c.q.data(), c.weights.data(), c.rows(), c.heads());
}

void fill_tie_free(PagedCase& c, Rng& rng) {
    const int P = c.layout.page_size;
    int64_t longest = 0;
    for (int32_t len : c.seq_lens) longest = std::max<int64_t>(longest, len);
    const bool wide = longest > kNarrowValues;
    // Slots no sequence shows get the top value: reading one shows up as a wrong (high-ranked) result.
    for (int64_t page = 0; page < c.num_pages; ++page) {
        uint8_t* base = c.k_cache.data() + page * c.page_stride;
        for (int t = 0; t < P; ++t) {
            tie_free_key(rng, (wide ? kWideValues : kNarrowValues) - 1, base + t * kHeadDim);
            const float one = 1.0f;
            std::memcpy(base + int64_t(P) * kHeadDim + t * 4, &one, 4);
        }
    }
    for (int32_t b = 0; b < c.batch_size; ++b) {
        const std::vector<int64_t> values = distinct_values(rng, c.seq_lens[size_t(b)], wide ? kWideValues : kNarrowValues);
        for (int64_t p = 0; p < c.seq_lens[size_t(b)]; ++p) tie_free_key(rng, values[size_t(p)], c.mutable_key(b, p));
    }
    for (int64_t r = 0; r < c.rows(); ++r) tie_free_query(rng, wide, c.heads(), c.mutable_query(r), c.mutable_weights(r));
}

void fill_tie_free(RaggedCase& c, Rng& rng) {
    const bool wide = c.num_keys() > kNarrowValues;
    const std::vector<int64_t> values = distinct_values(rng, c.num_keys(), wide ? kWideValues : kNarrowValues);
    for (int64_t i = 0; i < c.num_keys(); ++i) {
        tie_free_key(rng, values[size_t(i)], c.mutable_key(i));
        c.set_scale(i, 1.0f);
    }
    for (int64_t r = 0; r < c.rows(); ++r) tie_free_query(rng, wide, c.heads(), c.mutable_query(r), c.mutable_weights(r));
}

std::vector<int64_t> random_subset(Rng& rng, int64_t n, int64_t count) {
    std::vector<int64_t> all(static_cast<size_t>(n));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng.engine());
    all.resize(size_t(std::min(n, count)));
    return all;
}

void add_special_scores(PagedCase& c, int32_t seq, int64_t count, Rng& rng) {
    const float inf = std::numeric_limits<float>::infinity();
    const std::vector<int64_t> chosen = random_subset(rng, c.seq_lens[size_t(seq)], count);
    for (size_t i = 0; i < chosen.size(); ++i) {
        const int64_t p = chosen[i];
        switch (i % 5) {
            case 0: c.set_scale(seq, p, inf); break;
            case 1: c.set_scale(seq, p, -inf); break;
            case 2: c.set_scale(seq, p, std::numeric_limits<float>::quiet_NaN()); break;
            case 3: c.mutable_key(seq, p)[rng.uniform(0, kHeadDim - 1)] = kFp8NaN; break;
            case 4: c.mutable_key(seq, p)[rng.uniform(0, kHeadDim - 1)] = 0xFF; break;  // the negative NaN code
        }
    }
}

PagedCase planted_paged(const PagedLayout& layout, std::vector<int32_t> seq_lens, int64_t planted, uint64_t seed,
                        std::vector<std::vector<double>>& exact_scores) {
    PagedCase c(layout, std::move(seq_lens), seed);
    Rng rng(seed + 1);
    const int P = layout.page_size;
    const float one = 1.0f, minus_one = -1.0f;
    for (int64_t page = 0; page < c.num_pages; ++page) {
        uint8_t* base = c.k_cache.data() + page * c.page_stride;
        std::memset(base, 0, size_t(P) * kHeadDim);
        for (int t = 0; t < P; ++t) std::memcpy(base + int64_t(P) * kHeadDim + t * 4, &one, 4);
    }
    std::vector<std::vector<std::pair<int64_t, double>>> planted_scores(size_t(c.batch_size));
    for (int32_t b = 0; b < c.batch_size; ++b) {
        const std::vector<int64_t> values = distinct_values(rng, planted, kNarrowValues - 1);
        const std::vector<int64_t> positions = random_subset(rng, c.seq_lens[size_t(b)], planted);
        for (size_t i = 0; i < positions.size(); ++i) {
            uint8_t* key = c.mutable_key(b, positions[i]);
            const int64_t v = values[i] + 1;  // > 0, so negation never makes -0
            for (int d = 0; d < 3; ++d) key[d] = fp8_encode(double((v >> (4 * d)) & 15));
            c.set_scale(b, positions[i], i % 2 ? minus_one : one);
            planted_scores[size_t(b)].emplace_back(positions[i], i % 2 ? -double(v) : double(v));
        }
    }
    for (int64_t r = 0; r < c.rows(); ++r) {
        uint8_t* q = c.mutable_query(r);
        for (int64_t i = 0; i < int64_t(c.heads()) * kHeadDim; ++i) q[i] = fp8_encode(double(rng.uniform(-2, 2)));
        for (int d = 0; d < 3; ++d) q[d] = fp8_encode(double(1 << (4 * d)));  // head 0 reads v
        float* w = c.mutable_weights(r);
        std::fill(w, w + c.heads(), 0.0f);
        w[0] = 1.0f;
    }
    exact_scores.assign(size_t(c.rows()), {});
    for (int64_t r = 0; r < c.rows(); ++r) {
        exact_scores[size_t(r)].assign(size_t(c.visible(r)), 0.0);
        for (const auto& [p, score] : planted_scores[size_t(c.seq_of(r))])
            if (p < c.visible(r)) exact_scores[size_t(r)][size_t(p)] = score;
    }
    return c;
}

std::vector<int32_t> mixed_seq_lens(int topk, int page_size, int32_t long_len) {
    return {0, 1, topk > 1 ? topk - 1 : 2, topk, 3 * page_size + 5, long_len};
}

// ---- oracles --------------------------------------------------------------------------------------------
Oracle compute_oracle(const TopkCase& c) {
    const double* fp8 = fp8_values();
    const int H = c.heads();
    Oracle oracle(size_t(c.rows()));
    parallel_rows(c.rows(), [&](int64_t r) {
        std::vector<double> qd(size_t(H) * kHeadDim);
        const uint8_t* q = c.query(r);
        for (size_t i = 0; i < qd.size(); ++i) qd[i] = fp8[q[i]];
        const float* w = c.row_weights(r);
        const int64_t n = c.visible(r);
        RowOracle& row = oracle[size_t(r)];
        row.score.resize(size_t(n));
        row.magnitude.resize(size_t(n));
        row.abs_sum.resize(size_t(n));
        double kd[kHeadDim];
        for (int64_t p = 0; p < n; ++p) {
            const uint8_t* key = c.key(r, p);
            for (int d = 0; d < kHeadDim; ++d) kd[d] = fp8[key[d]];
            double total = 0.0, magnitude = 0.0, abs_sum = 0.0;
            for (int h = 0; h < H; ++h) {
                const double* qh = &qd[size_t(h) * kHeadDim];
                // Products of two fp8 values are multiples of 2^-18 below 2^18, so these sums are exact
                // in float64 in any order: four chains only for speed.
                double dot[4] = {0, 0, 0, 0}, mag[4] = {0, 0, 0, 0};
                for (int d = 0; d < kHeadDim; d += 4)
                    for (int l = 0; l < 4; ++l) {
                        const double prod = qh[d + l] * kd[d + l];
                        dot[l] += prod;
                        mag[l] += std::fabs(prod);
                    }
                const double relu = relu_keep_nan((dot[0] + dot[1]) + (dot[2] + dot[3]));
                const double wh = double(w[h]);
                total += wh * relu;
                magnitude += std::fabs(wh) * relu;
                abs_sum += std::fabs(wh) * ((mag[0] + mag[1]) + (mag[2] + mag[3]));
            }
            const double s = double(c.key_scale(r, p));
            row.score[size_t(p)] = s * total;
            row.magnitude[size_t(p)] = std::fabs(s) * magnitude;
            row.abs_sum[size_t(p)] = std::fabs(s) * abs_sum;
        }
    });
    return oracle;
}

std::vector<std::vector<double>> integer_scores(const TopkCase& c) {
    const double* fp8 = fp8_values();
    const int H = c.heads();
    auto as_integer = [](double v, const char* what) {
        if (!(std::isfinite(v) && v == std::floor(v)))
            throw std::logic_error(text("integer_scores: ", what, " ", v, " is not an integer"));
        return int64_t(v);
    };
    std::vector<std::vector<double>> scores(size_t(c.rows()));
    parallel_rows(c.rows(), [&](int64_t r) {
        std::vector<int64_t> q(size_t(H) * kHeadDim), w(static_cast<size_t>(H));
        for (size_t i = 0; i < q.size(); ++i) q[i] = as_integer(fp8[c.query(r)[i]], "query value");
        for (int h = 0; h < H; ++h) w[size_t(h)] = as_integer(c.row_weights(r)[h], "weight");
        const int64_t n = c.visible(r);
        scores[size_t(r)].resize(size_t(n));
        int64_t k[kHeadDim];
        for (int64_t p = 0; p < n; ++p) {
            for (int d = 0; d < kHeadDim; ++d) k[d] = as_integer(fp8[c.key(r, p)[d]], "key value");
            const float s = c.key_scale(r, p);
            if (s != 1.0f && s != -1.0f) throw std::logic_error("integer_scores: a scale is not +-1");
            int64_t total = 0;
            for (int h = 0; h < H; ++h) {
                int64_t dot = 0;
                for (int d = 0; d < kHeadDim; ++d) dot += q[size_t(h) * kHeadDim + d] * k[d];
                total += w[size_t(h)] * std::max<int64_t>(dot, 0);
            }
            scores[size_t(r)][size_t(p)] = double(s > 0 ? total : -total);
        }
    });
    return scores;
}

bool ranks_before(double a, int64_t pos_a, double b, int64_t pos_b) {
    const bool a_nan = std::isnan(a), b_nan = std::isnan(b);
    if (a_nan != b_nan) return b_nan;
    if (!a_nan && a != b) return a > b;  // -0 == +0 falls through to the position
    return pos_a < pos_b;
}

std::vector<int64_t> ranked_positions(const std::vector<double>& scores, int64_t count) {
    std::vector<int64_t> order(scores.size());
    std::iota(order.begin(), order.end(), 0);
    count = std::min<int64_t>(count, int64_t(order.size()));
    std::partial_sort(order.begin(), order.begin() + count, order.end(), [&](int64_t a, int64_t b) {
        return ranks_before(scores[size_t(a)], a, scores[size_t(b)], b);
    });
    order.resize(size_t(count));
    return order;
}

// ---- checkers -------------------------------------------------------------------------------------------
std::string check_valid(const TopkCase& c, int topk, uint32_t flags, const int32_t* indices, const float* scores) {
    for (int64_t r = 0; r < c.rows(); ++r) {
        const int64_t n = c.visible(r), count = std::min<int64_t>(topk, n);
        const int32_t* row = indices + r * topk;
        std::unordered_set<int64_t> seen;
        for (int64_t i = 0; i < count; ++i) {
            const int64_t pos = c.position_of(r, row[i], flags);
            if (pos < 0)
                return text("row ", r, " slot ", i, ": index ", row[i], " is not a visible position (", n,
                            " visible, expected ", count, " results)");
            if (!seen.insert(pos).second) return text("row ", r, " slot ", i, ": index ", row[i], " repeated");
        }
        for (int64_t i = count; i < topk; ++i) {
            if (row[i] != -1) return text("row ", r, " slot ", i, ": padding holds ", row[i], " instead of -1 (", n, " visible)");
            if (scores && !(std::isinf(scores[r * topk + i]) && scores[r * topk + i] < 0))
                return text("row ", r, " slot ", i, ": padding score ", scores[r * topk + i], " instead of -inf");
        }
    }
    return "";
}

std::string check_spec5(const TopkCase& c, const Oracle& oracle, int topk, uint32_t flags, const int32_t* indices,
                        const float* scores) {
    std::string failure = check_valid(c, topk, flags, indices, scores);
    if (!failure.empty()) return failure;
    const bool sorted = flags & DSA_TOPK_SORTED;
    for (int64_t r = 0; r < c.rows(); ++r) {
        const RowOracle& o = oracle[size_t(r)];
        const int64_t n = c.visible(r), count = std::min<int64_t>(topk, n);
        const int32_t* row = indices + r * topk;
        const float* row_scores = scores ? scores + r * topk : nullptr;
        std::vector<int64_t> pos(static_cast<size_t>(count));
        for (int64_t i = 0; i < count; ++i) pos[size_t(i)] = c.position_of(r, row[i], flags);

        if (n > topk) {  // the rank rule; with n <= k every visible position is returned (checked above)
            const int64_t p_star = ranked_positions(o.score, topk).back();
            const double s_star = o.score[size_t(p_star)];
            double a_star = o.magnitude[size_t(p_star)];  // "a position holding it": the largest A of any
            for (int64_t p = 0; p < n; ++p)
                if (o.score[size_t(p)] == s_star) a_star = std::max(a_star, o.magnitude[size_t(p)]);
            for (int64_t i = 0; i < count; ++i) {
                const double s = o.score[size_t(pos[size_t(i)])];
                if (std::isnan(s_star) || s >= s_star) continue;
                const double bound = s_star - 1e-3 * std::max(o.magnitude[size_t(pos[size_t(i)])], a_star) - 1e-30;
                if (!(s >= bound))
                    return text("row ", r, " slot ", i, ": position ", pos[size_t(i)], " has oracle score ", format_float(s),
                                ", below the k-th score ", format_float(s_star), " by more than the tolerance (bound ",
                                format_float(bound), ")");
            }
        }
        for (int64_t i = 0; sorted && i + 1 < count; ++i) {
            const int64_t a = pos[size_t(i)], b = pos[size_t(i + 1)];
            if (row_scores && float_ranks_before(row_scores[i + 1], b, row_scores[i], a))
                return text("row ", r, " slots ", i, ",", i + 1, ": returned scores ", row_scores[i], ", ", row_scores[i + 1],
                            " at positions ", a, ", ", b, " are not in ranking order");
            const double sa = o.score[size_t(a)], sb = o.score[size_t(b)];
            const double tol = 1e-3 * std::max(o.magnitude[size_t(a)], o.magnitude[size_t(b)]) + 1e-30;
            if ((std::isnan(sa) && !std::isnan(sb)) || (!std::isnan(sb) && sb > sa + tol))
                return text("row ", r, " slots ", i, ",", i + 1, ": oracle scores ", format_float(sa), ", ",
                            format_float(sb), " (positions ", a, ", ", b, ") are not in descending order");
        }
        for (int64_t i = 0; row_scores && i < count; ++i) {
            const size_t p = size_t(pos[size_t(i)]);
            const double expect = o.score[p], got = row_scores[i];
            const bool ok = std::isnan(expect) ? std::isnan(got)
                            : std::isinf(expect) ? got == expect
                                                 : std::fabs(got - expect) <= 1e-3 * o.magnitude[p] + 1e-4 * o.abs_sum[p] + 1e-30;
            if (!ok)
                return text("row ", r, " slot ", i, ": returned score ", format_float(got), " for position ", p,
                            ", oracle ", format_float(expect));
        }
    }
    return check_flashinfer(c, oracle, topk, flags, indices);
}

std::string check_flashinfer(const TopkCase& c, const Oracle& oracle, int topk, uint32_t flags,
                             const int32_t* indices) {
    for (int64_t r = 0; r < c.rows(); ++r) {
        const std::vector<double>& score = oracle[size_t(r)].score;
        if (!std::all_of(score.begin(), score.end(), [](double s) { return std::isfinite(s); })) continue;
        const int64_t count = std::min<int64_t>(topk, c.visible(r));
        std::vector<double> returned, reference;
        for (int64_t i = 0; i < count; ++i) returned.push_back(score[size_t(c.position_of(r, indices[r * topk + i], flags))]);
        for (int64_t p : ranked_positions(score, count)) reference.push_back(score[size_t(p)]);
        std::sort(returned.rbegin(), returned.rend());
        for (int64_t i = 0; i < count; ++i) {
            const double err = std::fabs(returned[size_t(i)] - reference[size_t(i)]);
            if (!(err <= 1e-2 || err <= 1e-2 * std::fabs(reference[size_t(i)])))
                return text("row ", r, " rank ", i, ": FlashInfer-Bench check, returned ", format_float(returned[size_t(i)]),
                            " vs reference ", format_float(reference[size_t(i)]));
        }
    }
    return "";
}

std::string check_exact(const TopkCase& c, const std::vector<std::vector<double>>& exact, int topk,
                        uint32_t flags, const int32_t* indices, const float* scores) {
    std::string failure = check_valid(c, topk, flags, indices, scores);
    if (!failure.empty()) return failure;
    const bool sorted = flags & DSA_TOPK_SORTED;
    for (int64_t r = 0; r < c.rows(); ++r) {
        const std::vector<double>& score = exact[size_t(r)];
        const int64_t count = std::min<int64_t>(topk, c.visible(r));
        const std::vector<int64_t> expected = ranked_positions(score, count);
        const int64_t ranked = std::count_if(expected.begin(), expected.end(),
                                             [&](int64_t p) { return !std::isnan(score[size_t(p)]); });
        const std::unordered_set<int64_t> expected_ranked(expected.begin(), expected.begin() + ranked);
        int64_t members = 0, previous = -1;
        for (int64_t i = 0; i < count; ++i) {
            const int64_t p = c.position_of(r, indices[r * topk + i], flags);
            // Unsorted results come in ascending position order (dsa_indexer.h), on every backend.
            if (!sorted && p <= previous)
                return text("row ", r, " slot ", i, ": position ", p, " after position ", previous,
                            ": unsorted results not in ascending position order");
            previous = p;
            const double s = score[size_t(p)];
            const bool member = expected_ranked.count(p) == 1;
            members += member;
            // Sorted: the exact sequence, then NaN positions. Unsorted: the expected set plus NaN positions.
            const bool ok = sorted ? (i < ranked ? p == expected[size_t(i)] : std::isnan(s)) : (member || std::isnan(s));
            if (!ok)
                return text("row ", r, " slot ", i, ": position ", p, " (index ", indices[r * topk + i], ", exact score ",
                            format_float(s), ") is not ", sorted && i < ranked ? "the expected position " : "in the expected set",
                            sorted && i < ranked ? std::to_string(expected[size_t(i)]) : std::string(),
                            sorted && i < ranked ? " (exact score " + format_float(score[size_t(expected[size_t(i)])]) + ")" : "");
            if (scores) {
                const float got = scores[r * topk + i];
                if (std::isnan(s) ? !std::isnan(got) : got != float(s))
                    return text("row ", r, " slot ", i, ": returned score ", got, " for position ", p, ", exact ", format_float(s));
            }
        }
        if (members != ranked)
            return text("row ", r, ": ", members, " of the ", ranked, " expected (non-NaN) positions returned");
    }
    return "";
}

// ---- calls ----------------------------------------------------------------------------------------------
TopkOutput::TopkOutput(int64_t rows_in, int topk_in, bool with_scores)
    : rows(rows_in), topk(topk_in), with_scores_(with_scores) {
    const size_t n = size_t(rows * topk + kGuard);
    indices_.resize(n);
    std::memset(indices_.data(), kPoisonByte, n * sizeof(int32_t));
    if (with_scores_) {
        scores_.resize(n);
        std::memset(scores_.data(), kPoisonByte, n * sizeof(float));
    }
}

dsa_topk_outputs_t TopkOutput::outputs() {
    dsa_topk_outputs_t out;
    dsa_topk_outputs_init(&out);
    out.indices = indices_.data();
    out.scores = with_scores_ ? scores_.data() : nullptr;
    return out;
}

namespace {
bool all_poison(const void* data, size_t bytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    return std::all_of(p, p + bytes, [](uint8_t b) { return b == kPoisonByte; });
}
}  // namespace

bool TopkOutput::guards_intact() const {
    const size_t body = size_t(rows * topk);
    return all_poison(indices_.data() + body, kGuard * 4) && (!with_scores_ || all_poison(scores_.data() + body, kGuard * 4));
}

bool TopkOutput::untouched() const {
    return all_poison(indices_.data(), indices_.size() * 4) && all_poison(scores_.data(), scores_.size() * 4);
}

bool TopkOutput::same_bits(const TopkOutput& other) const {
    const size_t body = size_t(rows * topk) * 4;
    return rows == other.rows && topk == other.topk && with_scores_ == other.with_scores_ &&
           std::memcmp(indices_.data(), other.indices_.data(), body) == 0 &&
           (!with_scores_ || std::memcmp(scores_.data(), other.scores_.data(), body) == 0);
}

Context::Context(int32_t cpu_threads) {
    dsa_context_config_t config;
    dsa_context_config_init(&config);
    config.num_cpu_threads = cpu_threads;
    const dsa_status_t status = dsa_context_create(&config, &handle_);
    if (status != DSA_STATUS_SUCCESS) throw std::runtime_error("dsa_context_create: " + describe_status(status));
}

Context::Context(const int32_t* device_ids, int32_t num_devices) {
    dsa_context_config_t config;
    dsa_context_config_init(&config);
    config.device_ids = device_ids;
    config.num_devices = num_devices;
    const dsa_status_t status = dsa_context_create(&config, &handle_);
    if (status != DSA_STATUS_SUCCESS) throw std::runtime_error("dsa_context_create: " + describe_status(status));
}

Context::~Context() { dsa_context_destroy(handle_); }

dsa_status_t run_paged(dsa_context_t ctx, const PagedCase& c, int topk, uint32_t flags, TopkOutput& out) {
    const dsa_topk_params_t params = c.params(topk, flags);
    const dsa_paged_inputs_t inputs = c.inputs();
    const dsa_topk_outputs_t outputs = out.outputs();
    return dsa_topk_paged(ctx, &params, &inputs, &outputs, nullptr, 0, nullptr);
}

dsa_status_t run_ragged(dsa_context_t ctx, const RaggedCase& c, int topk, uint32_t flags, TopkOutput& out) {
    const dsa_topk_params_t params = c.params(topk, flags);
    const dsa_ragged_inputs_t inputs = c.inputs();
    const dsa_topk_outputs_t outputs = out.outputs();
    return dsa_topk_ragged(ctx, &params, &inputs, &outputs, nullptr, 0, nullptr);
}

std::string describe_status(dsa_status_t status) {
    return std::string(dsa_status_string(status)) + ": " + dsa_last_error_message();
}

}  // namespace dsa_test
