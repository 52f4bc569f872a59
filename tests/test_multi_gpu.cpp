// The owned-cache path on several GPUs of one process (library 0.2): DSA_CACHE_REPLICATED (rows split over
// the GPUs) and DSA_CACHE_SHARDED (physical page p on GPU p % G, candidates merged) must give dsa_topk
// results bit-identical to one GPU, and to the CPU backend where the data has no near-ties. Also: outputs on
// a named GPU (memory_device), writes from device memory, reads, set_devices, and rejected input.
//
// main() (test_main.cpp with DSA_MULTI_GPU_TEST_MAIN) exits with 77 (ctest: "Skipped") when fewer than 2
// GPUs are visible. A case or a device count needing more GPUs than present is skipped with a WARN line.
#include "catch_shim.hpp"

#if DSA_TEST_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dsa_indexer.h"
#include "test_util.hpp"

using namespace dsa_test;

namespace {

constexpr uint32_t kSorted = DSA_TOPK_SORTED;
constexpr uint32_t kLogical = DSA_TOPK_LOGICAL_INDICES;
constexpr int kModes[] = {DSA_CACHE_REPLICATED, DSA_CACHE_SHARDED};
constexpr int kMaxGpusTested = 4;

const char* mode_name(int mode) { return mode == DSA_CACHE_SHARDED ? "sharded" : "replicated"; }

void cuda_ok(cudaError_t error, const char* what) {
    if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}

// ---- GPUs present -----------------------------------------------------------------------------------------
int gpu_count() {
    static const int count = [] {
        int n = 0;
        return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
    }();
    return count;
}

// False, with a visible WARN, when fewer than `needed` GPUs are present: the case then passes without checks.
bool have_gpus(int needed) {
    if (gpu_count() >= needed) return true;
    WARN("SKIPPED: this case needs " << needed << " GPUs, " << gpu_count() << " present");
    return false;
}

// The multi-GPU context sizes to test: 2, 3 (odd) and 4, as far as present; each missing one is reported.
std::vector<int> device_counts() {
    std::vector<int> counts;
    for (int n = 2; n <= kMaxGpusTested; ++n) {
        if (n <= gpu_count()) counts.push_back(n);
        else WARN("SKIPPED for " << n << " GPUs: " << gpu_count() << " present");
    }
    return counts;
}

std::vector<int32_t> first_gpus(int n) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    std::iota(ids.begin(), ids.end(), 0);
    return ids;
}

std::string list_text(const std::vector<int32_t>& ids) {
    std::string s = "{";
    for (size_t i = 0; i < ids.size(); ++i) s += (i ? "," : "") + std::to_string(ids[i]);
    return s + "}";
}

std::unique_ptr<Context> gpu_context(const std::vector<int32_t>& ids) {
    return std::make_unique<Context>(ids.data(), int32_t(ids.size()));
}

// ---- device memory on a named GPU ---------------------------------------------------------------------------
// Makes `device` current for the scope; the test allocates on GPUs other than the current one.
class DeviceScope {
public:
    explicit DeviceScope(int device) {
        cuda_ok(cudaGetDevice(&previous_), "cudaGetDevice");
        cuda_ok(cudaSetDevice(device), "cudaSetDevice");
    }
    ~DeviceScope() { cudaSetDevice(previous_); }
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;

private:
    int previous_ = 0;
};

template <class T>
class DeviceArray {
public:
    DeviceArray(int device, size_t count) : device_(device), count_(count) {
        DeviceScope scope(device_);
        cuda_ok(cudaMalloc(reinterpret_cast<void**>(&data_), std::max<size_t>(bytes(), 16)), "cudaMalloc");
    }
    DeviceArray(int device, const std::vector<T>& host) : DeviceArray(device, host.size()) { upload(host); }
    ~DeviceArray() {  // must not throw: no DeviceScope here
        int previous = 0;
        cudaGetDevice(&previous);
        cudaSetDevice(device_);
        cudaFree(data_);
        cudaSetDevice(previous);
    }
    DeviceArray(const DeviceArray&) = delete;
    DeviceArray& operator=(const DeviceArray&) = delete;
    T* get() const { return data_; }
    size_t bytes() const { return count_ * sizeof(T); }
    // Fenced by device-wide synchronisations, as test_gpu.cpp's: the legacy default stream these run on is not
    // ordered with the tests' non-blocking streams.
    void upload(const std::vector<T>& host) {
        DeviceScope scope(device_);
        cuda_ok(cudaMemcpy(data_, host.data(), std::min(bytes(), host.size() * sizeof(T)), cudaMemcpyHostToDevice), "upload");
        cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize after an upload");
    }
    std::vector<T> download() const {
        DeviceScope scope(device_);
        std::vector<T> host(count_);
        cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize before a download");
        cuda_ok(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost), "download");
        return host;
    }
    void poison() {
        DeviceScope scope(device_);
        cuda_ok(cudaMemset(data_, kPoisonByte, bytes()), "cudaMemset");
        cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize after a poison");
    }

private:
    int device_;
    size_t count_;
    T* data_ = nullptr;
};

bool all_poison(const void* data, size_t bytes) {
    const auto* p = static_cast<const uint8_t*>(data);
    return std::all_of(p, p + bytes, [](uint8_t b) { return b == kPoisonByte; });
}

// ---- cases --------------------------------------------------------------------------------------------------
enum class PageOrder { kRandom, kSequential };

