// Fuzz harness of the public API on the CPU backend (issue #5). Each input decodes into one scenario: a
// paged call, a ragged call, an owned-cache session, or context and config calls, with parameters, sizes,
// seq_lens, block tables, strides, flags, pointers (NULL, misaligned, aliased) and data all taken from the
// input. Every buffer is exactly as large as the call may touch, so ASan reports any access outside it.
//
// A model written from SPEC sections 3-4 and dsa_indexer.h (not from src/) says whether the call must
// succeed and, if not, which statuses the broken rules allow. Then:
//   success:   the result is valid (min(k, n) distinct visible indices, then -1 / -inf padding), matches
//              the float64 oracle (SPEC 5) or the exact expectation depending on the data, and global-slot
//              results are the logical ones mapped through the block table;
//   rejection: an allowed status, a non-empty message, the outputs still poisoned;
//   always:    no input byte changed; an owned cache holds exactly what the accepted writes put there.
// Any mismatch aborts, which libFuzzer reports as a crash. Built by tests/fuzz/CMakeLists.txt.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "dsa_indexer.h"
#include "test_util.hpp"

using namespace dsa_test;

namespace {

constexpr int32_t kI32Min = std::numeric_limits<int32_t>::min();
constexpr int32_t kI32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr uint32_t kKnownFlags = DSA_TOPK_SORTED | DSA_TOPK_LOGICAL_INDICES | DSA_TOPK_ABSOLUTE_INDICES;

// Bounds that keep one input's memory small (a few MB at most).
constexpr int kMaxBatch = 4;
constexpr int kMaxPagesPerSeq = 4;
constexpr int kMaxPhysicalPages = 6;
constexpr int kMaxRaggedRows = 6;
constexpr int kMaxRaggedKeys = 300;
constexpr int kMaxCacheOps = 6;

[[noreturn]] void finding(const std::string& what) {
    std::fprintf(stderr, "\nFUZZ FINDING: %s\n", what.c_str());
    std::fflush(stderr);
    std::abort();
}

// ---- decoding -------------------------------------------------------------------------------------------
// Reads the input front to back; past its end every byte reads 0, and 0 always decodes to the plain valid
// choice, so a short input is an ordinary call and each further byte can add one deviation. Bulk data
// (raw keys and queries) comes from the back of the input, cycled.
class FuzzInput {
public:
    FuzzInput(const uint8_t* data, size_t size) : data_(data), size_(size) {}

    uint8_t byte() { return front_ < size_ ? data_[front_++] : 0; }
    uint32_t u16() { return byte() | uint32_t(byte()) << 8; }
    uint32_t u32() { return u16() | u16() << 16; }
    uint64_t u64() { return u32() | uint64_t(u32()) << 32; }

    // A value in [lo, hi], spending as few bytes as the span needs.
    int64_t in_range(int64_t lo, int64_t hi) {
        const uint64_t span = uint64_t(hi) - uint64_t(lo) + 1;
        const uint64_t raw = span <= 256 ? byte() : span <= 65536 ? u16() : u64();
        return int64_t(uint64_t(lo) + (span == 0 ? raw : raw % span));
    }
    // True for 1 byte value in 16: the branch that breaks a rule.
    bool rarely() { return byte() >= 240; }
    template <class T>
    T pick(std::initializer_list<T> values) {
        return values.begin()[byte() % values.size()];
    }
    uint8_t data_byte() {
        if (size_ == 0) return 0;
        if (back_ == 0) back_ = size_;
        return data_[--back_];
    }

private:
    const uint8_t* data_;
    size_t size_;
    size_t front_ = 0;
    size_t back_ = 0;
};

// ---- outcome counts ---------------------------------------------------------------------------------------
// With DSA_FUZZ_STATS=1 in the environment, the outcomes of every checked call, printed at exit: how many
// calls each status ended, per entry point (the figures of tests/RELIABILITY.md).
class OutcomeCounts {
public:
    static OutcomeCounts& get() {
        static OutcomeCounts* counts = new OutcomeCounts();  // never destroyed: used from an atexit handler
        return *counts;
    }
    void add(const std::string& call, dsa_status_t status) {
        if (enabled_) ++counts_[call][dsa_status_string(status)];
    }

private:
    OutcomeCounts() : enabled_(std::getenv("DSA_FUZZ_STATS") != nullptr) {
        if (enabled_) std::atexit([] { get().print(); });
    }
    void print() const {
        for (const auto& [call, by_status] : counts_)
            for (const auto& [status, n] : by_status) std::fprintf(stderr, "outcome %-62s %-34s %llu\n", call.c_str(), status.c_str(), n);
    }
    bool enabled_;
    std::map<std::string, std::map<std::string, unsigned long long>> counts_;
};

// ---- the model: which rules a call breaks ---------------------------------------------------------------
class Expectation {
public:
    explicit Expectation(std::string call) : call_(std::move(call)) {}

    void rule(bool holds, dsa_status_t status, const char* what) {
        if (!holds) broken_.emplace_back(status, what);
    }
    bool valid() const { return broken_.empty(); }

    // Aborts unless `got` is what the rules allow: success with an empty message when none is broken, else
    // the status of one of the broken rules with a message.
    void check(dsa_status_t got) const {
        OutcomeCounts::get().add(call_, got);
        const std::string message = dsa_last_error_message();
        if (broken_.empty()) {
            if (got != DSA_STATUS_SUCCESS) finding(call_ + " rejected valid input: " + describe(got, message));
            if (!message.empty()) finding(call_ + " succeeded but left the message \"" + message + "\"");
            return;
        }
        const bool allowed = std::any_of(broken_.begin(), broken_.end(), [&](const auto& b) { return b.first == got; });
        if (!allowed || message.empty()) {
            std::string rules;
            for (const auto& b : broken_) rules += std::string("\n  broken: ") + b.second + " -> " + dsa_status_string(b.first);
            finding(call_ + " returned " + describe(got, message) + rules);
        }
    }

private:
    static std::string describe(dsa_status_t s, const std::string& message) {
        return std::string(dsa_status_string(s)) + " (\"" + message + "\")";
    }
    std::string call_;
    std::vector<std::pair<dsa_status_t, const char*>> broken_;
};

bool aligned(const void* p, uintptr_t alignment) { return reinterpret_cast<uintptr_t>(p) % alignment == 0; }

// a * b + c, or -1 when that is negative or does not fit in int64 (no caller buffer can be that large).
int64_t extent(int64_t a, int64_t b, int64_t c = 0) {
    __int128 v = __int128(a) * b + c;
    return (v < 0 || v > kI64Max) ? -1 : int64_t(v);
}

// A caller buffer as the SPEC's aliasing rule sees it: [begin, begin + bytes).
struct Range {
    const void* begin;
    int64_t bytes;
};

bool overlap(Range a, Range b) {
    if (!a.begin || !b.begin || a.bytes <= 0 || b.bytes <= 0) return false;
    const __int128 a0 = reinterpret_cast<uintptr_t>(a.begin), b0 = reinterpret_cast<uintptr_t>(b.begin);
    return a0 < b0 + b.bytes && b0 < a0 + a.bytes;
}

// A struct is read at its current size or, for those that grew since 0.1, at its 0.1 size.
template <class T>
size_t first_release_size() { return sizeof(T); }
template <>
size_t first_release_size<dsa_topk_outputs_t>() { return offsetof(dsa_topk_outputs_t, memory_device); }
template <>
size_t first_release_size<dsa_context_config_t>() { return offsetof(dsa_context_config_t, nccl_unique_id); }
template <>
size_t first_release_size<dsa_cache_config_t>() { return offsetof(dsa_cache_config_t, mode); }

template <class T>
bool struct_ok(const T* s) {
    return s && (s->struct_size == sizeof(T) || s->struct_size == first_release_size<T>());
}

template <class T>
void struct_rule(Expectation& e, const T* s, const char* null_rule, const char* size_rule) {
    e.rule(s != nullptr, DSA_STATUS_INVALID_ARGUMENT, null_rule);
    if (s && !struct_ok(s))
        e.rule(false, s->struct_size < sizeof(T) ? DSA_STATUS_INVALID_ARGUMENT : DSA_STATUS_UNSUPPORTED, size_rule);
}

// SPEC section 3 and the flag rules. Returns whether the params could be read (fields known).
bool params_rules(Expectation& e, const dsa_topk_params_t* p, bool paged) {
    struct_rule(e, p, "params is NULL", "params->struct_size");
    if (!struct_ok(p)) return false;
    e.rule(p->num_heads == 32 || p->num_heads == 64, DSA_STATUS_UNSUPPORTED, "num_heads in {32, 64}");
    e.rule(p->head_dim == 128, DSA_STATUS_UNSUPPORTED, "head_dim 128");
    e.rule(p->topk >= 1 && p->topk <= 2048, DSA_STATUS_UNSUPPORTED, "topk in [1, 2048]");
    e.rule((p->flags & ~kKnownFlags) == 0, DSA_STATUS_INVALID_ARGUMENT, "no unknown flag bits");
    if (paged) {
        e.rule(p->page_size == 32 || p->page_size == 64, DSA_STATUS_UNSUPPORTED, "page_size in {32, 64}");
        e.rule(p->next_n >= 1 && p->next_n <= 4, DSA_STATUS_UNSUPPORTED, "next_n in [1, 4]");
        e.rule(!(p->flags & DSA_TOPK_ABSOLUTE_INDICES), DSA_STATUS_INVALID_ARGUMENT, "no ABSOLUTE flag on a paged call");
    } else {
        e.rule(!(p->flags & DSA_TOPK_LOGICAL_INDICES), DSA_STATUS_INVALID_ARGUMENT, "no LOGICAL flag on a ragged call");
    }
    return true;
}

// The outputs' own rules, then no output may overlap an input or the other output.
void output_rules(Expectation& e, const dsa_topk_outputs_t* o, int64_t rows, int topk, const std::vector<Range>& inputs) {
    struct_rule(e, o, "outputs is NULL", "outputs->struct_size");
    if (!struct_ok(o)) return;
    if (rows > 0) e.rule(o->indices != nullptr, DSA_STATUS_INVALID_ARGUMENT, "outputs->indices not NULL");
    e.rule(aligned(o->indices, 4), DSA_STATUS_INVALID_ARGUMENT, "outputs->indices aligned");
    e.rule(aligned(o->scores, 4), DSA_STATUS_INVALID_ARGUMENT, "outputs->scores aligned");
    const int64_t bytes = rows * topk * 4;
    const Range outs[2] = {{o->indices, bytes}, {o->scores, bytes}};
    e.rule(!overlap(outs[0], outs[1]), DSA_STATUS_INVALID_ARGUMENT, "indices and scores do not overlap");
    for (const Range& out : outs)
        for (const Range& in : inputs) e.rule(!overlap(out, in), DSA_STATUS_INVALID_ARGUMENT, "outputs overlap no input");
}

// ---- data -----------------------------------------------------------------------------------------------
// Spec6: SPEC section 6 data, checked against the float64 oracle (SPEC 5). SmallIntegers: exact scores,
// checked exactly. Raw: any bytes and special floats (NaN keys, infinities), checked for validity only.
enum class Content { Spec6, SmallIntegers, Raw };

float special_float(FuzzInput& in, bool nan_allowed) {
    const float values[] = {1.0f, -1.0f, 0.0f, -0.0f, 0.5f, 3.0f, 1e-30f, 1e-45f, 1e30f, -1e30f,
                            std::numeric_limits<float>::max(), kInf, -kInf, kNaN};
    const size_t count = sizeof values / sizeof values[0] - (nan_allowed ? 0 : 1);
    return values[in.data_byte() % count];
}

class DataSource {
public:
    DataSource(FuzzInput& in, Content content) : in_(in), content_(content), rng_(in.u64()) {}
    Content content() const { return content_; }

