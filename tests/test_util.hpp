// The test oracle of the dsa_indexer tests, written from SPEC.md alone (nothing from src/ is reused):
// fp8 e4m3fn coding, SPEC section 6 input generators, a float64 brute-force scorer, the SPEC section 5
// checker, the FlashInfer-Bench comparison, and an exact checker for integer-valued inputs.
// Positions are int64 everywhere in the oracle.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <new>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "dsa_indexer.h"

namespace dsa_test {

constexpr int kHeadDim = 128;
constexpr uint8_t kPoisonByte = 0x5A;  // fills output memory before a call, to see what it wrote

// ---- fp8 e4m3fn (OCP): bias 7, exponent 0 subnormal, S.1111.111 NaN, no infinity ----------------------
constexpr uint8_t kFp8NaN = 0x7F;
constexpr uint8_t kFp8Max = 0x7E;  // 448
double fp8_decode(uint8_t byte);
// Round to nearest, ties to even; finite values beyond +-448 saturate; NaN gives kFp8NaN.
uint8_t fp8_encode(double value);

// ---- memory ---------------------------------------------------------------------------------------------
// 64-byte aligned vectors: the API requires 16-byte aligned q and k, and tests offset pointers on purpose.
template <class T>
struct AlignedAllocator {
    using value_type = T;
    AlignedAllocator() = default;
    template <class U>
    AlignedAllocator(const AlignedAllocator<U>&) {}
    T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
    void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
    template <class U>
    bool operator==(const AlignedAllocator<U>&) const { return true; }
    template <class U>
    bool operator!=(const AlignedAllocator<U>&) const { return false; }
};
template <class T>
using Buffer = std::vector<T, AlignedAllocator<T>>;

template <class T>
std::vector<uint8_t> bytes_of(const Buffer<T>& buffer) {
    const auto* begin = reinterpret_cast<const uint8_t*>(buffer.data());
    return std::vector<uint8_t>(begin, begin + buffer.size() * sizeof(T));
}

// ---- randomness -----------------------------------------------------------------------------------------
class Rng {
public:
    explicit Rng(uint64_t seed) : engine_(seed) {}
    double normal() { return normal_(engine_); }
    int64_t uniform(int64_t lo, int64_t hi_inclusive) {
        return std::uniform_int_distribution<int64_t>(lo, hi_inclusive)(engine_);
    }
    std::mt19937_64& engine() { return engine_; }

private:
    std::mt19937_64 engine_;
    std::normal_distribution<double> normal_{0.0, 1.0};
};

// ---- problems -------------------------------------------------------------------------------------------
// What the oracle and the checkers see of a call: per row, its query, weights and visible keys, and the
// mapping between a visible position and the index the library reports for it.
class TopkCase {
public:
    virtual ~TopkCase() = default;
    virtual int heads() const = 0;
    virtual int64_t rows() const = 0;
    virtual const uint8_t* query(int64_t row) const = 0;     // [H, D] fp8
    virtual const float* row_weights(int64_t row) const = 0;  // [H]
    virtual int64_t visible(int64_t row) const = 0;
    virtual const uint8_t* key(int64_t row, int64_t pos) const = 0;  // [D] fp8
    virtual float key_scale(int64_t row, int64_t pos) const = 0;
    virtual int32_t index_of(int64_t row, int64_t pos, uint32_t flags) const = 0;
    // The visible position a reported index names, or -1 when it names none.
    virtual int64_t position_of(int64_t row, int32_t index, uint32_t flags) const = 0;
};

struct PagedLayout {
    int heads = 64;
    int page_size = 64;
    int next_n = 1;
    int32_t unused_columns = 1;      // block-table columns beyond the longest sequence's pages
    int64_t table_padding = 0;       // block_table_stride - max_pages
    int64_t page_padding_bytes = 0;  // page_stride_bytes - P * (D + 4); a multiple of 16
    int64_t spare_pages = 3;         // physical pages no sequence uses
};

// A paged decode call (SPEC section 1) owning its host memory. The block table maps the sequences' pages
// to a random permutation of the physical pages; unused columns hold other (valid) pages, the stride
// padding holds junk, and so do page paddings, so that reading any of them shows up in results.
class PagedCase final : public TopkCase {
public:
    PagedCase(const PagedLayout& layout, std::vector<int32_t> seq_lens, uint64_t seed);