// A paged case whose physical pages are a random permutation (PagedCase's own) or handed out in order
// (page i of sequence b follows the last page of sequence b - 1), the order engines use and the one that
// spreads each sequence over all GPUs of a sharded cache. Data is filled by the caller afterwards.
PagedCase make_case(const PagedLayout& layout, std::vector<int32_t> lens, uint64_t seed, PageOrder order) {
    PagedCase c(layout, std::move(lens), seed);
    if (order == PageOrder::kSequential) {
        int32_t next = 0;
        for (int32_t b = 0; b < c.batch_size; ++b)
            for (int64_t i = 0; i < c.pages_of(b); ++i) c.block_table[size_t(b * c.table_stride + i)] = next++;
    }
    return c;
}

PagedCase tie_free_case(const PagedLayout& layout, std::vector<int32_t> lens, uint64_t seed,
                        PageOrder order = PageOrder::kRandom) {
    PagedCase c = make_case(layout, std::move(lens), seed, order);
    Rng rng(seed + 1);
    fill_tie_free(c, rng);
    return c;
}

// Keys and scales of cache slots (slot = physical page * P + offset), as dsa_cache_write takes them.
struct Tokens {
    std::vector<int64_t> slots;
    std::vector<uint8_t> keys;  // [n, D]
    std::vector<float> scales;
    int64_t size() const { return int64_t(slots.size()); }
};

Tokens tokens_of(const PagedCase& c, std::vector<int64_t> slots) {
    const int P = c.layout.page_size;
    Tokens t;
    t.slots = std::move(slots);
    t.keys.resize(t.slots.size() * kHeadDim);
    t.scales.resize(t.slots.size());
    for (size_t i = 0; i < t.slots.size(); ++i) {
        const uint8_t* page = c.k_cache.data() + (t.slots[i] / P) * c.page_stride;
        std::memcpy(&t.keys[i * kHeadDim], page + (t.slots[i] % P) * kHeadDim, kHeadDim);
        std::memcpy(&t.scales[i], page + int64_t(P) * kHeadDim + (t.slots[i] % P) * 4, 4);
    }
    return t;
}

// Every slot of every physical page of `c` (the spare and unused pages too), in random order.
Tokens all_tokens(const PagedCase& c, uint64_t seed) {
    std::vector<int64_t> slots(size_t(c.num_pages * c.layout.page_size));
    std::iota(slots.begin(), slots.end(), 0);
    Rng rng(seed);
    std::shuffle(slots.begin(), slots.end(), rng.engine());
    return tokens_of(c, std::move(slots));
}

// Every slot of the pages of the given sequences.
std::vector<int64_t> slots_of_sequences(const PagedCase& c, const std::vector<int32_t>& seqs) {
    const int P = c.layout.page_size;
    std::vector<int64_t> slots;
    for (int32_t b : seqs)
        for (int64_t i = 0; i < c.pages_of(b); ++i)
            for (int t = 0; t < P; ++t) slots.push_back(int64_t(c.block_table[size_t(b * c.table_stride + i)]) * P + t);
    return slots;
}