    void query(uint8_t* q, size_t n) {
        for (size_t i = 0; i < n; ++i)
            q[i] = content_ == Content::Spec6       ? fp8_encode(std::clamp(rng_.normal(), -2.0, 2.0))
                   : content_ == Content::SmallIntegers ? fp8_encode(double(rng_.uniform(-4, 4)))
                                                        : in_.data_byte();
    }
    void weights(float* w, size_t n, bool nan_allowed) {
        for (size_t i = 0; i < n; ++i)
            w[i] = content_ == Content::Spec6       ? float(rng_.normal())
                   : content_ == Content::SmallIntegers ? float(rng_.uniform(-3, 3))
                                                        : special_float(in_, nan_allowed);
    }
    // One token: D fp8 key bytes and its scale.
    void token(uint8_t* key, float* scale) {
        if (content_ == Content::Spec6) {
            double values[kHeadDim], amax = 0.0;
            for (double& v : values) amax = std::max(amax, std::fabs(v = rng_.normal()));
            const double s = std::max(amax, 1e-4) / 448.0;
            for (int d = 0; d < kHeadDim; ++d) key[d] = fp8_encode(values[d] / s);
            *scale = float(s);
        } else if (content_ == Content::SmallIntegers) {
            for (int d = 0; d < kHeadDim; ++d) key[d] = fp8_encode(double(rng_.uniform(-4, 4)));
            *scale = rng_.uniform(0, 1) ? 1.0f : -1.0f;
        } else {
            for (int d = 0; d < kHeadDim; ++d) key[d] = in_.data_byte();
            *scale = special_float(in_, true);
        }
    }

private:
    FuzzInput& in_;
    Content content_;
    Rng rng_;
};

Content content_of(FuzzInput& in) { return in.pick({Content::Spec6, Content::SmallIntegers, Content::Raw}); }

// ---- checking a successful result -----------------------------------------------------------------------
// (memset and memcmp are declared nonnull: empty buffers have no data pointer, so they are skipped.)
void poison(void* p, size_t bytes) {
    if (bytes) std::memset(p, kPoisonByte, bytes);
}
bool poisoned(const void* p, size_t bytes) {
    return std::all_of(static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + bytes,
                       [](uint8_t b) { return b == kPoisonByte; });
}
bool same_bytes(const void* a, const void* b, size_t bytes) { return bytes == 0 || std::memcmp(a, b, bytes) == 0; }

// Poisoned output buffers of exactly rows * k elements each (ASan guards their ends).
struct Outputs {
    Buffer<int32_t> indices;
    Buffer<float> scores;
    Outputs(int64_t rows, int topk, bool with_scores)
        : indices(size_t(std::max<int64_t>(0, rows * topk))), scores(with_scores ? indices.size() : 0) {
        poison(indices.data(), indices.size() * 4);
        poison(scores.data(), scores.size() * 4);
    }
    bool untouched() const { return poisoned(indices.data(), indices.size() * 4) && poisoned(scores.data(), scores.size() * 4); }
    dsa_topk_outputs_t plain() {
        dsa_topk_outputs_t o;
        dsa_topk_outputs_init(&o);
        o.indices = indices.data();
        o.scores = scores.empty() ? nullptr : scores.data();
        return o;
    }
};

// What an accepted call wrote: its outputs struct must name these buffers (aliasing is rejected).
void require_own_outputs(const dsa_topk_outputs_t& written, Outputs& out, const char* call) {
    if (out.indices.empty()) return;
    if (written.indices != out.indices.data() || (written.scores && written.scores != out.scores.data()))
        finding(std::string(call) + " accepted outputs that alias other memory");
}

// The checker for the data kind; `c` reports logical positions for `flags`.
void check_result(const TopkCase& c, Content content, int topk, uint32_t flags, const int32_t* indices,
                  const float* scores, const char* call) {
    std::string failure;
    if (content == Content::Spec6)
        failure = check_spec5(c, compute_oracle(c), topk, flags, indices, scores);
    else if (content == Content::SmallIntegers)
        failure = check_exact(c, integer_scores(c), topk, flags, indices, scores);
    else
        failure = check_valid(c, topk, flags, indices, scores);
    if (!failure.empty()) finding(std::string(call) + " result: " + failure);
}

// Copies of input bytes, to prove a call wrote none of them.
class InputSnapshot {
public:
    void add(const void* p, size_t bytes) {
        const auto* b = static_cast<const uint8_t*>(p);
        copies_.emplace_back(b, std::vector<uint8_t>(b, b + bytes));
    }
    void check(const char* call) const {
        for (const auto& [p, bytes] : copies_)
            if (!same_bytes(p, bytes.data(), bytes.size()))
                finding(std::string(call) + " wrote into an input buffer");
    }

private:
    std::vector<std::pair<const uint8_t*, std::vector<uint8_t>>> copies_;
};

// ---- pointers -------------------------------------------------------------------------------------------
template <class T>
void vary_struct_size(FuzzInput& in, T& s) {
    if (in.rarely()) s.struct_size = in.pick<size_t>({0, 8, sizeof s - 8, sizeof s + 8, ~size_t(0)});
}

// Usually the buffer itself; sometimes NULL or off by a few bytes (never dereferenced by the harness).
template <class T>
T* vary_pointer(FuzzInput& in, T* p, uintptr_t natural_alignment) {
    const uint8_t mode = in.byte();
    if (mode < 244) return p;
    if (mode < 250) return nullptr;
    const uintptr_t shift = natural_alignment == 16 ? in.pick<uintptr_t>({1, 4, 8}) : in.pick<uintptr_t>({1, 2});
    return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(p) + shift);
}

template <class T>
T* null_rarely(FuzzInput& in, T* p) {
    return in.rarely() ? nullptr : p;
}