    PagedLayout layout;
    int32_t batch_size = 0;
    int32_t max_pages = 0;
    int64_t table_stride = 0;
    int64_t num_pages = 0;
    int64_t page_stride = 0;
    Buffer<uint8_t> q;        // [B * next_n, H, D]
    Buffer<uint8_t> k_cache;  // [num_pages, page_stride]
    Buffer<float> weights;    // [B * next_n, H]
    Buffer<int32_t> seq_lens;
    Buffer<int32_t> block_table;  // [B, table_stride]

    dsa_paged_inputs_t inputs() const;
    dsa_topk_params_t params(int topk, uint32_t flags) const;
    uint8_t* mutable_key(int32_t seq, int64_t pos);
    void set_scale(int32_t seq, int64_t pos, float scale);
    uint8_t* mutable_query(int64_t row) { return q.data() + row * heads() * kHeadDim; }
    float* mutable_weights(int64_t row) { return weights.data() + row * heads(); }
    int32_t seq_of(int64_t row) const { return int32_t(row / layout.next_n); }
    int64_t pages_of(int32_t seq) const { return (int64_t(seq_lens[size_t(seq)]) + layout.page_size - 1) / layout.page_size; }

    int heads() const override { return layout.heads; }
    int64_t rows() const override { return int64_t(batch_size) * layout.next_n; }
    const uint8_t* query(int64_t row) const override { return q.data() + row * heads() * kHeadDim; }
    const float* row_weights(int64_t row) const override { return weights.data() + row * heads(); }
    int64_t visible(int64_t row) const override;
    const uint8_t* key(int64_t row, int64_t pos) const override;
    float key_scale(int64_t row, int64_t pos) const override;
    int32_t index_of(int64_t row, int64_t pos, uint32_t flags) const override;
    int64_t position_of(int64_t row, int32_t index, uint32_t flags) const override;

private:
    const uint8_t* page_base(int32_t seq, int64_t pos) const;
    mutable std::vector<std::unordered_map<int64_t, int64_t>> logical_page_of_;  // per sequence, built lazily
};

// A ragged prefill call (SPEC section 2): row r sees keys [row_start[r], row_end[r]).
class RaggedCase final : public TopkCase {
public:
    RaggedCase(int heads, int64_t num_keys, const std::vector<std::pair<int32_t, int32_t>>& windows);

    int num_heads;
    Buffer<uint8_t> q;  // [S, H, D]
    Buffer<uint8_t> k;  // [N, D]
    Buffer<float> k_scale;
    Buffer<float> weights;  // [S, H]
    Buffer<int32_t> row_start, row_end;

    int64_t num_keys() const { return int64_t(k_scale.size()); }
    dsa_ragged_inputs_t inputs() const;
    dsa_topk_params_t params(int topk, uint32_t flags) const;
    uint8_t* mutable_key(int64_t key_index) { return k.data() + key_index * kHeadDim; }
    void set_scale(int64_t key_index, float scale) { k_scale[size_t(key_index)] = scale; }
    uint8_t* mutable_query(int64_t row) { return q.data() + row * heads() * kHeadDim; }
    float* mutable_weights(int64_t row) { return weights.data() + row * heads(); }