// Writes `t` from host memory in `chunks` calls (several calls: the scatter meets partial updates).
void write_tokens(dsa_cache_t cache, const Tokens& t, int chunks = 3) {
    const int64_t step = (t.size() + chunks - 1) / chunks;
    for (int64_t first = 0; first < t.size(); first += step) {
        const int64_t n = std::min(step, t.size() - first);
        const dsa_status_t status = dsa_cache_write(cache, t.slots.data() + first, t.keys.data() + first * kHeadDim,
                                                    t.scales.data() + first, n, DSA_MEMORY_HOST);
        INFO(describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
    }
}

// An owned cache of `num_pages` pages in `mode` on `ctx`, destroyed with the object unless destroyed before.
class OwnedCache {
public:
    OwnedCache(dsa_context_t ctx, int64_t num_pages, int page_size, int mode) {
        dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
        config.num_pages = num_pages;
        config.page_size = page_size;
        config.mode = mode;
        const dsa_status_t status = dsa_cache_create(ctx, &config, &cache_);
        INFO("dsa_cache_create (" << mode_name(mode) << "): " << describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
    }
    // A cache holding every slot of `c`'s pages.
    OwnedCache(dsa_context_t ctx, const PagedCase& c, int mode) : OwnedCache(ctx, c.num_pages, c.layout.page_size, mode) {
        write_tokens(cache_, all_tokens(c, 0xC0FFEE));
    }
    ~OwnedCache() {
        if (cache_) dsa_cache_destroy(cache_);
    }
    OwnedCache(const OwnedCache&) = delete;
    OwnedCache& operator=(const OwnedCache&) = delete;
    dsa_cache_t get() const { return cache_; }
    void destroy() {
        REQUIRE(dsa_cache_destroy(cache_) == DSA_STATUS_SUCCESS);
        cache_ = nullptr;
    }
    // Keys and scales of `slots`, read back into host memory.
    Tokens read(const std::vector<int64_t>& slots) const {
        Tokens t;
        t.slots = slots;
        t.keys.assign(slots.size() * kHeadDim, 0xEE);
        t.scales.assign(slots.size(), -7.0f);
        const dsa_status_t status =
            dsa_cache_read(cache_, slots.data(), t.keys.data(), t.scales.data(), int64_t(slots.size()), DSA_MEMORY_HOST);
        INFO(describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
        return t;
    }

private:
    dsa_cache_t cache_ = nullptr;
};

bool same_data(const Tokens& a, const Tokens& b) {
    return a.keys == b.keys && a.scales.size() == b.scales.size() &&
           std::memcmp(a.scales.data(), b.scales.data(), a.scales.size() * 4) == 0;
}

// ---- dsa_topk calls -----------------------------------------------------------------------------------------
struct Variant {
    int k;
    uint32_t flags;
    bool with_scores;
};

// k x flags, scores requested for half of them (for_each_variant's alternation).
std::vector<Variant> variants(std::initializer_list<int> ks, const std::vector<uint32_t>& flag_sets) {
    std::vector<Variant> v;
    for_each_variant(ks, flag_sets, [&](int k, uint32_t flags, bool with_scores) { v.push_back({k, flags, with_scores}); });
    return v;
}

const std::vector<uint32_t> kAllFlags = {0u, kSorted, kLogical, kSorted | kLogical};

// Host copy of a call's outputs (scores empty when not requested).
struct Result {
    std::vector<int32_t> indices;
    std::vector<float> scores;
    const float* scores_or_null() const { return scores.empty() ? nullptr : scores.data(); }
};

// "" when bitwise equal, else where they first differ.
std::string difference(const Result& expected, const Result& got, int k) {
    if (expected.indices.size() != got.indices.size() || expected.scores.size() != got.scores.size())
        return "the outputs differ in size";
    for (size_t i = 0; i < expected.indices.size(); ++i)
        if (expected.indices[i] != got.indices[i])
            return "row " + std::to_string(i / size_t(k)) + " slot " + std::to_string(i % size_t(k)) + ": index " +
                   std::to_string(got.indices[i]) + ", expected " + std::to_string(expected.indices[i]);
    for (size_t i = 0; i < expected.scores.size(); ++i)
        if (std::memcmp(&expected.scores[i], &got.scores[i], 4) != 0)
            return "row " + std::to_string(i / size_t(k)) + " slot " + std::to_string(i % size_t(k)) + ": score " +
                   std::to_string(got.scores[i]) + ", expected " + std::to_string(expected.scores[i]);
    return "";
}

// The owned-path inputs of a case: host memory, no k_cache (the cache supplies it).
dsa_paged_inputs_t owned_inputs(const PagedCase& c) {
    dsa_paged_inputs_t in = c.inputs();
    in.k_cache = nullptr;
    in.num_pages = 0;
    in.page_stride_bytes = 0;
    return in;
}

// Poisoned outputs with a poisoned guard tail, on the host (memory_device DSA_MEMORY_HOST) or on a GPU.
class Outputs {
public:
    Outputs(int64_t rows, int k, bool with_scores, int32_t memory_device)
        : rows_(rows), k_(k), with_scores_(with_scores), device_(memory_device) {
        const size_t n = size_t(rows * k + kGuard);
        if (device_ == DSA_MEMORY_HOST) {
            host_ = std::make_unique<TopkOutput>(rows, k, with_scores);
        } else {
            indices_ = std::make_unique<DeviceArray<int32_t>>(device_, n);
            indices_->poison();
            if (with_scores) {
                scores_ = std::make_unique<DeviceArray<float>>(device_, n);
                scores_->poison();
            }
        }
    }
    dsa_topk_outputs_t outputs() const {
        dsa_topk_outputs_t out = DSA_TOPK_OUTPUTS_INIT;
        if (host_) {
            out = host_->outputs();
        } else {
            out.indices = indices_->get();
            out.scores = scores_ ? scores_->get() : nullptr;
        }
        out.memory_device = device_;
        return out;
    }
    // The body, and whether the guard tail is untouched.
    Result result(bool* guards_intact) const {
        const size_t body = size_t(rows_ * k_);
        Result r;
        if (host_) {
            r.indices.assign(host_->indices(), host_->indices() + body);
            if (with_scores_) r.scores.assign(host_->scores(), host_->scores() + body);
            *guards_intact = host_->guards_intact();
            return r;
        }
        std::vector<int32_t> indices = indices_->download();
        *guards_intact = all_poison(indices.data() + body, kGuard * 4);
        r.indices.assign(indices.begin(), indices.begin() + long(body));
        if (with_scores_) {
            std::vector<float> scores = scores_->download();
            *guards_intact = *guards_intact && all_poison(scores.data() + body, kGuard * 4);
            r.scores.assign(scores.begin(), scores.begin() + long(body));
        }
        return r;
    }
    // Every byte still the poison (a rejected call).
    bool untouched() const {
        if (host_) return host_->untouched();
        const std::vector<int32_t> indices = indices_->download();
        bool clean = all_poison(indices.data(), indices.size() * 4);
        if (scores_) {
            const std::vector<float> scores = scores_->download();
            clean = clean && all_poison(scores.data(), scores.size() * 4);
        }
        return clean;
    }

private:
    static constexpr int64_t kGuard = 64;
    int64_t rows_;
    int k_;
    bool with_scores_;
    int32_t device_;
    std::unique_ptr<TopkOutput> host_;
    std::unique_ptr<DeviceArray<int32_t>> indices_;
    std::unique_ptr<DeviceArray<float>> scores_;
};

dsa_status_t try_topk(dsa_context_t ctx, dsa_cache_t cache, const PagedCase& c, const dsa_paged_inputs_t& inputs,
                      const Variant& v, const Outputs& out) {
    const dsa_topk_params_t params = c.params(v.k, v.flags);
    const dsa_topk_outputs_t outputs = out.outputs();
    return dsa_topk(ctx, cache, &params, &inputs, &outputs);
}

// One successful dsa_topk with outputs where `memory_device` says; the guard tail must stay untouched.
Result run_topk(dsa_context_t ctx, dsa_cache_t cache, const PagedCase& c, const Variant& v,
                int32_t memory_device = DSA_MEMORY_HOST) {
    Outputs out(c.rows(), v.k, v.with_scores, memory_device);
    const dsa_status_t status = try_topk(ctx, cache, c, owned_inputs(c), v, out);
    INFO("dsa_topk, outputs on " << memory_device << ": " << describe_status(status));
    REQUIRE(status == DSA_STATUS_SUCCESS);
    bool guards = false;
    Result r = out.result(&guards);
    CHECK(guards);
    return r;
}

std::vector<Result> run_all(dsa_context_t ctx, dsa_cache_t cache, const PagedCase& c, const std::vector<Variant>& vars,
                            int32_t memory_device = DSA_MEMORY_HOST) {
    std::vector<Result> results;
    for (const Variant& v : vars) results.push_back(run_topk(ctx, cache, c, v, memory_device));
    return results;
}

// Results of a case on the CPU backend (a cache in `mode`, which the CPU backend treats as one whole cache).
std::vector<Result> cpu_results(const PagedCase& c, int mode, const std::vector<Variant>& vars) {
    Context cpu;
    OwnedCache cache(cpu.get(), c, mode);
    return run_all(cpu.get(), cache.get(), c, vars);
}

// One GPU, and each multi-GPU context size present, made once per test case (contexts are expensive).
struct GpuContexts {
    std::unique_ptr<Context> one;
    std::vector<std::pair<int, std::unique_ptr<Context>>> multi;
};

GpuContexts make_contexts() {
    GpuContexts g;
    g.one = gpu_context({0});
    for (int n : device_counts()) g.multi.emplace_back(n, gpu_context(first_gpus(n)));
    return g;
}

enum class Expect { kExact, kSpec5 };

// Every variant of a case, with caches in both modes, on one GPU and on every multi-GPU context: each
// multi-GPU result must be bitwise the one-GPU result of the same mode. The one-GPU result must be
// (kExact, tie-free integer data) the CPU backend's bit for bit and the exact expectation, or (kSpec5,
// random data) pass SPEC section 5 against the float64 oracle.
void check_everywhere(const PagedCase& c, const std::vector<Variant>& vars, const GpuContexts& gpus, Expect expect) {
    std::vector<std::vector<double>> exact;
    Oracle oracle;
    if (expect == Expect::kExact) exact = integer_scores(c);
    else oracle = compute_oracle(c);
    for (int mode : kModes) {
        INFO(mode_name(mode) << " cache");
        std::vector<Result> reference;
        {
            OwnedCache cache(gpus.one->get(), c, mode);
            reference = run_all(gpus.one->get(), cache.get(), c, vars);
        }
        const std::vector<Result> cpu = expect == Expect::kExact ? cpu_results(c, mode, vars) : std::vector<Result>();
        for (size_t i = 0; i < vars.size(); ++i) {
            const Variant& v = vars[i];
            INFO("1 GPU, k " << v.k << ", flags " << v.flags << (v.with_scores ? ", scores" : ""));
            const Result& r = reference[i];
            if (expect == Expect::kExact) {
                CHECK(check_exact(c, exact, v.k, v.flags, r.indices.data(), r.scores_or_null()) == "");
                CHECK(difference(cpu[i], r, v.k) == "");
            } else {
                CHECK(check_spec5(c, oracle, v.k, v.flags, r.indices.data(), r.scores_or_null()) == "");
            }
        }
        for (const auto& [n, ctx] : gpus.multi) {
            OwnedCache cache(ctx->get(), c, mode);
            for (size_t i = 0; i < vars.size(); ++i) {
                INFO(n << " GPUs, k " << vars[i].k << ", flags " << vars[i].flags << (vars[i].with_scores ? ", scores" : ""));
                CHECK(difference(reference[i], run_topk(ctx->get(), cache.get(), c, vars[i]), vars[i].k) == "");
            }
        }
    }
}

}  // namespace

// =====================================================================================================
// Results

TEST_CASE("multi-GPU dsa_topk is bit-identical to one GPU and to the CPU backend", "[multi_gpu][exact]") {
    if (!have_gpus(2)) return;
    const GpuContexts gpus = make_contexts();
    // H 64 / P 64 / next_n 1 and H 32 / P 32 / next_n 3; the uneven-batch case covers the crossed pairs.
    const std::vector<PagedLayout> layouts = {layout_of(64, 64, 1), layout_of(32, 32, 3)};
    const std::vector<Variant> vars = variants({2048, 100}, kAllFlags);
    uint64_t seed = 20001;
    for (const PagedLayout& layout : layouts)
        for (PageOrder order : {PageOrder::kRandom, PageOrder::kSequential}) {
            INFO("H " << layout.heads << ", P " << layout.page_size << ", next_n " << layout.next_n << ", pages in "
                      << (order == PageOrder::kRandom ? "random" : "sequential") << " order");
            const PagedCase c = tie_free_case(layout, {0, 1, 100, 2048, 5000, 20000, 333}, seed += 10, order);
            check_everywhere(c, vars, gpus, Expect::kExact);
        }
}

TEST_CASE("multi-GPU dsa_topk on benchmark-like random inputs: one GPU's bits, SPEC section 5", "[multi_gpu][spec5]") {
    if (!have_gpus(2)) return;
    const GpuContexts gpus = make_contexts();
    struct Shape {
        PagedLayout layout;
        std::vector<int32_t> lens;
    };
    std::vector<int32_t> mixed = mixed_seq_lens(2048, 64, 30000);
    mixed.insert(mixed.end(), {9000, 4097});
    const std::vector<Shape> shapes = {{layout_of(64, 64, 1), mixed}, {layout_of(32, 32, 3), {0, 1, 2047, 2048, 5000, 12000}}};
    const std::vector<Variant> vars = variants({2048, 100}, {0u, kSorted | kLogical});
    uint64_t seed = 21001;
    for (const Shape& s : shapes) {
        INFO("H " << s.layout.heads << ", P " << s.layout.page_size << ", next_n " << s.layout.next_n);
        PagedCase c = make_case(s.layout, s.lens, seed += 10, PageOrder::kRandom);
        Rng rng(seed + 1);
        fill_spec6(c, rng);
        check_everywhere(c, vars, gpus, Expect::kSpec5);
    }
}

TEST_CASE("multi-GPU uneven batches: empty, short and long rows together; 1 and 257 sequences", "[multi_gpu][uneven]") {
    if (!have_gpus(2)) return;
    const GpuContexts gpus = make_contexts();
    struct Batch {
        const char* name;
        PagedLayout layout;
        std::vector<int32_t> lens;
        PageOrder order;
    };
    Rng lengths(22000);
    std::vector<int32_t> many(257);
    for (int32_t& len : many) len = int32_t(lengths.uniform(0, 3000));
    many[0] = 0;
    many[100] = 1;
    many[200] = 2048;
    many[256] = 0;
    const std::vector<Batch> batches = {
        {"0, 1, < k, 5000, 70000", layout_of(64, 32, 3), {0, 1, 1000, 5000, 70000}, PageOrder::kRandom},
        {"0, 1, < k, 5000, 70000 (pages in order)", layout_of(32, 64, 1), {0, 1, 1000, 5000, 70000}, PageOrder::kSequential},
        {"one sequence of 70000", layout_of(32, 64, 1), {70000}, PageOrder::kSequential},
        {"one sequence of 1 token (one page: the other GPUs hold none of it)", layout_of(64, 64, 1), {1}, PageOrder::kSequential},
        {"one empty sequence", layout_of(64, 64, 2), {0}, PageOrder::kRandom},
        {"257 sequences of 0..3000", layout_of(32, 64, 1), many, PageOrder::kRandom},
        {"257 sequences of 0..3000 (pages in order)", layout_of(64, 32, 2), many, PageOrder::kSequential},
    };
    const std::vector<Variant> vars = variants({2048, 100}, {kSorted, kLogical});
    uint64_t seed = 22001;
    for (const Batch& b : batches) {
        INFO(b.name);
        const PagedCase c = tie_free_case(b.layout, b.lens, seed += 10, b.order);
        check_everywhere(c, vars, gpus, Expect::kExact);
    }
}

// =====================================================================================================
// Where outputs go, where writes come from

TEST_CASE("multi-GPU outputs on a named GPU of the context equal host outputs", "[multi_gpu][memory_device]") {
    if (!have_gpus(2)) return;
    const PagedCase c = tie_free_case(layout_of(64, 64, 2), {3000, 700, 0, 5000, 64, 1}, 23001);
    const std::vector<Variant> vars = {{2048, kSorted, true}, {100, kLogical, false}, {100, 0u, true}};
    // {1, 0}: the context's first GPU is 1, so outputs on 0 are on its non-first GPU; then all GPUs present.
    std::vector<std::vector<int32_t>> lists = {{1, 0}};
    if (gpu_count() > 2) lists.push_back(first_gpus(std::min(gpu_count(), kMaxGpusTested)));
    for (const auto& ids : lists) {
        const std::unique_ptr<Context> ctx = gpu_context(ids);
        for (int mode : kModes) {
            INFO("devices " << list_text(ids) << ", " << mode_name(mode) << " cache");
            OwnedCache cache(ctx->get(), c, mode);
            const std::vector<Result> host = run_all(ctx->get(), cache.get(), c, vars);
            for (int32_t device : ids)
                for (size_t i = 0; i < vars.size(); ++i) {
                    INFO("outputs on GPU " << device << ", k " << vars[i].k << ", flags " << vars[i].flags);
                    CHECK(difference(host[i], run_topk(ctx->get(), cache.get(), c, vars[i], device), vars[i].k) == "");
                }
        }
    }
}

TEST_CASE("multi-GPU dsa_cache_write from device memory of a non-first GPU", "[multi_gpu][write]") {
    if (!have_gpus(2)) return;
    const PagedCase c = tie_free_case(layout_of(32, 32, 1), {2500, 0, 4000, 31, 33}, 24001);
    const std::vector<Variant> vars = {{2048, kSorted, true}, {100, kLogical, false}};
    const std::vector<Result> expected = cpu_results(c, DSA_CACHE_REPLICATED, vars);
    const Tokens tokens = all_tokens(c, 24002);
    for (int n : device_counts()) {
        const std::unique_ptr<Context> ctx = gpu_context(first_gpus(n));
        const int32_t source = n - 1;  // the last GPU of the context
        DeviceArray<int64_t> slots(source, tokens.slots);
        DeviceArray<uint8_t> keys(source, tokens.keys);
        DeviceArray<float> scales(source, tokens.scales);
        for (int mode : kModes) {
            INFO(n << " GPUs, " << mode_name(mode) << " cache, tokens in GPU " << source << "'s memory");
            OwnedCache cache(ctx->get(), c.num_pages, c.layout.page_size, mode);
            const int64_t half = tokens.size() / 2;  // two calls: the second starts inside the arrays
            CHECK(dsa_cache_write(cache.get(), slots.get(), keys.get(), scales.get(), half, source) == DSA_STATUS_SUCCESS);
            const dsa_status_t status = dsa_cache_write(cache.get(), slots.get() + half, keys.get() + half * kHeadDim,
                                                        scales.get() + half, tokens.size() - half, source);
            INFO(describe_status(status));
            REQUIRE(status == DSA_STATUS_SUCCESS);
            CHECK(same_data(cache.read(tokens.slots), tokens));
            // Read back into the same GPU's memory too.
            DeviceArray<uint8_t> read_keys(source, tokens.keys.size());
            DeviceArray<float> read_scales(source, tokens.scales.size());
            REQUIRE(dsa_cache_read(cache.get(), slots.get(), read_keys.get(), read_scales.get(), tokens.size(), source) ==
                    DSA_STATUS_SUCCESS);
            CHECK(bool(read_keys.download() == tokens.keys));
            const std::vector<float> scales_back = read_scales.download();
            CHECK(std::memcmp(scales_back.data(), tokens.scales.data(), tokens.scales.size() * 4) == 0);
            for (size_t i = 0; i < vars.size(); ++i)
                CHECK(difference(expected[i], run_topk(ctx->get(), cache.get(), c, vars[i]), vars[i].k) == "");
        }
    }
}

TEST_CASE("multi-GPU: a write is seen by the next dsa_topk at once, and read back, in both modes", "[multi_gpu][write]") {
    if (!have_gpus(2)) return;
    const int n = std::min(gpu_count(), kMaxGpusTested);
    const std::unique_ptr<Context> ctx = gpu_context(first_gpus(n));
    Context cpu;
    // Same lengths and seed: the same block table; different data. Sequences 0 and 3 are then rewritten
    // with b's tokens, whole sequences at a time, so every sequence stays tie-free (5000 > 4096 tokens:
    // scores are the distinct values themselves).
    const std::vector<int32_t> lens = {3000, 700, 0, 5000, 64, 1};
    const PagedCase a = tie_free_case(layout_of(64, 64, 2), lens, 25001);
    PagedCase b = make_case(layout_of(64, 64, 2), lens, 25001, PageOrder::kRandom);
    Rng rng(25003);
    fill_tie_free(b, rng);
    REQUIRE(bool(a.block_table == b.block_table));
    const std::vector<Variant> vars = {{2048, kSorted, true}, {100, 0u, true}, {2048, kLogical, false}};
    std::vector<int64_t> rewritten = slots_of_sequences(a, {0, 3});
    std::shuffle(rewritten.begin(), rewritten.end(), rng.engine());
    const Tokens update = tokens_of(b, rewritten);
    const Tokens untouched_before = tokens_of(a, slots_of_sequences(a, {1, 4}));

    for (int mode : kModes) {
        INFO(n << " GPUs, " << mode_name(mode) << " cache");
        OwnedCache gpu_cache(ctx->get(), a, mode), cpu_cache(cpu.get(), a, mode);
        auto compare = [&](const char* when) {
            INFO(when);
            for (const Variant& v : vars)
                CHECK(difference(run_topk(cpu.get(), cpu_cache.get(), a, v), run_topk(ctx->get(), gpu_cache.get(), a, v), v.k) == "");
        };
        compare("before the update");
        write_tokens(gpu_cache.get(), update, 1);
        write_tokens(cpu_cache.get(), update, 1);
        compare("right after the update");
        CHECK(same_data(gpu_cache.read(update.slots), update));
        CHECK(same_data(gpu_cache.read(untouched_before.slots), untouched_before));

        // A slot repeated in one call takes its last occurrence; on a sharded cache the slot of page 1 lives
        // on the second GPU.
        const int64_t slot = int64_t(1) * a.layout.page_size + 5;
        Tokens twice = tokens_of(b, {slot, slot});
        std::fill(twice.keys.begin(), twice.keys.begin() + kHeadDim, uint8_t(0x38));  // first occurrence: all 1.0
        twice.scales[0] = 3.0f;
        write_tokens(gpu_cache.get(), twice, 1);
        write_tokens(cpu_cache.get(), twice, 1);
        const Tokens last = tokens_of(b, {slot});
        CHECK(same_data(gpu_cache.read({slot}), last));
        compare("after a write with a repeated slot");
    }
}

// =====================================================================================================
// Device lists and rejected input

TEST_CASE("multi-GPU dsa_context_set_devices: caches first, then any list, the results unchanged", "[multi_gpu][context]") {
    if (!have_gpus(2)) return;
    const PagedCase c = tie_free_case(layout_of(64, 64, 1), {3000, 700, 0, 5000}, 26001);
    const std::vector<Variant> vars = {{2048, kSorted, true}, {100, kLogical, false}};
    const std::vector<Result> expected = cpu_results(c, DSA_CACHE_REPLICATED, vars);
    auto check_results = [&](dsa_context_t ctx, int mode) {
        OwnedCache cache(ctx, c, mode);
        for (size_t i = 0; i < vars.size(); ++i) CHECK(difference(expected[i], run_topk(ctx, cache.get(), c, vars[i]), vars[i].k) == "");
    };
    auto num_devices = [](dsa_context_t ctx) {
        int32_t n = -1;
        REQUIRE(dsa_context_num_devices(ctx, &n) == DSA_STATUS_SUCCESS);
        return n;
    };

    const std::unique_ptr<Context> ctx = gpu_context({0, 1});
    CHECK(num_devices(ctx->get()) == 2);
    const std::vector<int32_t> all = first_gpus(std::min(gpu_count(), kMaxGpusTested));
    for (int mode : kModes) {
        INFO(mode_name(mode) << " cache alive during set_devices");
        OwnedCache cache(ctx->get(), c, mode);
        CHECK(dsa_context_set_devices(ctx->get(), all.data(), int32_t(all.size())) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(std::string(dsa_last_error_message()) != "");
        CHECK(dsa_context_set_devices(ctx->get(), nullptr, 0) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(num_devices(ctx->get()) == 2);
        for (size_t i = 0; i < vars.size(); ++i)  // the cache and the context still work
            CHECK(difference(expected[i], run_topk(ctx->get(), cache.get(), c, vars[i]), vars[i].k) == "");
        cache.destroy();
    }
    // With no cache left, every list is taken: one GPU, reordered, all present, the CPU backend, back to two.
    std::vector<std::vector<int32_t>> lists = {{1}, {1, 0}, all, {}, {0}, {0, 1}};
    if (gpu_count() > 2) lists.insert(lists.begin() + 2, std::vector<int32_t>{2, 0, 1});
    for (const auto& ids : lists) {
        INFO("set_devices " << list_text(ids));
        const dsa_status_t status = dsa_context_set_devices(ctx->get(), ids.empty() ? nullptr : ids.data(), int32_t(ids.size()));
        INFO(describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
        CHECK(num_devices(ctx->get()) == int32_t(ids.size()));
        for (int mode : kModes) check_results(ctx->get(), mode);
    }
}

TEST_CASE("multi-GPU device lists: a repeated or missing id fails at create and set time", "[multi_gpu][context]") {
    if (!have_gpus(2)) return;
    const std::vector<std::pair<std::vector<int32_t>, dsa_status_t>> bad_lists = {
        {{0, 0}, DSA_STATUS_INVALID_ARGUMENT},
        {{0, 1, 0}, DSA_STATUS_INVALID_ARGUMENT},
        {{1, 1}, DSA_STATUS_INVALID_ARGUMENT},
        {{0, 9999}, DSA_STATUS_NO_DEVICE},
        {{9999, 0}, DSA_STATUS_NO_DEVICE},
        {{0, int32_t(gpu_count())}, DSA_STATUS_NO_DEVICE},  // the first id past the last GPU
    };
    for (const auto& [ids, expected] : bad_lists) {
        INFO("dsa_context_create with devices " << list_text(ids));
        dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
        config.device_ids = ids.data();
        config.num_devices = int32_t(ids.size());
        dsa_context_t out = reinterpret_cast<dsa_context_t>(uintptr_t(0x5A5A5A50));
        const dsa_context_t sentinel = out;
        CHECK(dsa_context_create(&config, &out) == expected);
        CHECK(std::string(dsa_last_error_message()) != "");
        CHECK(out == sentinel);  // nothing written on failure
    }

    const PagedCase c = tie_free_case(layout_of(32, 64, 1), {2000, 5000, 10}, 27001);
    const std::vector<Variant> vars = {{2048, kSorted, true}};
    const std::vector<Result> expected = cpu_results(c, DSA_CACHE_SHARDED, vars);
    const std::unique_ptr<Context> ctx = gpu_context({0, 1});
    for (const auto& [ids, status] : bad_lists) {
        INFO("dsa_context_set_devices " << list_text(ids));
        CHECK(dsa_context_set_devices(ctx->get(), ids.data(), int32_t(ids.size())) == status);
        int32_t n = -1;
        CHECK(dsa_context_num_devices(ctx->get(), &n) == DSA_STATUS_SUCCESS);
        CHECK(n == 2);  // unchanged
        for (int mode : kModes) {  // and still usable
            OwnedCache cache(ctx->get(), c, mode);
            CHECK(difference(expected[0], run_topk(ctx->get(), cache.get(), c, vars[0]), vars[0].k) == "");
        }
    }
}

TEST_CASE("multi-GPU bad input is rejected before anything is written", "[multi_gpu][validation]") {
    if (!have_gpus(2)) return;
    const int n = std::min(gpu_count(), kMaxGpusTested);
    const std::unique_ptr<Context> ctx = gpu_context(first_gpus(n));
    const PagedCase c = tie_free_case(layout_of(64, 64, 2), {1000, 900, 640, 77}, 28001);
    const Variant v{256, kSorted, true};
    const std::vector<Result> expected = cpu_results(c, DSA_CACHE_REPLICATED, {v});
    const int32_t last_gpu = n - 1;

    for (int mode : kModes) {
        INFO(n << " GPUs, " << mode_name(mode) << " cache");
        OwnedCache cache(ctx->get(), c, mode);
        // Host-visible inputs of the owned path: a bad block-table entry or seq_len is found before any work.
        const std::vector<std::pair<const char*, std::function<void(PagedCase&)>>> corruptions = {
            {"entry num_pages + 5", [](PagedCase& b) { b.block_table[size_t(1 * b.table_stride + 0)] = int32_t(b.num_pages + 5); }},
            {"entry -1 in the last visible page", [](PagedCase& b) { b.block_table[size_t(1 * b.table_stride + 14)] = -1; }},
            {"seq_len beyond max_pages * P", [](PagedCase& b) { b.seq_lens[1] = b.max_pages * 64 + 1; }},
            {"negative seq_len", [](PagedCase& b) { b.seq_lens[1] = -5; }},
        };
        for (const auto& [what, corrupt] : corruptions)
            for (int32_t where : {int32_t(DSA_MEMORY_HOST), last_gpu}) {
                INFO(what << ", outputs on " << where);
                PagedCase bad = c;
                corrupt(bad);
                Outputs out(c.rows(), v.k, v.with_scores, where);
                CHECK(try_topk(ctx->get(), cache.get(), bad, owned_inputs(bad), v, out) == DSA_STATUS_INVALID_ARGUMENT);
                CHECK(std::string(dsa_last_error_message()) != "");
                CHECK(out.untouched());
            }
        // Outputs in memory the context does not have.
        std::vector<int32_t> foreign = {1234, -2, int32_t(gpu_count())};
        for (const int32_t where : foreign) {
            INFO("outputs.memory_device " << where << " (host pointers)");
            Outputs out(c.rows(), v.k, v.with_scores, DSA_MEMORY_HOST);
            dsa_topk_outputs_t outputs = out.outputs();
            outputs.memory_device = where;
            const dsa_topk_params_t params = c.params(v.k, v.flags);
            const dsa_paged_inputs_t inputs = owned_inputs(c);
            CHECK(dsa_topk(ctx->get(), cache.get(), &params, &inputs, &outputs) == DSA_STATUS_INVALID_ARGUMENT);
            CHECK(out.untouched());
        }
        // Writes: a slot out of range anywhere in the call, or memory the context does not have, changes nothing.
        const Tokens before = cache.read({0, 1, 64, 65, 128});
        Tokens fresh = tokens_of(c, {0, 1, 64, 65, 128});
        std::fill(fresh.keys.begin(), fresh.keys.end(), uint8_t(0x40));
        std::fill(fresh.scales.begin(), fresh.scales.end(), 5.0f);
        Tokens bad_slot = fresh;
        bad_slot.slots.back() = c.num_pages * c.layout.page_size;
        CHECK(dsa_cache_write(cache.get(), bad_slot.slots.data(), bad_slot.keys.data(), bad_slot.scales.data(), bad_slot.size(),
                              DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        bad_slot.slots.back() = -1;
        CHECK(dsa_cache_write(cache.get(), bad_slot.slots.data(), bad_slot.keys.data(), bad_slot.scales.data(), bad_slot.size(),
                              DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(cache.get(), fresh.slots.data(), fresh.keys.data(), fresh.scales.data(), fresh.size(), 1234) ==
              DSA_STATUS_INVALID_ARGUMENT);
        CHECK(same_data(cache.read(before.slots), before));
        // After all that, the cache and the context give the right answer.
        CHECK(difference(expected[0], run_topk(ctx->get(), cache.get(), c, v), v.k) == "");
        CHECK(dsa_context_synchronize(ctx->get()) == DSA_STATUS_SUCCESS);
    }
    // Memory of a real GPU that is not in the context: {0, 1} and GPU 2, or {0} and GPU 1 on 2 GPUs.
    const std::vector<int32_t> inside = gpu_count() >= 3 ? std::vector<int32_t>{0, 1} : std::vector<int32_t>{0};
    const int32_t outside = int32_t(inside.size());
    const std::unique_ptr<Context> small = gpu_context(inside);
    for (int mode : kModes) {
        INFO("devices " << list_text(inside) << ", " << mode_name(mode) << " cache, memory on GPU " << outside);
        OwnedCache cache(small->get(), c, mode);
        Outputs out(c.rows(), v.k, v.with_scores, outside);
        CHECK(try_topk(small->get(), cache.get(), c, owned_inputs(c), v, out) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(out.untouched());
        const Tokens before = cache.read({0, 64, 200});
        Tokens fresh = before;
        std::fill(fresh.keys.begin(), fresh.keys.end(), uint8_t(0x40));
        DeviceArray<int64_t> slots(outside, fresh.slots);
        DeviceArray<uint8_t> keys(outside, fresh.keys);
        DeviceArray<float> scales(outside, fresh.scales);
        CHECK(dsa_cache_write(cache.get(), slots.get(), keys.get(), scales.get(), fresh.size(), outside) ==
              DSA_STATUS_INVALID_ARGUMENT);
        CHECK(same_data(cache.read(before.slots), before));
        CHECK(difference(expected[0], run_topk(small->get(), cache.get(), c, v), v.k) == "");
    }

    // An unknown cache mode is refused and writes no handle.
    dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
    config.num_pages = 4;
    config.mode = 7;
    dsa_cache_t out = reinterpret_cast<dsa_cache_t>(uintptr_t(0x5A5A5A50));
    const dsa_cache_t sentinel = out;
    CHECK(dsa_cache_create(ctx->get(), &config, &out) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(out == sentinel);
}

#endif  // DSA_TEST_HAVE_CUDA