// The outputs struct of a call: the poisoned buffers, or (rarely) NULL, misaligned or aliased pointers.
// `inputs` are the input buffers as allocated: an aliased output starts inside one of them, so that a
// call that wrongly accepts it writes into memory the harness owns (where ASan and the snapshot see it).
dsa_topk_outputs_t choose_outputs(FuzzInput& in, Outputs& out, const std::vector<Range>& inputs) {
    dsa_topk_outputs_t o = out.plain();
    o.indices = vary_pointer(in, o.indices, 4);
    o.scores = o.scores ? vary_pointer(in, o.scores, 4) : nullptr;
    if (in.rarely()) {  // one output moved onto an input or onto the other output, a few elements in
        const bool move_indices = in.byte() % 2;
        const size_t which = in.byte() % (inputs.size() + 1);
        // The other output only while it is passed: otherwise its buffer is merely memory too small.
        const void* other_begin = move_indices ? static_cast<const void*>(o.scores) : static_cast<const void*>(o.indices);
        const bool other_passed = other_begin == (move_indices ? static_cast<const void*>(out.scores.data())
                                                               : static_cast<const void*>(out.indices.data()));
        const Range other = {other_passed ? other_begin : nullptr, int64_t(out.indices.size()) * 4};
        const Range target = which < inputs.size() ? inputs[which] : other;
        const int64_t offset = 4 * in.in_range(0, 3);
        if (target.begin && target.bytes > offset) {
            const uintptr_t at = reinterpret_cast<uintptr_t>(target.begin) + uintptr_t(offset);
            if (move_indices)
                o.indices = reinterpret_cast<int32_t*>(at);
            else
                o.scores = reinterpret_cast<float*>(at);
        }
    }
    vary_struct_size(in, o);
    return o;
}

dsa_context_t make_context(FuzzInput& in) {
    dsa_context_config_t config;
    dsa_context_config_init(&config);
    config.num_cpu_threads = int32_t(in.in_range(0, 3));
    dsa_context_t ctx = nullptr;
    if (dsa_context_create(&config, &ctx) != DSA_STATUS_SUCCESS) finding("creating a CPU context failed");
    return ctx;
}

// ---- paged calls ----------------------------------------------------------------------------------------
// The memory of one paged call. Sizes are the claimed ones wherever the claim is valid; otherwise the
// memory uses a valid stand-in (the call must then be rejected before anything is read). As a TopkCase it
// reports logical positions: global slots are checked by mapping logical results through the table.
class PagedMemory final : public TopkCase {
public:
    int H = 32, P = 32, next_n = 1;  // the layout of the memory (claimed values when valid)
    int32_t batch = 0, max_pages = 0;
    int64_t table_stride = 0, num_pages = 0, page_stride = 0;
    Buffer<uint8_t> q, k_cache;
    Buffer<float> weights;
    Buffer<int32_t> seq_lens, block_table;

    const int32_t* table_row(int32_t b) const { return block_table.data() + b * table_stride; }
    std::vector<Range> buffers() const {
        return {{q.data(), int64_t(q.size())}, {k_cache.data(), int64_t(k_cache.size())}, {weights.data(), int64_t(weights.size()) * 4},
                {seq_lens.data(), int64_t(seq_lens.size()) * 4}, {block_table.data(), int64_t(block_table.size()) * 4}};
    }
    int32_t global_slot(int64_t row, int64_t pos) const {
        return int32_t(int64_t(table_row(int32_t(row / next_n))[pos / P]) * P + pos % P);
    }

    int heads() const override { return H; }
    int64_t rows() const override { return int64_t(batch) * next_n; }
    const uint8_t* query(int64_t r) const override { return q.data() + r * H * kHeadDim; }
    const float* row_weights(int64_t r) const override { return weights.data() + r * H; }
    int64_t visible(int64_t r) const override {
        const int64_t len = seq_lens[size_t(r / next_n)];
        return std::clamp<int64_t>(len - next_n + r % next_n + 1, 0, len);
    }
    const uint8_t* key(int64_t r, int64_t pos) const override { return page(r, pos) + (pos % P) * kHeadDim; }
    float key_scale(int64_t r, int64_t pos) const override {
        float s;
        std::memcpy(&s, page(r, pos) + int64_t(P) * kHeadDim + (pos % P) * 4, 4);
        return s;
    }
    int32_t index_of(int64_t, int64_t pos, uint32_t) const override { return int32_t(pos); }
    int64_t position_of(int64_t r, int32_t index, uint32_t) const override {
        return index >= 0 && index < visible(r) ? index : -1;
    }

private:
    const uint8_t* page(int64_t r, int64_t pos) const {
        return k_cache.data() + table_row(int32_t(r / next_n))[pos / P] * page_stride;
    }
};

int32_t choose_topk(FuzzInput& in) {
    if (in.rarely()) return in.pick<int32_t>({0, -1, 2049, kI32Max, kI32Min});
    return int32_t(in.byte() < 200 ? in.in_range(1, 40) : in.in_range(1, 2048));
}

uint32_t choose_flags(FuzzInput& in) {
    uint32_t flags = in.byte() & (DSA_TOPK_SORTED | DSA_TOPK_LOGICAL_INDICES);
    if (in.rarely()) flags |= in.pick<uint32_t>({DSA_TOPK_ABSOLUTE_INDICES, 0x8u, 0x80000000u, uint32_t(in.u32())});
    return flags;
}

dsa_topk_params_t choose_paged_params(FuzzInput& in) {
    dsa_topk_params_t p;
    dsa_topk_params_init(&p);
    p.num_heads = in.rarely() ? in.pick<int32_t>({0, 16, 48, 65, -32, kI32Max}) : in.pick<int32_t>({32, 64});
    p.head_dim = in.rarely() ? in.pick<int32_t>({0, 64, 127, 129, -128}) : 128;
    p.page_size = in.rarely() ? in.pick<int32_t>({0, 1, 16, 63, 128, -64, kI32Min}) : in.pick<int32_t>({32, 64});
    p.next_n = in.rarely() ? in.pick<int32_t>({0, 5, -1, kI32Max}) : int32_t(in.in_range(1, 4));
    p.topk = choose_topk(in);
    p.flags = choose_flags(in);
    vary_struct_size(in, p);
    return p;
}

// Sizes, seq_lens and block table of a paged call. `cache_pages` > 0: an owned cache of that many pages
// supplies the keys (num_pages and page_stride stay 0 in the claim, as dsa_topk requires).
PagedMemory make_paged_memory(FuzzInput& in, const dsa_topk_params_t& p, DataSource& data, int64_t cache_pages) {
    PagedMemory m;
    m.H = (p.num_heads == 32 || p.num_heads == 64) ? p.num_heads : 32;
    m.P = (p.page_size == 32 || p.page_size == 64) ? p.page_size : 32;
    m.next_n = (p.next_n >= 1 && p.next_n <= 4) ? p.next_n : 1;
    const int64_t min_stride = int64_t(m.P) * (kHeadDim + 4);

    m.batch = in.rarely() ? in.pick<int32_t>({-1, kI32Min}) : int32_t(in.in_range(0, kMaxBatch));
    m.max_pages = in.rarely() ? in.pick<int32_t>({-1, kI32Min, kI32Max / m.P + 1}) : int32_t(in.in_range(0, kMaxPagesPerSeq));
    m.table_stride = m.max_pages + in.in_range(0, 2);
    if (in.rarely()) m.table_stride = in.pick<int64_t>({m.max_pages - int64_t(1), -1, int64_t(1) << 61, kI64Max});
    if (cache_pages > 0) {
        m.num_pages = cache_pages;
        m.page_stride = min_stride;
    } else {
        m.num_pages = in.rarely() ? in.pick<int64_t>({-1, kI64Min, (int64_t(1) << 31) / m.P + 1, kI64Max})
                                  : in.in_range(0, kMaxPhysicalPages);
        m.page_stride = min_stride + 16 * in.in_range(0, 3);
        if (in.rarely())
            m.page_stride = in.pick<int64_t>({min_stride - 16, min_stride + 8, min_stride + 1, 0, -16,
                                              int64_t(1) << 62, kI64Max & ~int64_t(15), kI64Min});
    }

    // Memory: the claimed sizes when they are valid and small; stand-ins otherwise. Huge strides are
    // valid claims only where they are never multiplied (one sequence, one page): one row, one page.
    const int32_t batch = std::max(m.batch, 0);
    const int32_t max_pages = (m.max_pages >= 0 && m.max_pages <= kMaxPagesPerSeq) ? m.max_pages : 0;
    const int64_t table_stride =
        (m.table_stride >= max_pages && m.table_stride <= max_pages + 2) ? m.table_stride : max_pages;
    const int64_t pages = (m.num_pages >= 0 && m.num_pages <= kMaxPhysicalPages) ? m.num_pages : 0;
    const int64_t page_bytes = (m.page_stride >= min_stride && m.page_stride <= min_stride + 48) ? m.page_stride : min_stride;
    const int64_t rows = int64_t(batch) * m.next_n;

    m.q.resize(size_t(rows * m.H * kHeadDim));
    m.weights.resize(size_t(rows * m.H));
    m.seq_lens.resize(size_t(batch));
    m.block_table.resize(size_t(batch > 0 ? (batch - 1) * table_stride + max_pages : 0));
    m.k_cache.resize(size_t(cache_pages > 0 ? 0 : pages * page_bytes));

    const int64_t capacity = int64_t(max_pages) * m.P;
    for (int32_t& len : m.seq_lens) {
        len = int32_t(in.pick<int>({0, 1, 2, 2, 2}) == 0 ? in.pick<int64_t>({0, 1, capacity}) : in.in_range(0, capacity));
        if (in.rarely()) len = in.pick<int32_t>({-1, int32_t(capacity + 1), kI32Min, kI32Max});
    }
    const int64_t table_pages = cache_pages > 0 ? cache_pages : pages;
    for (size_t i = 0; i < m.block_table.size(); ++i) {
        const size_t b = i / size_t(table_stride), column = i % size_t(table_stride);
        const bool visible = column < size_t(max_pages) && int64_t(column) * m.P < m.seq_lens[b];
        if (visible && table_pages > 0 && !in.rarely())
            m.block_table[i] = int32_t(in.in_range(0, table_pages - 1));
        else  // junk where nothing may be read; a bad entry where something is
            m.block_table[i] = in.pick<int32_t>({-1, int32_t(table_pages), kI32Max, kI32Min, 0});
    }

    data.query(m.q.data(), m.q.size());
    data.weights(m.weights.data(), m.weights.size(), in.rarely());
    for (int64_t page = 0; page * page_bytes < int64_t(m.k_cache.size()); ++page) {
        uint8_t* base = m.k_cache.data() + page * page_bytes;
        for (int t = 0; t < m.P; ++t) {
            float scale;
            data.token(base + t * kHeadDim, &scale);
            std::memcpy(base + m.P * kHeadDim + t * 4, &scale, 4);
        }
        std::memset(base + min_stride, 0xA5, size_t(page_bytes - min_stride));  // stride padding: never read
    }
    return m;
}