    int heads() const override { return num_heads; }
    int64_t rows() const override { return int64_t(row_start.size()); }
    const uint8_t* query(int64_t row) const override { return q.data() + row * heads() * kHeadDim; }
    const float* row_weights(int64_t row) const override { return weights.data() + row * heads(); }
    int64_t visible(int64_t row) const override { return int64_t(row_end[size_t(row)]) - row_start[size_t(row)]; }
    const uint8_t* key(int64_t row, int64_t pos) const override {
        return k.data() + (row_start[size_t(row)] + pos) * kHeadDim;
    }
    float key_scale(int64_t row, int64_t pos) const override { return k_scale[size_t(row_start[size_t(row)] + pos)]; }
    int32_t index_of(int64_t row, int64_t pos, uint32_t flags) const override;
    int64_t position_of(int64_t row, int32_t index, uint32_t flags) const override;
};

// Causal windows of a ragged batch: sequence i has key_lens[i] keys, its last query_lens[i] tokens are
// query rows, and query row t of it sees the keys up to and including its own token.
std::vector<std::pair<int32_t, int32_t>> causal_windows(const std::vector<int32_t>& key_lens,
                                                        const std::vector<int32_t>& query_lens);

// The same call restricted to sequences [first, first + count): pointers offset into the same memory
// (host or device), so results of those rows must not change (SPEC: batch composition does not matter).
dsa_paged_inputs_t sub_batch(const dsa_paged_inputs_t& in, int heads, int next_n, int32_t first, int32_t count);

PagedLayout layout_of(int heads, int page_size, int next_n);

// Calls fn(k, flags, with_scores) for every (k, flags) pair, requesting scores for half of them,
// alternating so that each k and each flag set meets both.
template <class Fn>
void for_each_variant(std::initializer_list<int> ks, const std::vector<uint32_t>& flag_sets, Fn&& fn) {
    int k_index = 0;
    for (int k : ks) {
        int flag_index = 0;
        for (uint32_t flags : flag_sets) fn(k, flags, (k_index + flag_index++) % 2 == 0);
        ++k_index;
    }
}

// ---- generators -----------------------------------------------------------------------------------------
// SPEC section 6: q = fp8(clamp(randn, -2, 2)); key = fp8(k / s) with s = max(amax(k), 1e-4) / 448;
// weights randn (negative ones included).
void fill_spec6(PagedCase& c, Rng& rng);
void fill_spec6(RaggedCase& c, Rng& rng);

// Integer data whose scores are distinct within each row, by construction:
//   score(p) = v_p + 4096 * noise_p   (v_p distinct in [0, 4096), |noise| < 2^11)   when every key group
//   has at most 4096 keys, or score(p) = v_p with v_p distinct in [0, 2^24) for larger groups.
// Head 0 reads v's low base-16 digits (q = 1, 16, 256 on dims 0..2), head 1 its high digits (weight 4096);
// the other heads carry small random integers. Every value, product and partial sum is an integer below
// 2^24, so every fp32 summation order is exact. Scales are 1. A key group is a sequence (paged) or the
// whole key array (ragged).
void fill_tie_free(PagedCase& c, Rng& rng);
void fill_tie_free(RaggedCase& c, Rng& rng);

// Zero keys (every score exactly +0, all tied) except `planted` tokens per sequence that score distinct
// integers, every other one negated (scale -1). Only head 0 has a non-zero weight; the other heads carry
// random queries. The exact scores come with the case, with no scoring pass, so sequences of a million
// tokens stay cheap to check.
PagedCase planted_paged(const PagedLayout& layout, std::vector<int32_t> seq_lens, int64_t planted, uint64_t seed,
                        std::vector<std::vector<double>>& exact_scores);

// `count` distinct positions of [0, n), in random order.
std::vector<int64_t> random_subset(Rng& rng, int64_t n, int64_t count);

// Gives `count` random positions of sequence `seq` special scores: scale +inf or -inf (score +-inf, or NaN
// where the sum is 0), scale NaN, or a NaN key byte. Every score stays exact in float64, so compute_oracle
// gives the exact expectation.
void add_special_scores(PagedCase& c, int32_t seq, int64_t count, Rng& rng);

// SPEC section 6 sequence lengths around a top-k of `topk` with page size P: 0, 1, < k, = k, not a
// multiple of P, and `long_len`.
std::vector<int32_t> mixed_seq_lens(int topk, int page_size, int32_t long_len);

// ---- oracles --------------------------------------------------------------------------------------------
// Per row and visible position: the float64 score, A(p) of SPEC section 5, and M(p) = |s_p| * sum_h |w_h| *
// sum_d |q_hd k_pd|, the scale of fp32 summation error (used only for the returned-scores check).
struct RowOracle {
    std::vector<double> score, magnitude, abs_sum;
};
using Oracle = std::vector<RowOracle>;
Oracle compute_oracle(const TopkCase& c);  // threaded over rows

// Exact scores of integer-valued inputs (every fp8 value and weight an integer, scales +-1), computed in
// int64 and returned as (exactly representable) doubles. Throws std::logic_error for other inputs.
std::vector<std::vector<double>> integer_scores(const TopkCase& c);

// The ranking rule: NaN below everything, -0 == +0, ties by ascending position.
bool ranks_before(double a, int64_t pos_a, double b, int64_t pos_b);
// The first `count` positions of a row in ranking order.
std::vector<int64_t> ranked_positions(const std::vector<double>& scores, int64_t count);

// ---- checkers (each returns "" on success, else the first failure in words) -----------------------------
// Structure only: indices distinct and visible, count min(k, n), -1 padding, -inf score padding.
std::string check_valid(const TopkCase& c, int topk, uint32_t flags, const int32_t* indices, const float* scores);
// SPEC section 5 (rank rule), order in sorted mode, returned scores close to the oracle, and the
// FlashInfer-Bench comparison on rows whose oracle scores are finite.
std::string check_spec5(const TopkCase& c, const Oracle& oracle, int topk, uint32_t flags, const int32_t* indices,
                        const float* scores);
// The FlashInfer-Bench evaluator: sorted oracle scores of the returned set against those of the oracle's
// own top k, pass when abs error <= 1e-2 or rel error <= 1e-2 elementwise.
std::string check_flashinfer(const TopkCase& c, const Oracle& oracle, int topk, uint32_t flags,
                             const int32_t* indices);
// Exact expectation from exact scores: the same set (sorted mode: the same sequence) and bit-exact
// returned scores. Among NaN scores the choice is free (only that NaN positions fill the tail is checked).
std::string check_exact(const TopkCase& c, const std::vector<std::vector<double>>& exact, int topk,
                        uint32_t flags, const int32_t* indices, const float* scores);

// ---- calls on a CPU context ----------------------------------------------------------------------------
// Output buffers of one call, poisoned, with a poisoned guard tail that no call may touch.
class TopkOutput {
public:
    TopkOutput(int64_t rows, int topk, bool with_scores);
    dsa_topk_outputs_t outputs();
    const int32_t* indices() const { return indices_.data(); }
    const float* scores() const { return with_scores_ ? scores_.data() : nullptr; }
    bool guards_intact() const;
    bool untouched() const;  // every byte still the poison
    bool same_bits(const TopkOutput& other) const;
    int64_t rows;
    int topk;

private:
    static constexpr int64_t kGuard = 64;
    bool with_scores_;
    Buffer<int32_t> indices_;
    Buffer<float> scores_;
};

// Owns a context; throws std::runtime_error when creation fails.
class Context {
public:
    explicit Context(int32_t cpu_threads = 0);
    Context(const int32_t* device_ids, int32_t num_devices);
    ~Context();
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    dsa_context_t get() const { return handle_; }

private:
    dsa_context_t handle_ = nullptr;
};

dsa_status_t run_paged(dsa_context_t ctx, const PagedCase& c, int topk, uint32_t flags, TopkOutput& out);
dsa_status_t run_ragged(dsa_context_t ctx, const RaggedCase& c, int topk, uint32_t flags, TopkOutput& out);

std::string describe_status(dsa_status_t status);  // "DSA_STATUS_X: <last error message>"

}  // namespace dsa_test