dsa_paged_inputs_t paged_inputs_of(const PagedMemory& m) {
    dsa_paged_inputs_t in;
    dsa_paged_inputs_init(&in);
    in.batch_size = m.batch;
    in.max_pages = m.max_pages;
    in.block_table_stride = m.table_stride;
    in.num_pages = m.num_pages;
    in.page_stride_bytes = m.page_stride;
    in.q = m.q.data();
    in.k_cache = m.k_cache.data();
    in.weights = m.weights.data();
    in.seq_lens = m.seq_lens.data();
    in.block_table = m.block_table.data();
    return in;
}

void vary_paged_pointers(FuzzInput& in, dsa_paged_inputs_t& p) {
    p.q = vary_pointer(in, p.q, 16);
    p.k_cache = vary_pointer(in, p.k_cache, 16);
    p.weights = vary_pointer(in, p.weights, 4);
    p.seq_lens = vary_pointer(in, p.seq_lens, 4);
    p.block_table = vary_pointer(in, p.block_table, 4);
    vary_struct_size(in, p);
}

std::vector<Range> paged_input_ranges(const dsa_paged_inputs_t& in, int H, int64_t rows) {
    const int64_t table_elems = in.batch_size > 0 ? extent(in.batch_size - 1, in.block_table_stride, in.max_pages) : 0;
    return {{in.q, rows * H * kHeadDim},
            {in.k_cache, extent(in.num_pages, in.page_stride_bytes)},
            {in.weights, rows * H * 4},
            {in.seq_lens, int64_t(std::max(in.batch_size, 0)) * 4},
            {in.block_table, table_elems < 0 ? -1 : extent(table_elems, 4)}};
}

// Shape rules: what the workspace-size query reads (params, and batch_size, max_pages, num_pages).
void paged_shape_rules(Expectation& e, const dsa_topk_params_t* params, const dsa_paged_inputs_t* in, bool params_read) {
    struct_rule(e, in, "inputs is NULL", "inputs->struct_size");
    if (!struct_ok(in)) return;
    e.rule(in->batch_size >= 0, DSA_STATUS_INVALID_ARGUMENT, "batch_size >= 0");
    e.rule(in->max_pages >= 0, DSA_STATUS_INVALID_ARGUMENT, "max_pages >= 0");
    e.rule(in->num_pages >= 0, DSA_STATUS_INVALID_ARGUMENT, "num_pages >= 0");
    if (params_read && (params->page_size == 32 || params->page_size == 64)) {
        e.rule(int64_t(in->max_pages) * params->page_size <= kI32Max, DSA_STATUS_UNSUPPORTED, "max_pages * P in int32");
        e.rule(in->num_pages <= (int64_t(1) << 31) / params->page_size, DSA_STATUS_UNSUPPORTED, "num_pages * P in int32");
    }
}

// Every rule of a paged call (SPEC section 4), for the engine path or (cache_pages > 0) dsa_topk.
void paged_call_rules(Expectation& e, const dsa_topk_params_t* params, const dsa_paged_inputs_t* in,
                      const dsa_topk_outputs_t* out, void* stream, int64_t cache_pages) {
    const bool params_read = params_rules(e, params, true);
    paged_shape_rules(e, params, in, params_read);
    if (!params_read || !struct_ok(in)) return;
    const int P = params->page_size, H = params->num_heads;
    const bool shape_known = (P == 32 || P == 64) && (H == 32 || H == 64) && params->next_n >= 1 && params->next_n <= 4 &&
                             params->topk >= 1 && params->topk <= 2048;
    e.rule(in->block_table_stride >= in->max_pages, DSA_STATUS_INVALID_ARGUMENT, "block_table_stride >= max_pages");
    if (in->batch_size > 1)
        e.rule(extent(in->batch_size - 1, in->block_table_stride, in->max_pages) >= 0 &&
                   extent(extent(in->batch_size - 1, in->block_table_stride, in->max_pages), 4) >= 0,
               DSA_STATUS_INVALID_ARGUMENT, "block-table bytes fit in int64");
    if (cache_pages > 0) {
        e.rule(in->k_cache == nullptr && in->num_pages == 0 && in->page_stride_bytes == 0, DSA_STATUS_INVALID_ARGUMENT,
               "owned cache: k_cache NULL, num_pages and page_stride 0");
    } else {
        if (P == 32 || P == 64)
            e.rule(in->page_stride_bytes >= int64_t(P) * (kHeadDim + 4) && in->page_stride_bytes % 16 == 0,
                   DSA_STATUS_INVALID_ARGUMENT, "page_stride_bytes >= P * (D + 4), multiple of 16");
        if (in->num_pages > 0) {
            e.rule(in->k_cache != nullptr, DSA_STATUS_INVALID_ARGUMENT, "k_cache not NULL");
            e.rule(extent(in->num_pages, in->page_stride_bytes) >= 0, DSA_STATUS_INVALID_ARGUMENT, "k_cache bytes fit in int64");
        }
        e.rule(aligned(in->k_cache, 16), DSA_STATUS_INVALID_ARGUMENT, "k_cache aligned to 16");
    }
    if (in->batch_size > 0) {
        e.rule(in->q && in->weights && in->seq_lens, DSA_STATUS_INVALID_ARGUMENT, "q, weights, seq_lens not NULL");
        if (in->max_pages > 0) e.rule(in->block_table != nullptr, DSA_STATUS_INVALID_ARGUMENT, "block_table not NULL");
    }
    e.rule(aligned(in->q, 16), DSA_STATUS_INVALID_ARGUMENT, "q aligned to 16");
    e.rule(aligned(in->weights, 4) && aligned(in->seq_lens, 4) && aligned(in->block_table, 4),
           DSA_STATUS_INVALID_ARGUMENT, "weights, seq_lens, block_table aligned to 4");
    if (!shape_known || in->batch_size < 0) return;
    const int64_t rows = int64_t(in->batch_size) * params->next_n;
    output_rules(e, out, rows, params->topk, paged_input_ranges(*in, H, rows));
    if (cache_pages == 0) e.rule(stream == nullptr, DSA_STATUS_INVALID_ARGUMENT, "stream NULL on a CPU context");
}

// Data rules (read only once every structural rule holds, as the library does).
void paged_data_rules(Expectation& e, const PagedMemory& m) {
    const int64_t capacity = int64_t(m.max_pages) * m.P, pages = m.num_pages;
    for (int32_t b = 0; b < m.batch; ++b) {
        const int64_t len = m.seq_lens[size_t(b)];
        e.rule(len >= 0 && len <= capacity, DSA_STATUS_INVALID_ARGUMENT, "seq_lens in [0, max_pages * P]");
        if (len < 0 || len > capacity) continue;
        for (int64_t i = 0; i < (len + m.P - 1) / m.P; ++i)
            e.rule(m.table_row(b)[i] >= 0 && m.table_row(b)[i] < pages, DSA_STATUS_INVALID_ARGUMENT,
                   "visible block-table entries in [0, num_pages)");
    }
    e.rule(std::none_of(m.weights.begin(), m.weights.end(), [](float w) { return std::isnan(w); }),
           DSA_STATUS_INVALID_ARGUMENT, "no NaN weight");
}

// A successful paged result: in global-slot mode, the same call in logical mode must give the same
// results mapped through the block table (which stays exact when pages repeat); the logical result is
// then checked against the data's expectation.
void check_paged_success(dsa_context_t ctx, const PagedMemory& m, const dsa_topk_params_t& params,
                         const dsa_paged_inputs_t& inputs, const dsa_topk_outputs_t& written, Content content,
                         const char* call) {
    const int k = params.topk;
    const int64_t rows = m.rows();
    const bool with_scores = written.scores != nullptr;
    if (rows == 0) return;
    if (params.flags & DSA_TOPK_LOGICAL_INDICES) {
        check_result(m, content, k, params.flags, written.indices, written.scores, call);
        return;
    }
    dsa_topk_params_t logical_params = params;
    logical_params.flags |= DSA_TOPK_LOGICAL_INDICES;
    Outputs logical(rows, k, with_scores);
    const dsa_topk_outputs_t o = logical.plain();
    const dsa_status_t status = dsa_topk_paged(ctx, &logical_params, &inputs, &o, nullptr, 0, nullptr);
    if (status != DSA_STATUS_SUCCESS) finding(std::string(call) + ": the same call in logical mode failed");
    for (int64_t r = 0; r < rows; ++r) {
        // (index, score bits) of each result; order is free without DSA_TOPK_SORTED, so compare as multisets.
        std::vector<std::pair<int32_t, uint32_t>> global_row, mapped_row;
        for (int64_t i = 0; i < k; ++i) {
            const size_t at = size_t(r * k + i);
            uint32_t gs = 0, ls = 0;
            if (with_scores) {
                std::memcpy(&gs, &written.scores[at], 4);
                std::memcpy(&ls, &logical.scores[at], 4);
            }
            const int32_t p = logical.indices[at];
            global_row.emplace_back(written.indices[at], gs);
            mapped_row.emplace_back(p >= 0 && p < m.visible(r) ? m.global_slot(r, p) : p, ls);
        }
        if (!(params.flags & DSA_TOPK_SORTED)) {
            std::sort(global_row.begin(), global_row.end());
            std::sort(mapped_row.begin(), mapped_row.end());
        }
        if (global_row != mapped_row) finding(std::string(call) + ": global slots differ from the mapped logical positions");
    }
    check_result(m, content, k, logical_params.flags, o.indices, o.scores, call);
}

void fuzz_paged(FuzzInput& in) {
    dsa_context_t ctx = make_context(in);
    const dsa_topk_params_t params = choose_paged_params(in);
    DataSource data(in, content_of(in));
    const PagedMemory m = make_paged_memory(in, params, data, 0);
    dsa_paged_inputs_t inputs = paged_inputs_of(m);
    vary_paged_pointers(in, inputs);

    // The workspace-size query reads the shape only; a CPU context needs no workspace.
    {
        Expectation e("dsa_topk_paged_workspace_size");
        const bool params_read = params_rules(e, &params, true);
        paged_shape_rules(e, &params, &inputs, params_read);
        size_t bytes = 1;
        e.check(dsa_topk_paged_workspace_size(ctx, &params, &inputs, &bytes));
        if (e.valid() && bytes != 0) finding("a CPU context asked for a workspace");
    }

    const int64_t rows = int64_t(std::max(m.batch, 0)) * m.next_n;
    const int k = (params.topk >= 1 && params.topk <= 2048) ? params.topk : 1;
    Outputs out(rows, k, in.byte() % 2 == 0);
    const dsa_topk_outputs_t outputs = choose_outputs(in, out, m.buffers());
    void* stream = in.rarely() ? reinterpret_cast<void*>(uintptr_t(0x1000)) : nullptr;
    Buffer<uint8_t> workspace(64);  // a CPU context ignores the workspace, whatever is passed
    void* workspace_arg = in.byte() % 2 ? workspace.data() : nullptr;
    const size_t workspace_bytes = in.byte();

    // Rarely no context, or no params / inputs / outputs struct at all.
    const dsa_context_t ctx_arg = null_rarely(in, ctx);
    const dsa_topk_params_t* params_arg = null_rarely(in, &params);
    const dsa_paged_inputs_t* inputs_arg = null_rarely(in, &inputs);
    const dsa_topk_outputs_t* outputs_arg = null_rarely(in, &outputs);

    Expectation e("dsa_topk_paged");
    e.rule(ctx_arg != nullptr, DSA_STATUS_INVALID_ARGUMENT, "context not NULL");
    paged_call_rules(e, params_arg, inputs_arg, outputs_arg, stream, 0);
    if (e.valid()) paged_data_rules(e, m);
    InputSnapshot snapshot;
    snapshot.add(m.q.data(), m.q.size());
    snapshot.add(m.k_cache.data(), m.k_cache.size());
    snapshot.add(m.weights.data(), m.weights.size() * 4);
    snapshot.add(m.seq_lens.data(), m.seq_lens.size() * 4);
    snapshot.add(m.block_table.data(), m.block_table.size() * 4);

    const dsa_status_t status =
        dsa_topk_paged(ctx_arg, params_arg, inputs_arg, outputs_arg, workspace_arg, workspace_bytes, stream);
    e.check(status);
    snapshot.check("dsa_topk_paged");
    if (status == DSA_STATUS_SUCCESS) {
        require_own_outputs(outputs, out, "dsa_topk_paged");
        check_paged_success(ctx, m, params, inputs, outputs, data.content(), "dsa_topk_paged");
    } else if (!out.untouched()) {
        finding("a rejected dsa_topk_paged wrote its outputs");
    }
    if (dsa_context_destroy(ctx) != DSA_STATUS_SUCCESS) finding("dsa_context_destroy failed");
}

// ---- ragged calls ---------------------------------------------------------------------------------------
void fuzz_ragged(FuzzInput& in) {
    dsa_context_t ctx = make_context(in);
    dsa_topk_params_t params;
    dsa_topk_params_init(&params);
    params.num_heads = in.rarely() ? in.pick<int32_t>({0, 16, 48, -64}) : in.pick<int32_t>({32, 64});
    params.head_dim = in.rarely() ? in.pick<int32_t>({0, 127, 256}) : 128;
    params.page_size = int32_t(in.u32());  // ignored by ragged calls, whatever they hold
    params.next_n = int32_t(in.u32());
    params.topk = choose_topk(in);
    params.flags = (in.byte() & (DSA_TOPK_SORTED | DSA_TOPK_ABSOLUTE_INDICES));
    if (in.rarely()) params.flags |= in.pick<uint32_t>({DSA_TOPK_LOGICAL_INDICES, 0x10u, 0x80000000u});
    vary_struct_size(in, params);

    const int H = (params.num_heads == 32 || params.num_heads == 64) ? params.num_heads : 32;
    const int64_t num_keys = in.in_range(0, kMaxRaggedKeys);
    std::vector<std::pair<int32_t, int32_t>> windows(size_t(in.in_range(0, kMaxRaggedRows)));
    for (auto& [start, end] : windows) {
        start = int32_t(in.in_range(0, num_keys));
        end = int32_t(in.in_range(start, num_keys));
        if (in.rarely()) start = in.pick<int32_t>({-1, end + 1, kI32Min, kI32Max});
        if (in.rarely()) end = in.pick<int32_t>({-1, int32_t(num_keys + 1), start > kI32Min ? start - 1 : kI32Max, kI32Max});
    }
    RaggedCase c(H, num_keys, windows);
    DataSource data(in, content_of(in));
    data.query(c.q.data(), c.q.size());
    data.weights(c.weights.data(), c.weights.size(), in.rarely());
    for (int64_t key = 0; key < num_keys; ++key) data.token(c.mutable_key(key), &c.k_scale[size_t(key)]);

    dsa_ragged_inputs_t inputs = c.inputs();
    if (in.rarely()) inputs.num_rows = in.pick<int32_t>({-1, kI32Min});
    if (in.rarely()) inputs.num_keys = in.pick<int64_t>({-1, kI64Min, int64_t(kI32Max) + 1, kI64Max});
    inputs.q = vary_pointer(in, inputs.q, 16);
    inputs.k = vary_pointer(in, inputs.k, 16);
    inputs.k_scale = vary_pointer(in, inputs.k_scale, 4);
    inputs.weights = vary_pointer(in, inputs.weights, 4);
    inputs.row_start = vary_pointer(in, inputs.row_start, 4);
    inputs.row_end = vary_pointer(in, inputs.row_end, 4);
    vary_struct_size(in, inputs);

    const int64_t rows = c.rows();
    const int k = (params.topk >= 1 && params.topk <= 2048) ? params.topk : 1;
    const std::vector<Range> ranges = {{inputs.q, rows * H * kHeadDim},  {inputs.k, extent(inputs.num_keys, kHeadDim)},
                                       {inputs.k_scale, extent(inputs.num_keys, 4)}, {inputs.weights, rows * H * 4},
                                       {inputs.row_start, rows * 4},     {inputs.row_end, rows * 4}};
    Outputs out(rows, k, in.byte() % 2 == 0);
    const dsa_topk_outputs_t outputs =
        choose_outputs(in, out, {{c.q.data(), int64_t(c.q.size())}, {c.k.data(), int64_t(c.k.size())},
                                 {c.k_scale.data(), int64_t(c.k_scale.size()) * 4}, {c.weights.data(), int64_t(c.weights.size()) * 4},
                                 {c.row_start.data(), int64_t(c.row_start.size()) * 4}, {c.row_end.data(), int64_t(c.row_end.size()) * 4}});

    const dsa_context_t ctx_arg = null_rarely(in, ctx);
    const dsa_topk_params_t* params_arg = null_rarely(in, &params);
    const dsa_ragged_inputs_t* inputs_arg = null_rarely(in, &inputs);
    const dsa_topk_outputs_t* outputs_arg = null_rarely(in, &outputs);
    auto shape_rules = [&](Expectation& e) {  // what the workspace-size query reads too
        e.rule(ctx_arg != nullptr, DSA_STATUS_INVALID_ARGUMENT, "context not NULL");
        if (!params_rules(e, params_arg, false)) return false;
        struct_rule(e, inputs_arg, "inputs is NULL", "inputs->struct_size");
        if (!inputs_arg || inputs.struct_size != sizeof inputs) return false;
        e.rule(inputs.num_rows >= 0, DSA_STATUS_INVALID_ARGUMENT, "num_rows >= 0");
        e.rule(inputs.num_keys >= 0, DSA_STATUS_INVALID_ARGUMENT, "num_keys >= 0");
        e.rule(inputs.num_keys <= kI32Max, DSA_STATUS_UNSUPPORTED, "num_keys in int32");
        return true;
    };
    {
        Expectation e("dsa_topk_ragged_workspace_size");
        shape_rules(e);
        size_t bytes = 1;
        e.check(dsa_topk_ragged_workspace_size(ctx_arg, params_arg, inputs_arg, &bytes));
        if (e.valid() && bytes != 0) finding("a CPU context asked for a workspace");
    }

    Expectation e("dsa_topk_ragged");
    if (shape_rules(e)) {
        if (inputs.num_rows > 0)
            e.rule(inputs.q && inputs.weights && inputs.row_start && inputs.row_end, DSA_STATUS_INVALID_ARGUMENT,
                   "q, weights, row_start, row_end not NULL");
        if (inputs.num_keys > 0) e.rule(inputs.k && inputs.k_scale, DSA_STATUS_INVALID_ARGUMENT, "k, k_scale not NULL");
        e.rule(aligned(inputs.q, 16) && aligned(inputs.k, 16), DSA_STATUS_INVALID_ARGUMENT, "q, k aligned to 16");
        e.rule(aligned(inputs.k_scale, 4) && aligned(inputs.weights, 4) && aligned(inputs.row_start, 4) &&
                   aligned(inputs.row_end, 4),
               DSA_STATUS_INVALID_ARGUMENT, "k_scale, weights, row_start, row_end aligned to 4");
        const bool shape_known = (params.num_heads == 32 || params.num_heads == 64) && params.topk >= 1 &&
                                 params.topk <= 2048 && inputs.num_rows >= 0;
        if (shape_known) output_rules(e, outputs_arg, inputs.num_rows, params.topk, ranges);
        if (e.valid()) {
            for (size_t r = 0; r < windows.size(); ++r)
                e.rule(c.row_start[r] >= 0 && c.row_start[r] <= c.row_end[r] && c.row_end[r] <= num_keys,
                       DSA_STATUS_INVALID_ARGUMENT, "0 <= row_start <= row_end <= num_keys");
            e.rule(std::none_of(c.weights.begin(), c.weights.end(), [](float w) { return std::isnan(w); }),
                   DSA_STATUS_INVALID_ARGUMENT, "no NaN weight");
        }
    }
    InputSnapshot snapshot;
    snapshot.add(c.q.data(), c.q.size());
    snapshot.add(c.k.data(), c.k.size());
    snapshot.add(c.k_scale.data(), c.k_scale.size() * 4);
    snapshot.add(c.weights.data(), c.weights.size() * 4);
    snapshot.add(c.row_start.data(), c.row_start.size() * 4);
    snapshot.add(c.row_end.data(), c.row_end.size() * 4);

    const dsa_status_t status = dsa_topk_ragged(ctx_arg, params_arg, inputs_arg, outputs_arg, nullptr, 0, nullptr);
    e.check(status);
    snapshot.check("dsa_topk_ragged");
    if (status == DSA_STATUS_SUCCESS) {
        require_own_outputs(outputs, out, "dsa_topk_ragged");
        if (rows > 0) check_result(c, data.content(), k, params.flags, outputs.indices, outputs.scores, "dsa_topk_ragged");
    } else if (!out.untouched()) {
        finding("a rejected dsa_topk_ragged wrote its outputs");
    }
    if (dsa_context_destroy(ctx) != DSA_STATUS_SUCCESS) finding("dsa_context_destroy failed");
}

// ---- owned cache ----------------------------------------------------------------------------------------
// The cache as the accepted writes left it, per slot: D key bytes and the scale (all zero at creation).
struct ShadowCache {
    int P = 32;
    int64_t pages = 0;
    std::vector<uint8_t> keys;
    std::vector<float> scales;
    int64_t slots() const { return pages * P; }
};

std::vector<int64_t> choose_slots(FuzzInput& in, int64_t n, int64_t num_slots) {
    std::vector<int64_t> slots(static_cast<size_t>(n));
    for (int64_t& s : slots) {
        s = in.in_range(0, num_slots - 1);
        if (in.rarely()) s = in.pick<int64_t>({-1, num_slots, kI64Min, kI64Max});
    }
    return slots;
}

// Reads every slot back and compares with the shadow: the cache holds exactly the accepted writes.
void check_cache_contents(dsa_cache_t cache, const ShadowCache& shadow) {
    std::vector<int64_t> all(static_cast<size_t>(shadow.slots()));
    for (size_t i = 0; i < all.size(); ++i) all[i] = int64_t(i);
    std::vector<uint8_t> keys(all.size() * kHeadDim);
    std::vector<float> scales(all.size());
    if (dsa_cache_read(cache, all.data(), keys.data(), scales.data(), int64_t(all.size()), DSA_MEMORY_HOST) != DSA_STATUS_SUCCESS)
        finding("reading every slot of the cache failed");
    if (keys != shadow.keys || std::memcmp(scales.data(), shadow.scales.data(), scales.size() * 4) != 0)
        finding("the cache differs from the accepted writes (a rejected write changed it, or a write was lost)");
}

void cache_write_op(FuzzInput& in, dsa_cache_t cache, ShadowCache& shadow, DataSource& data) {
    const int64_t n = in.rarely() ? in.pick<int64_t>({-1, kI64Min}) : in.in_range(0, 8);
    const std::vector<int64_t> slots = choose_slots(in, std::max<int64_t>(n, 0), shadow.slots());
    Buffer<uint8_t> keys(size_t(std::max<int64_t>(n, 0)) * kHeadDim);
    Buffer<float> scales(size_t(std::max<int64_t>(n, 0)));
    for (size_t i = 0; i < scales.size(); ++i) data.token(keys.data() + i * kHeadDim, &scales[i]);
    const int64_t* slots_arg = null_rarely(in, slots.data());
    const uint8_t* keys_arg = null_rarely(in, keys.data());
    const float* scales_arg = null_rarely(in, scales.data());
    const int32_t device = in.rarely() ? in.pick<int32_t>({0, 1, -2, kI32Max}) : DSA_MEMORY_HOST;

    Expectation e("dsa_cache_write");
    e.rule(n >= 0, DSA_STATUS_INVALID_ARGUMENT, "n >= 0");
    if (n > 0) e.rule(slots_arg && keys_arg && scales_arg, DSA_STATUS_INVALID_ARGUMENT, "slots, keys, scales not NULL");
    e.rule(device == DSA_MEMORY_HOST, DSA_STATUS_INVALID_ARGUMENT, "host memory on a CPU context");
    if (e.valid())
        for (int64_t s : slots) e.rule(s >= 0 && s < shadow.slots(), DSA_STATUS_INVALID_ARGUMENT, "slots in range");
    e.check(dsa_cache_write(cache, slots_arg, keys_arg, scales_arg, n, device));
    if (e.valid())
        for (size_t i = 0; i < slots.size(); ++i) {  // in order: a repeated slot takes its last occurrence
            std::memcpy(&shadow.keys[size_t(slots[i]) * kHeadDim], keys.data() + i * kHeadDim, kHeadDim);
            shadow.scales[size_t(slots[i])] = scales[i];
        }
    check_cache_contents(cache, shadow);
}

void cache_read_op(FuzzInput& in, dsa_cache_t cache, const ShadowCache& shadow) {
    const int64_t n = in.rarely() ? in.pick<int64_t>({-1, kI64Min}) : in.in_range(0, 8);
    const std::vector<int64_t> slots = choose_slots(in, std::max<int64_t>(n, 0), shadow.slots());
    Buffer<uint8_t> keys(size_t(std::max<int64_t>(n, 0)) * kHeadDim);
    Buffer<float> scales(size_t(std::max<int64_t>(n, 0)));
    poison(keys.data(), keys.size());
    poison(scales.data(), scales.size() * 4);
    uint8_t* keys_arg = null_rarely(in, keys.data());
    float* scales_arg = null_rarely(in, scales.data());
    const int32_t device = in.rarely() ? in.pick<int32_t>({0, -2}) : DSA_MEMORY_HOST;

    Expectation e("dsa_cache_read");
    e.rule(n >= 0, DSA_STATUS_INVALID_ARGUMENT, "n >= 0");
    if (n > 0) e.rule(keys_arg && scales_arg, DSA_STATUS_INVALID_ARGUMENT, "keys, scales not NULL");
    e.rule(device == DSA_MEMORY_HOST, DSA_STATUS_INVALID_ARGUMENT, "host memory on a CPU context");
    if (e.valid())
        for (int64_t s : slots) e.rule(s >= 0 && s < shadow.slots(), DSA_STATUS_INVALID_ARGUMENT, "slots in range");
    const dsa_status_t status = dsa_cache_read(cache, slots.data(), keys_arg, scales_arg, n, device);
    e.check(status);
    if (status != DSA_STATUS_SUCCESS) {
        if (!poisoned(keys.data(), keys.size()) || !poisoned(scales.data(), scales.size() * 4))
            finding("a rejected dsa_cache_read wrote its outputs");
        return;
    }
    for (size_t i = 0; i < slots.size(); ++i)
        if (std::memcmp(keys_arg + i * kHeadDim, &shadow.keys[size_t(slots[i]) * kHeadDim], kHeadDim) != 0 ||
            std::memcmp(&scales_arg[i], &shadow.scales[size_t(slots[i])], 4) != 0)
            finding("dsa_cache_read returned something other than the last write");
}

// dsa_topk over the cache; on success, bitwise the engine path over a caller copy of the cache.
void cache_topk_op(FuzzInput& in, dsa_context_t ctx, dsa_context_t other_ctx, dsa_cache_t cache, const ShadowCache& shadow,
                   DataSource& data) {
    dsa_topk_params_t params = choose_paged_params(in);
    if (in.byte() % 4 != 0) params.page_size = shadow.P;  // mostly the cache's page size
    PagedMemory m = make_paged_memory(in, params, data, shadow.pages);
    dsa_paged_inputs_t inputs = paged_inputs_of(m);
    inputs.k_cache = nullptr;
    inputs.num_pages = 0;
    inputs.page_stride_bytes = 0;
    vary_paged_pointers(in, inputs);
    if (in.rarely()) inputs.num_pages = shadow.pages;
    const bool wrong_context = in.rarely();

    const int64_t rows = int64_t(std::max(m.batch, 0)) * m.next_n;
    const int k = (params.topk >= 1 && params.topk <= 2048) ? params.topk : 1;
    Outputs out(rows, k, in.byte() % 2 == 0);
    const dsa_topk_outputs_t outputs = choose_outputs(in, out, m.buffers());

    const dsa_topk_params_t* params_arg = null_rarely(in, &params);
    const dsa_paged_inputs_t* inputs_arg = null_rarely(in, &inputs);
    const dsa_topk_outputs_t* outputs_arg = null_rarely(in, &outputs);

    Expectation e("dsa_topk");
    e.rule(!wrong_context, DSA_STATUS_INVALID_ARGUMENT, "the cache belongs to the context");
    paged_call_rules(e, params_arg, inputs_arg, outputs_arg, nullptr, shadow.pages);
    if (e.valid()) {
        e.rule(params.page_size == shadow.P, DSA_STATUS_INVALID_ARGUMENT, "page_size equals the cache's");
        if (params.page_size == shadow.P) {
            m.num_pages = shadow.pages;  // the data rules see the cache's pages
            paged_data_rules(e, m);
        }
    }
    const dsa_status_t status = dsa_topk(wrong_context ? other_ctx : ctx, cache, params_arg, inputs_arg, outputs_arg);
    e.check(status);
    if (status != DSA_STATUS_SUCCESS) {
        if (!out.untouched()) finding("a rejected dsa_topk wrote its outputs");
        return;
    }
    // The same keys in caller memory, laid out as the SPEC says, through the engine path.
    m.num_pages = shadow.pages;
    m.page_stride = int64_t(shadow.P) * (kHeadDim + 4);
    m.k_cache.resize(size_t(m.num_pages * m.page_stride));
    for (int64_t slot = 0; slot < shadow.slots(); ++slot) {
        uint8_t* page = m.k_cache.data() + (slot / shadow.P) * m.page_stride;
        std::memcpy(page + (slot % shadow.P) * kHeadDim, &shadow.keys[size_t(slot) * kHeadDim], kHeadDim);
        std::memcpy(page + shadow.P * kHeadDim + (slot % shadow.P) * 4, &shadow.scales[size_t(slot)], 4);
    }
    const dsa_paged_inputs_t engine_inputs = paged_inputs_of(m);
    require_own_outputs(outputs, out, "dsa_topk");
    Outputs engine(rows, k, outputs.scores != nullptr);
    const dsa_topk_outputs_t engine_outputs = engine.plain();
    if (dsa_topk_paged(ctx, &params, &engine_inputs, &engine_outputs, nullptr, 0, nullptr) != DSA_STATUS_SUCCESS)
        finding("the engine path rejected what dsa_topk accepted");
    if (engine.indices != out.indices || !same_bytes(engine.scores.data(), outputs.scores, engine.scores.size() * 4))
        finding("dsa_topk differs from dsa_topk_paged over the same keys");
    // Slots never written hold scale 0: no longer integer data with scales +-1, so only validity is checked.
    Content content = data.content();
    for (int64_t r = 0; r < m.rows() && content == Content::SmallIntegers; ++r)
        for (int64_t p = 0; p < m.visible(r); ++p)
            if (std::fabs(m.key_scale(r, p)) != 1.0f) content = Content::Raw;
    check_paged_success(ctx, m, params, engine_inputs, engine_outputs, content, "dsa_topk");
}

void fuzz_owned_cache(FuzzInput& in) {
    dsa_context_t ctx = make_context(in), other_ctx = make_context(in);
    dsa_cache_config_t config;
    dsa_cache_config_init(&config);
    config.page_size = in.rarely() ? in.pick<int32_t>({0, 1, 16, 128, -32}) : in.pick<int32_t>({32, 64});
    config.head_dim = in.rarely() ? in.pick<int32_t>({0, 64, 129}) : 128;
    config.num_pages = in.in_range(1, kMaxPhysicalPages);
    if (in.rarely()) config.num_pages = in.pick<int64_t>({0, -1, kI64Min, kI64Max, (int64_t(1) << 31) / 32 + 1});
    config.mode = in.rarely() ? in.pick<int32_t>({2, -1, kI32Min}) : in.pick<int32_t>({DSA_CACHE_REPLICATED, DSA_CACHE_SHARDED});
    vary_struct_size(in, config);

    Expectation e("dsa_cache_create");
    struct_rule(e, &config, "config is NULL", "config->struct_size");
    if (struct_ok(&config)) {
        // Read at the 0.1 size, the mode keeps its default (replicated); both modes act alike on the CPU.
        if (config.struct_size == sizeof config)
            e.rule(config.mode == DSA_CACHE_REPLICATED || config.mode == DSA_CACHE_SHARDED, DSA_STATUS_INVALID_ARGUMENT,
                   "mode replicated or sharded");
        e.rule(config.num_pages >= 1, DSA_STATUS_INVALID_ARGUMENT, "num_pages >= 1");
        e.rule(config.page_size == 32 || config.page_size == 64, DSA_STATUS_UNSUPPORTED, "page_size in {32, 64}");
        e.rule(config.head_dim == 128, DSA_STATUS_UNSUPPORTED, "head_dim 128");
        if (config.page_size == 32 || config.page_size == 64)
            e.rule(config.num_pages <= (int64_t(1) << 31) / config.page_size, DSA_STATUS_UNSUPPORTED, "num_pages * P in int32");
    }
    dsa_cache_t cache = nullptr;
    const dsa_status_t created = dsa_cache_create(ctx, &config, &cache);
    e.check(created);
    if (created == DSA_STATUS_SUCCESS) {
        ShadowCache shadow;
        shadow.P = config.page_size;
        shadow.pages = config.num_pages;
        shadow.keys.assign(size_t(shadow.slots()) * kHeadDim, 0);
        shadow.scales.assign(size_t(shadow.slots()), 0.0f);
        check_cache_contents(cache, shadow);
        DataSource data(in, content_of(in));
        const int ops = int(in.in_range(1, kMaxCacheOps));
        for (int op = 0; op < ops; ++op) {
            switch (in.byte() % 4) {
                case 0: cache_write_op(in, cache, shadow, data); break;
                case 1: cache_topk_op(in, ctx, other_ctx, cache, shadow, data); break;
                case 2: cache_read_op(in, cache, shadow); break;
                default: {  // a context with a cache can neither be destroyed nor change devices
                    Expectation busy("dsa_context_destroy / set_devices with a live cache");
                    busy.rule(false, DSA_STATUS_INVALID_ARGUMENT, "no live cache");
                    busy.check(dsa_context_destroy(ctx));
                    busy.check(dsa_context_set_devices(ctx, nullptr, 0));
                }
            }
        }
        if (dsa_cache_destroy(cache) != DSA_STATUS_SUCCESS) finding("dsa_cache_destroy failed");
    } else if (cache != nullptr) {
        finding("a failed dsa_cache_create returned a handle");
    }
    if (dsa_context_destroy(ctx) != DSA_STATUS_SUCCESS || dsa_context_destroy(other_ctx) != DSA_STATUS_SUCCESS)
        finding("dsa_context_destroy failed");
}

// ---- contexts, configs, status strings ------------------------------------------------------------------
bool has_repeat(const int32_t* ids, int32_t n) {
    for (int32_t i = 0; i < n; ++i)
        for (int32_t j = i + 1; j < n; ++j)
            if (ids[i] == ids[j]) return true;
    return false;
}

// The device-list rules of dsa_context_create and dsa_context_set_devices. The ids exist on no machine,
// so the outcome is the same with and without a GPU.
void device_rules(Expectation& e, const int32_t* ids, int32_t n) {
    e.rule(n >= 0, DSA_STATUS_INVALID_ARGUMENT, "num_devices >= 0");
    if (n <= 0) return;
    e.rule(ids != nullptr, DSA_STATUS_INVALID_ARGUMENT, "device_ids not NULL");
    if (!ids) return;
    e.rule(!has_repeat(ids, n), DSA_STATUS_INVALID_ARGUMENT, "no repeated device id");
    e.rule(false, DSA_STATUS_NO_DEVICE, "the devices exist");
}

void expect_status(dsa_status_t got, dsa_status_t expected, const char* call) {
    Expectation e(call);
    e.rule(expected == DSA_STATUS_SUCCESS, expected, "the documented outcome");
    e.check(got);
}

void fuzz_context_calls(FuzzInput& in) {
    const int32_t ids[3] = {in.pick<int32_t>({4096, -1, kI32Max, kI32Min}), in.pick<int32_t>({4097, 4096, -1}), 4098};
    dsa_context_config_t config;
    dsa_context_config_init(&config);
    config.num_devices = in.rarely() ? in.pick<int32_t>({1, 2, 3, -1, kI32Min}) : 0;
    config.device_ids = in.byte() % 8 != 1 ? ids : nullptr;
    config.num_cpu_threads = in.rarely() ? in.pick<int32_t>({-1, kI32Min, 64}) : int32_t(in.in_range(0, 4));
    vary_struct_size(in, config);
    const bool config_null = in.rarely(), out_null = in.rarely();

    Expectation e("dsa_context_create");
    e.rule(!out_null, DSA_STATUS_INVALID_ARGUMENT, "out_context not NULL");
    struct_rule(e, config_null ? nullptr : &config, "config is NULL", "config->struct_size");
    if (!config_null && struct_ok(&config)) {
        e.rule(config.num_cpu_threads >= 0, DSA_STATUS_INVALID_ARGUMENT, "num_cpu_threads >= 0");
        device_rules(e, config.device_ids, config.num_devices);
    }
    dsa_context_t created = nullptr;
    const dsa_status_t status = dsa_context_create(config_null ? nullptr : &config, out_null ? nullptr : &created);
    e.check(status);
    if (status == DSA_STATUS_SUCCESS) {
        expect_status(dsa_context_destroy(created), DSA_STATUS_SUCCESS, "dsa_context_destroy");
    } else if (created != nullptr) {
        finding("a failed dsa_context_create returned a handle");
    }

    // A failed set_devices leaves the context as it was.
    dsa_context_t ctx = make_context(in);
    const int32_t n = in.rarely() ? in.pick<int32_t>({1, 2, 3, -1}) : 0;
    const int32_t* set_ids = in.byte() % 8 != 1 ? ids : nullptr;
    Expectation set("dsa_context_set_devices");
    device_rules(set, set_ids, n);
    set.check(dsa_context_set_devices(ctx, set_ids, n));
    int32_t devices = -1;
    expect_status(dsa_context_num_devices(ctx, &devices), DSA_STATUS_SUCCESS, "dsa_context_num_devices");
    if (devices != 0) finding("a CPU context reports devices");

    expect_status(dsa_context_num_devices(nullptr, &devices), DSA_STATUS_INVALID_ARGUMENT, "num_devices(NULL)");
    expect_status(dsa_context_num_devices(ctx, nullptr), DSA_STATUS_INVALID_ARGUMENT, "num_devices(ctx, NULL)");
    expect_status(dsa_context_synchronize(ctx), DSA_STATUS_SUCCESS, "dsa_context_synchronize");
    expect_status(dsa_context_synchronize(nullptr), DSA_STATUS_INVALID_ARGUMENT, "synchronize(NULL)");
    expect_status(dsa_context_destroy(nullptr), DSA_STATUS_SUCCESS, "dsa_context_destroy(NULL)");
    expect_status(dsa_cache_destroy(nullptr), DSA_STATUS_SUCCESS, "dsa_cache_destroy(NULL)");
    dsa_cache_config_t cache_config = DSA_CACHE_CONFIG_INIT;
    cache_config.num_pages = 1;
    dsa_cache_t cache = nullptr;
    expect_status(dsa_cache_create(nullptr, &cache_config, &cache), DSA_STATUS_INVALID_ARGUMENT, "cache_create(NULL)");
    expect_status(dsa_cache_create(ctx, nullptr, &cache), DSA_STATUS_INVALID_ARGUMENT, "cache_create(config NULL)");
    expect_status(dsa_cache_create(ctx, &cache_config, nullptr), DSA_STATUS_INVALID_ARGUMENT, "cache_create(out NULL)");
    const int64_t slot = 0;
    expect_status(dsa_cache_write(nullptr, &slot, ids, nullptr, 1, DSA_MEMORY_HOST), DSA_STATUS_INVALID_ARGUMENT,
                  "cache_write(NULL)");
    expect_status(dsa_cache_read(nullptr, &slot, nullptr, nullptr, 1, DSA_MEMORY_HOST), DSA_STATUS_INVALID_ARGUMENT,
                  "cache_read(NULL)");
    const dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    const dsa_paged_inputs_t inputs = DSA_PAGED_INPUTS_INIT;
    const dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
    expect_status(dsa_topk(ctx, nullptr, &params, &inputs, &outputs), DSA_STATUS_INVALID_ARGUMENT, "dsa_topk(cache NULL)");
    size_t bytes = 0;
    expect_status(dsa_topk_paged_workspace_size(ctx, &params, &inputs, nullptr), DSA_STATUS_INVALID_ARGUMENT,
                  "paged_workspace_size(out NULL)");
    expect_status(dsa_topk_paged_workspace_size(nullptr, &params, &inputs, &bytes), DSA_STATUS_INVALID_ARGUMENT,
                  "paged_workspace_size(NULL)");

    // Initialisers ignore NULL; status names: values 11..15 are in the enum's range but name no status.
    dsa_context_config_init(nullptr);
    dsa_topk_params_init(nullptr);
    dsa_paged_inputs_init(nullptr);
    dsa_ragged_inputs_init(nullptr);
    dsa_topk_outputs_init(nullptr);
    dsa_cache_config_init(nullptr);
    const int code = in.byte() % 16;
    const std::string name = dsa_status_string(static_cast<dsa_status_t>(code));
    if ((code <= DSA_STATUS_INTERNAL_ERROR) != (name != "DSA_STATUS_UNKNOWN") || name.rfind("DSA_STATUS_", 0) != 0)
        finding("dsa_status_string(" + std::to_string(code) + ") is " + name);
    if (dsa_version() != DSA_VERSION_NUMBER) finding("dsa_version differs from the header");
    expect_status(dsa_context_destroy(ctx), DSA_STATUS_SUCCESS, "dsa_context_destroy");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzInput in(data, size);
    switch (in.byte() % 8) {
        case 0: case 1: case 2: fuzz_paged(in); break;
        case 3: case 4: fuzz_ragged(in); break;
        case 5: case 6: fuzz_owned_cache(in); break;
        default: fuzz_context_calls(in); break;
    }
    return 0;
}
