// Tests of a GPU context against the CPU backend and the oracle: device pointers, workspaces from the size
// queries, caller streams, CUDA graphs, device-side input errors, and the owned cache. main() (test_main.cpp)
// exits with 77 before any of this runs when device 0 cannot be used, or when built without CUDA.
#include "catch_shim.hpp"

#if DSA_TEST_HAVE_CUDA

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "dsa_indexer.h"
#include "test_util.hpp"

using namespace dsa_test;

namespace {

constexpr uint32_t kSorted = DSA_TOPK_SORTED;
constexpr uint32_t kLogical = DSA_TOPK_LOGICAL_INDICES;
constexpr uint32_t kAbsolute = DSA_TOPK_ABSOLUTE_INDICES;
constexpr int32_t kDevice = 0;

void cuda_ok(cudaError_t error, const char* what) {
    if (error != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(error));
}

// Device memory of `count` elements, freed on destruction.
template <class T>
class DeviceArray {
public:
    explicit DeviceArray(size_t count = 0) : count_(count) {
        if (count_) cuda_ok(cudaMalloc(reinterpret_cast<void**>(&data_), bytes()), "cudaMalloc");
    }
    template <class Alloc>
    explicit DeviceArray(const std::vector<T, Alloc>& host) : DeviceArray(host.size()) {
        upload(host.data());
    }
    DeviceArray(DeviceArray&& other) noexcept : data_(std::exchange(other.data_, nullptr)), count_(other.count_) {}
    DeviceArray(const DeviceArray&) = delete;
    DeviceArray& operator=(const DeviceArray&) = delete;
    ~DeviceArray() {
        if (data_) cudaFree(data_);
    }
    T* get() const { return data_; }
    size_t size() const { return count_; }
    size_t bytes() const { return count_ * sizeof(T); }
    // These run on the legacy default stream, which the tests' non-blocking streams do not wait for (and a
    // pageable cudaMemcpy or a cudaMemset may return before the device is done): each one is fenced by a
    // device-wide synchronisation, so a library call never overlaps the copy or poison around it.
    void upload(const T* host) {
        if (count_) cuda_ok(cudaMemcpy(data_, host, bytes(), cudaMemcpyHostToDevice), "cudaMemcpy to device");
        cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize after an upload");
    }
    std::vector<T> download() const {
        std::vector<T> host(count_);
        cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize before a download");
        if (count_) cuda_ok(cudaMemcpy(host.data(), data_, bytes(), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
        return host;
    }
    void poison() {
        if (count_) cuda_ok(cudaMemset(data_, kPoisonByte, bytes()), "cudaMemset");
        cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize after a poison");
    }

private:
    T* data_ = nullptr;
    size_t count_ = 0;
};

class Stream {
public:
    Stream() { cuda_ok(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
    ~Stream() { cudaStreamDestroy(stream_); }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    cudaStream_t get() const { return stream_; }
    void sync() const { cuda_ok(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

private:
    cudaStream_t stream_ = nullptr;
};

// Host copy of a call's outputs.
struct HostResult {
    std::vector<int32_t> indices;
    std::vector<float> scores;
    const float* scores_or_null() const { return scores.empty() ? nullptr : scores.data(); }
    bool all_poison() const {
        auto poisoned = [](const void* p, size_t bytes) {
            const auto* b = static_cast<const uint8_t*>(p);
            return std::all_of(b, b + bytes, [](uint8_t x) { return x == kPoisonByte; });
        };
        return poisoned(indices.data(), indices.size() * 4) && poisoned(scores.data(), scores.size() * 4);
    }
    bool operator==(const HostResult& other) const {
        return indices == other.indices && scores.size() == other.scores.size() &&
               std::memcmp(scores.data(), other.scores.data(), scores.size() * 4) == 0;
    }
};

// Poisoned device outputs of one call.
struct DeviceOutput {
    DeviceArray<int32_t> indices;
    DeviceArray<float> scores;
    DeviceOutput(int64_t rows, int topk, bool with_scores)
        : indices(size_t(rows * topk)), scores(with_scores ? size_t(rows * topk) : 0) {
        poison();
    }
    void poison() {
        indices.poison();
        scores.poison();
    }
    dsa_topk_outputs_t outputs() const {
        dsa_topk_outputs_t out;
        dsa_topk_outputs_init(&out);
        out.indices = indices.get();
        out.scores = scores.size() ? scores.get() : nullptr;
        return out;
    }
    HostResult download() const { return {indices.download(), scores.download()}; }
};

// A paged case in device memory; `inputs` points there.
struct DevicePaged {
    DeviceArray<uint8_t> q, k_cache;
    DeviceArray<float> weights;
    DeviceArray<int32_t> seq_lens, block_table;
    dsa_paged_inputs_t inputs;
    explicit DevicePaged(const PagedCase& c)
        : q(c.q), k_cache(c.k_cache), weights(c.weights), seq_lens(c.seq_lens), block_table(c.block_table), inputs(c.inputs()) {
        inputs.q = q.get();
        inputs.k_cache = k_cache.get();
        inputs.weights = weights.get();
        inputs.seq_lens = seq_lens.get();
        inputs.block_table = block_table.get();
    }
};

struct DeviceRagged {
    DeviceArray<uint8_t> q, k;
    DeviceArray<float> k_scale, weights;
    DeviceArray<int32_t> row_start, row_end;
    dsa_ragged_inputs_t inputs;
    explicit DeviceRagged(const RaggedCase& c)
        : q(c.q), k(c.k), k_scale(c.k_scale), weights(c.weights), row_start(c.row_start), row_end(c.row_end), inputs(c.inputs()) {
        inputs.q = q.get();
        inputs.k = k.get();
        inputs.k_scale = k_scale.get();
        inputs.weights = weights.get();
        inputs.row_start = row_start.get();
        inputs.row_end = row_end.get();
    }
};

dsa_status_t workspace_size(dsa_context_t ctx, const dsa_topk_params_t& p, const dsa_paged_inputs_t& in, size_t* bytes) {
    return dsa_topk_paged_workspace_size(ctx, &p, &in, bytes);
}
dsa_status_t workspace_size(dsa_context_t ctx, const dsa_topk_params_t& p, const dsa_ragged_inputs_t& in, size_t* bytes) {
    return dsa_topk_ragged_workspace_size(ctx, &p, &in, bytes);
}
dsa_status_t launch(dsa_context_t ctx, const dsa_topk_params_t& p, const dsa_paged_inputs_t& in, const dsa_topk_outputs_t& out,
                    void* workspace, size_t bytes, cudaStream_t stream) {
    return dsa_topk_paged(ctx, &p, &in, &out, workspace, bytes, stream);
}
dsa_status_t launch(dsa_context_t ctx, const dsa_topk_params_t& p, const dsa_ragged_inputs_t& in, const dsa_topk_outputs_t& out,
                    void* workspace, size_t bytes, cudaStream_t stream) {
    return dsa_topk_ragged(ctx, &p, &in, &out, workspace, bytes, stream);
}

// Workspace of the queried size for one call, poisoned: an engine's workspace holds whatever its last user
// left there (a fresh cudaMalloc is often zeros), so every counter the kernels accumulate into must be cleared by
// the call itself.
template <class Inputs>
DeviceArray<uint8_t> workspace_for(dsa_context_t ctx, const dsa_topk_params_t& params, const Inputs& inputs) {
    size_t bytes = 0;
    const dsa_status_t status = workspace_size(ctx, params, inputs, &bytes);
    INFO(describe_status(status));
    REQUIRE(status == DSA_STATUS_SUCCESS);
    DeviceArray<uint8_t> workspace(bytes);
    workspace.poison();
    return workspace;
}

// One asynchronous call on `stream` in `workspace`, waited for, with the context's device-input flag checked clean.
template <class Inputs>
HostResult run_gpu_in(const DeviceArray<uint8_t>& workspace, dsa_context_t ctx, const dsa_topk_params_t& params,
                      const Inputs& inputs, int64_t rows, bool with_scores, cudaStream_t stream) {
    DeviceOutput out(rows, params.topk, with_scores);
    const dsa_status_t status = launch(ctx, params, inputs, out.outputs(), workspace.get(), workspace.bytes(), stream);
    INFO(describe_status(status));
    REQUIRE(status == DSA_STATUS_SUCCESS);
    cuda_ok(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
    const dsa_status_t sync = dsa_context_synchronize(ctx);
    INFO(describe_status(sync));
    REQUIRE(sync == DSA_STATUS_SUCCESS);
    return out.download();
}

// The same in a workspace of its own, poisoned.
template <class Inputs>
HostResult run_gpu(dsa_context_t ctx, const dsa_topk_params_t& params, const Inputs& inputs, int64_t rows,
                   bool with_scores, cudaStream_t stream) {
    return run_gpu_in(workspace_for(ctx, params, inputs), ctx, params, inputs, rows, with_scores, stream);
}

HostResult run_cpu(const PagedCase& c, int k, uint32_t flags, bool with_scores) {
    Context cpu;
    TopkOutput out(c.rows(), k, with_scores);
    REQUIRE(run_paged(cpu.get(), c, k, flags, out) == DSA_STATUS_SUCCESS);
    HostResult r{{out.indices(), out.indices() + c.rows() * k}, {}};
    if (with_scores) r.scores.assign(out.scores(), out.scores() + c.rows() * k);
    return r;
}

HostResult run_cpu(const RaggedCase& c, int k, uint32_t flags, bool with_scores) {
    Context cpu;
    TopkOutput out(c.rows(), k, with_scores);
    REQUIRE(run_ragged(cpu.get(), c, k, flags, out) == DSA_STATUS_SUCCESS);
    HostResult r{{out.indices(), out.indices() + c.rows() * k}, {}};
    if (with_scores) r.scores.assign(out.scores(), out.scores() + c.rows() * k);
    return r;
}

// The same index sets row by row (sorted mode: the same sequences), scores bitwise equal when compared.
std::string same_results(int64_t rows, int k, bool sorted, const HostResult& expected, const HostResult& got,
                         bool compare_scores) {
    for (int64_t r = 0; r < rows; ++r) {
        std::vector<int32_t> a(expected.indices.begin() + r * k, expected.indices.begin() + (r + 1) * k);
        std::vector<int32_t> b(got.indices.begin() + r * k, got.indices.begin() + (r + 1) * k);
        if (!sorted) {
            std::sort(a.begin(), a.end());
            std::sort(b.begin(), b.end());
        }
        if (a != b) return "row " + std::to_string(r) + ": the index sets differ from the CPU backend's";
    }
    if (compare_scores && sorted && std::memcmp(expected.scores.data(), got.scores.data(), expected.scores.size() * 4) != 0)
        return "returned scores differ from the CPU backend's";
    return "";
}

struct Scenario {
    const char* name;
    PagedLayout layout;
    std::vector<int32_t> seq_lens;
    std::vector<uint32_t> flag_sets;
};

std::vector<int32_t> repeat(int batch, int32_t len) { return std::vector<int32_t>(size_t(batch), len); }

std::vector<Scenario> paged_scenarios() {
    std::vector<int32_t> mixed = mixed_seq_lens(2048, 64, 20000);
    mixed.insert(mixed.end(), {2, 3, 4097});
    Rng lengths(99);
    std::vector<int32_t> many(1024);
    for (int32_t& len : many) len = int32_t(lengths.uniform(0, 3000));
    return {
        {"1024 sequences x next_n 4 = 4096 rows", layout_of(32, 32, 4), many, {0u, kSorted | kLogical}},
        {"FlashInfer-Bench core: 32 x 6400, H 64, P 64", layout_of(64, 64, 1), repeat(32, 6400), {0u, kSorted}},
        {"1 x 131072, logical indices", layout_of(64, 64, 1), repeat(1, 131072), {kLogical, kSorted | kLogical}},
        {"8 x 8192, H 32, P 32, next_n 2", layout_of(32, 32, 2), repeat(8, 8192), {0u, kSorted}},
        {"8 x 8192, H 32, P 32, next_n 3", layout_of(32, 32, 3), repeat(8, 8192), {kSorted, kLogical}},
        {"8 x 8192, H 64, P 32, next_n 4", layout_of(64, 32, 4), repeat(8, 8192), {0u, kSorted | kLogical}},
        {"mixed lengths, next_n 4", layout_of(64, 64, 4), mixed, {0u, kSorted}},
    };
}

RaggedCase ragged_case(int heads) {
    std::vector<std::pair<int32_t, int32_t>> windows = causal_windows({8192, 3000, 1}, {48, 16, 1});
    windows.insert(windows.end(), {{0, 0}, {100, 100}, {5000, 11000}, {0, 11193}});
    return RaggedCase(heads, 8192 + 3000 + 1, windows);
}

}  // namespace

// =====================================================================================================
// Results: SPEC section 5 on random inputs, exact equality with the CPU backend on tie-free ones

TEST_CASE("GPU small odd shapes equal the CPU backend exactly", "[gpu][exact][sanitize]") {
    // Small enough for compute-sanitizer: partial pages, empty MTP rows, k above every length.
    Context gpu(&kDevice, 1);
    Stream stream;
    SECTION("paged") {
        const int next_n = GENERATE(1, 4);
        PagedLayout layout = layout_of(32, 32, next_n);
        layout.table_padding = 3;
        layout.page_padding_bytes = 16;
        PagedCase c(layout, {0, 1, 2, 3, 5, 31, 32, 33, 100, 257}, 15001 + next_n);
        Rng rng(15002);
        fill_tie_free(c, rng);
        const auto exact = integer_scores(c);
        const DevicePaged d(c);
        for_each_variant({1, 7, 64, 300}, {0u, kSorted, kLogical, kSorted | kLogical}, [&](int k, uint32_t flags, bool with_scores) {
            INFO("next_n " << next_n << ", k " << k << ", flags " << flags);
            const HostResult r = run_gpu(gpu.get(), c.params(k, flags), d.inputs, c.rows(), with_scores, stream.get());
            CHECK(check_exact(c, exact, k, flags, r.indices.data(), r.scores_or_null()) == "");
            CHECK(same_results(c.rows(), k, flags & kSorted, run_cpu(c, k, flags, with_scores), r, with_scores) == "");
        });
    }
    SECTION("ragged") {
        std::vector<std::pair<int32_t, int32_t>> windows = causal_windows({1, 40, 300}, {1, 5, 4});
        windows.insert(windows.end(), {{0, 0}, {341, 341}, {20, 200}});
        RaggedCase c(64, 341, windows);
        Rng rng(15003);
        fill_tie_free(c, rng);
        const auto exact = integer_scores(c);
        const DeviceRagged d(c);
        for_each_variant({1, 7, 400}, {0u, kSorted | kAbsolute}, [&](int k, uint32_t flags, bool with_scores) {
            INFO("k " << k << ", flags " << flags);
            const HostResult r = run_gpu(gpu.get(), c.params(k, flags), d.inputs, c.rows(), with_scores, stream.get());
            CHECK(check_exact(c, exact, k, flags, r.indices.data(), r.scores_or_null()) == "");
        });
    }
}

TEST_CASE("GPU paged decode meets SPEC section 5 on benchmark-like inputs", "[gpu][paged]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    for (const Scenario& s : paged_scenarios()) {
        INFO(s.name);
        PagedCase c(s.layout, s.seq_lens, 1000 + s.seq_lens.size());
        Rng rng(2000 + s.seq_lens.size());
        fill_spec6(c, rng);
        const Oracle oracle = compute_oracle(c);
        const DevicePaged d(c);
        for_each_variant({1, 512, 2048}, s.flag_sets, [&](int k, uint32_t flags, bool with_scores) {
            INFO("k " << k << ", flags " << flags << (with_scores ? ", scores" : ""));
            const HostResult r = run_gpu(gpu.get(), c.params(k, flags), d.inputs, c.rows(), with_scores, stream.get());
            CHECK(check_spec5(c, oracle, k, flags, r.indices.data(), r.scores_or_null()) == "");
        });
    }
}

TEST_CASE("GPU paged decode equals the CPU backend on tie-free inputs", "[gpu][paged][exact]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    for (const Scenario& s : paged_scenarios()) {
        INFO(s.name);
        PagedCase c(s.layout, s.seq_lens, 3000 + s.seq_lens.size());
        Rng rng(4000 + s.seq_lens.size());
        fill_tie_free(c, rng);
        const auto exact = integer_scores(c);
        const DevicePaged d(c);
        for_each_variant({1, 512, 2048}, s.flag_sets, [&](int k, uint32_t flags, bool with_scores) {
            INFO("k " << k << ", flags " << flags << (with_scores ? ", scores" : ""));
            const HostResult r = run_gpu(gpu.get(), c.params(k, flags), d.inputs, c.rows(), with_scores, stream.get());
            CHECK(check_exact(c, exact, k, flags, r.indices.data(), r.scores_or_null()) == "");
            CHECK(same_results(c.rows(), k, flags & kSorted, run_cpu(c, k, flags, with_scores), r, with_scores) == "");
        });
    }
}

TEST_CASE("GPU million-token sequences: planted scores among exact ties", "[gpu][paged][large]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    const std::vector<std::pair<PagedLayout, std::vector<int32_t>>> cases = {
        {layout_of(64, 64, 1), {1048576}},
        {layout_of(32, 32, 2), {262144, 262143, 1000, 300000}},
    };
    for (const auto& [layout, seq_lens] : cases) {
        INFO(seq_lens.size() << " sequence(s), next_n " << layout.next_n);
        std::vector<std::vector<double>> exact;
        const PagedCase c = planted_paged(layout, seq_lens, 1500, 14001 + seq_lens.size(), exact);
        const DevicePaged d(c);
        for_each_variant({1, 512, 2048}, {0u, kSorted, kSorted | kLogical}, [&](int k, uint32_t flags, bool with_scores) {
            INFO("k " << k << ", flags " << flags);
            const HostResult r = run_gpu(gpu.get(), c.params(k, flags), d.inputs, c.rows(), with_scores, stream.get());
            CHECK(check_exact(c, exact, k, flags, r.indices.data(), r.scores_or_null()) == "");
        });
    }
}

TEST_CASE("GPU decode: skewed batches, wide block tables, equal, negative and NaN rows", "[gpu][paged][exact]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    auto check_case = [&](const PagedCase& c, const std::vector<std::vector<double>>& exact) {
        const DevicePaged d(c);
        for_each_variant({1, 700, 2048}, {0u, kSorted, kSorted | kLogical}, [&](int k, uint32_t flags, bool with_scores) {
            INFO("k " << k << ", flags " << flags);
            const HostResult r = run_gpu(gpu.get(), c.params(k, flags), d.inputs, c.rows(), with_scores, stream.get());
            CHECK(check_exact(c, exact, k, flags, r.indices.data(), r.scores_or_null()) == "");
            CHECK(same_results(c.rows(), k, flags & kSorted, run_cpu(c, k, flags, with_scores), r, with_scores) == "");
        });
    };
    // Sequence b's key p is a copy of its key p mod distinct[b]: each row's scores come in groups of equal ones
    // spread over the row, which the selection breaks by position, with the row's k-th best inside such a group.
    auto check_repeated_scores = [&](const std::vector<int32_t>& lens, const std::vector<int32_t>& distinct,
                                     uint64_t seed) {
        PagedCase c(layout_of(64, 64, 1), lens, seed);
        Rng rng(seed + 1);
        fill_tie_free(c, rng);
        for (int32_t b = 0; b < int32_t(lens.size()); ++b)
            for (int64_t p = distinct[size_t(b)]; p < lens[size_t(b)]; ++p)
                std::memcpy(c.mutable_key(b, p), c.key(b, p % distinct[size_t(b)]), kHeadDim);
        check_case(c, integer_scores(c));
    };
    SECTION("16 sequences of 1 .. 131072 tokens, log-spaced") {
        std::vector<int32_t> lens;
        for (int i = 0; i < 16; ++i) lens.push_back(int32_t(std::lround(std::pow(131072.0, i / 15.0))));
        PagedCase c(layout_of(64, 64, 1), lens, 16001);
        Rng rng(16002);
        fill_tie_free(c, rng);
        check_case(c, integer_scores(c));
    }
    SECTION("a block table 2560 pages wide for rows of 2000 tokens") {
        PagedLayout layout = layout_of(64, 64, 1);
        layout.unused_columns = 2560 - 32;
        PagedCase c(layout, repeat(48, 2000), 16003);
        Rng rng(16004);
        fill_tie_free(c, rng);
        check_case(c, integer_scores(c));
    }
    SECTION("every score repeated 3, 20, 32 or 160 times along its row") {
        // Rows of at most 8192 positions: the register selection.
        check_repeated_scores({3000, 5000, 8192, 8000}, {1000, 250, 256, 50}, 16007);
    }
    SECTION("long rows with every score repeated 6 to 16 times: the list's refinement among ties") {
        // Rows longer than 8192 positions, split over CTAs: the threshold bin's candidates go to the list and are
        // refined there (20000 and 12000 positions: the list from the row's scores; 40000: from the parts'
        // candidate pool).
        check_repeated_scores({20000, 12000, 40000}, {3000, 750, 5000}, 16011);
    }
    SECTION("every score equal, every score negative, every score NaN") {
        PagedCase c(layout_of(64, 64, 2), {20000, 3000, 9000}, 16005);
        Rng rng(16006);
        fill_tie_free(c, rng);
        for (int64_t p = 1; p < 20000; ++p) std::memcpy(c.mutable_key(0, p), c.key(0, 0), kHeadDim);  // all equal
        for (int64_t row = 2; row < 4; ++row)                                                         // all negative
            for (int h = 0; h < c.heads(); ++h) c.mutable_weights(row)[h] = -std::fabs(c.mutable_weights(row)[h]) - 1.0f;
        for (int64_t p = 0; p < 9000; ++p) c.mutable_key(2, p)[5] = kFp8NaN;                         // all NaN
        const Oracle oracle = compute_oracle(c);  // exact for these inputs
        std::vector<std::vector<double>> exact;
        for (const RowOracle& row : oracle) exact.push_back(row.score);
        check_case(c, exact);
    }
}

namespace {
// Case c (tie-free inputs) at k 1 and 2048, unsorted and sorted with logical indices, with and without scores:
// exact against its integer scores, and equal to the CPU backend.
void check_tie_free_case(dsa_context_t gpu, cudaStream_t stream, const PagedCase& c) {
    const auto exact = integer_scores(c);
    const DevicePaged d(c);
    for_each_variant({1, 2048}, {0u, kSorted | kLogical}, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", flags " << flags);
        const HostResult r = run_gpu(gpu, c.params(k, flags), d.inputs, c.rows(), with_scores, stream);
        CHECK(check_exact(c, exact, k, flags, r.indices.data(), r.scores_or_null()) == "");
        CHECK(same_results(c.rows(), k, flags & kSorted, run_cpu(c, k, flags, with_scores), r, with_scores) == "");
    });
}
}  // namespace

// Rows longer than 32768 tokens split over many CTAs end through the fused kernel's candidate pool (each part
// keeps its keys at or above a lower bound of the threshold bin); small enough for compute-sanitizer.
TEST_CASE("GPU decode: long rows split over many CTAs select from their parts' candidates", "[gpu][paged][exact][sanitize]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    for (int next_n : {1, 2}) {
        INFO("next_n " << next_n);
        PagedCase c(layout_of(64, 64, next_n), {40000, 33000, 100}, 16201 + next_n);
        Rng rng(16211 + next_n);
        fill_tie_free(c, rng);
        check_tie_free_case(gpu.get(), stream.get(), c);
    }
}

// The fused kernel gives a batch of at most one sequence per CTA the aligned plan when its shares are close to
// even (kernels/decode_plan.h), the even plan otherwise. Warp 0 plans a batch it holds whole (up to 64 sequences
// at next_n 1) from its registers, a larger one from shared memory. On an H100 or H200 (132 SMs) these take, in
// order: aligned with every sequence over 16 CTAs (registers), aligned with one CTA per sequence (shared memory),
// even (one long sequence among 99 short ones), even once warp 0's aligned plan did not fit (one among 59).
TEST_CASE("GPU decode: batches of at most one sequence per CTA, aligned or even plan", "[gpu][paged][exact]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    std::vector<int32_t> one_long(99, 2100);
    one_long.insert(one_long.begin() + 40, 40000);
    std::vector<int32_t> one_long_of_60(59, 2100);
    one_long_of_60.insert(one_long_of_60.begin() + 40, 96000);
    const std::vector<std::pair<const char*, std::vector<int32_t>>> batches = {
        {"8 x 8192", repeat(8, 8192)},
        {"128 x 4096", repeat(128, 4096)},
        {"40000 among 99 x 2100", one_long},
        {"96000 among 59 x 2100", one_long_of_60}};
    for (const auto& [name, lens] : batches) {
        INFO(name);
        PagedCase c(layout_of(64, 64, 1), lens, 16301 + lens.size());
        Rng rng(16311 + lens.size());
        fill_tie_free(c, rng);
        check_tie_free_case(gpu.get(), stream.get(), c);
    }
}

// A decode call's workspace holds what the call accumulates into (merge tickets, histogram slots, the pool
// counter), its plan and its scores, and every call must set them up for itself: one workspace for a run of calls
// with the same batch again, a batch and its permutation (same size and total), other sizes (the aligned plan from
// warp 0's registers and from shared memory, the even plan), k and flags that change which sequences have tiles,
// and scribbles between calls (a caller may use the workspace for something else) over its first bytes, a range
// further in, and all of it. Every call equals the CPU backend.
TEST_CASE("GPU decode: one workspace over a run of calls and batches gives every call its own rows", "[gpu][paged][exact]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    Rng lengths(16401);
    std::vector<int32_t> fib(22), many(200);
    for (int32_t& len : fib) len = int32_t(lengths.uniform(1, 5800));  // some sequences without tiles
    for (int32_t& len : many) len = int32_t(lengths.uniform(1, 3000));
    const std::vector<std::vector<int32_t>> batches = {
        repeat(8, 8192),                               // 0: aligned, from warp 0's registers
        {8192, 100, 5000, 3000, 8192, 1, 7000, 2100},  // 1
        {2100, 7000, 1, 8192, 3000, 5000, 100, 8192},  // 2: batch 1 permuted (same B, same units in all)
        fib,                                           // 3
        {40000, 2049, 0, 9000},                        // 4: the candidate pool, an empty sequence
        repeat(100, 2100),                             // 5: aligned, from shared memory (B > 64)
        many};                                         // 6: the even plan (B > the SM count)
    std::vector<PagedCase> cases;
    std::vector<std::unique_ptr<DevicePaged>> device;
    for (size_t i = 0; i < batches.size(); ++i) {
        cases.emplace_back(layout_of(64, 64, 1), batches[i], 16411 + int(i));
        Rng rng(16421 + int(i));
        fill_tie_free(cases.back(), rng);
    }
    for (const PagedCase& c : cases) device.push_back(std::make_unique<DevicePaged>(c));
    size_t bytes = 0;
    for (size_t i = 0; i < cases.size(); ++i)
        for (int k : {1000, 2048}) {
            const dsa_topk_params_t params = cases[i].params(k, kSorted);
            size_t b = 0;
            REQUIRE(workspace_size(gpu.get(), params, device[i]->inputs, &b) == DSA_STATUS_SUCCESS);
            bytes = std::max(bytes, b);
        }
    DeviceArray<uint8_t> workspace(bytes);
    workspace.poison();
    struct Call {
        int which;  // a case, or -1: scribble over [from, from + length) of the workspace
        int k = 2048;
        uint32_t flags = 0;
        size_t from = 0, length = 0;
    };
    const std::vector<Call> calls = {
        {0}, {0}, {1}, {2}, {1}, {2}, {2}, {0},             // same batch, permuted batch, back
        {3}, {3}, {3, 2048, kSorted}, {3, 1000}, {3, 1000},  // k and flags: other sequences without tiles
        {-1, 0, 0, 0, 4096}, {3, 1000},                     // the first bytes scribbled over
        {-1, 0, 0, 4096, 64 * 1024}, {3, 1000}, {3, 1000},  // a range further in
        {4}, {4}, {5}, {5}, {6}, {6}, {5},
        {-1, 0, 0, 0, bytes}, {6}, {0}};                    // all of it
    std::map<std::tuple<int, int, uint32_t>, HostResult> expected;  // the CPU backend's, by (case, k, flags)
    for (size_t i = 0; i < calls.size(); ++i) {
        const Call& call = calls[i];
        INFO("call " << i << ": case " << call.which << ", k " << call.k << ", flags " << call.flags);
        if (call.which < 0) {
            cuda_ok(cudaMemset(workspace.get() + call.from, 0x3c, std::min(call.length, workspace.bytes() - call.from)),
                    "cudaMemset");
            cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize after a scribble");
            continue;
        }
        const PagedCase& c = cases[size_t(call.which)];
        const HostResult r = run_gpu_in(workspace, gpu.get(), c.params(call.k, call.flags),
                                        device[size_t(call.which)]->inputs, c.rows(), false, stream.get());
        const auto key = std::make_tuple(call.which, call.k, call.flags);
        auto at = expected.find(key);
        if (at == expected.end()) at = expected.emplace(key, run_cpu(c, call.k, call.flags, false)).first;
        CHECK(same_results(c.rows(), call.k, call.flags & kSorted, at->second, r, false) == "");
    }
}

TEST_CASE("GPU decode: a sequence's rows are the same alone, first, last and inside a batch of 256", "[gpu][determinism]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    Rng lengths(16101);
    std::vector<int32_t> lens(256);
    for (int32_t& len : lens) len = int32_t(lengths.uniform(0, 9000));
    const int32_t target = 77;
    lens[size_t(target)] = 7777;
    PagedCase c(layout_of(64, 64, 2), lens, 16102);
    Rng rng(16103);
    fill_spec6(c, rng);
    const DevicePaged d(c);
    for (uint32_t flags : {0u, kSorted}) {
        const dsa_topk_params_t params = c.params(2048, flags);
        const HostResult whole = run_gpu(gpu.get(), params, d.inputs, c.rows(), true, stream.get());
        const size_t values = size_t(2 * 2048), offset = size_t(target) * values;
        auto rows_of_target = [&](int32_t first, int32_t count) {
            const dsa_paged_inputs_t part = sub_batch(d.inputs, c.heads(), c.layout.next_n, first, count);
            const HostResult r = run_gpu(gpu.get(), params, part, int64_t(count) * 2, true, stream.get());
            const size_t at = size_t(target - first) * values;
            return std::equal(r.indices.begin() + at, r.indices.begin() + at + values, whole.indices.begin() + offset) &&
                   std::memcmp(r.scores.data() + at, whole.scores.data() + offset, values * 4) == 0;
        };
        CHECK(rows_of_target(target, 1));               // alone
        CHECK(rows_of_target(target, 256 - target));    // first
        CHECK(rows_of_target(0, target + 1));           // last
        CHECK(rows_of_target(target - 30, 61));         // inside a smaller batch
    }
}

// Batches of up to 1024 sequences are planned by the fused CTAs themselves (each field of a CTA's plan written
// by the thread holding its sequence in the scan), larger ones by the plan kernel. A 1025th, empty sequence
// moves the same units to the plan kernel: the rows must not change.
TEST_CASE("GPU decode: self-planned and plan-kernel batches give the same rows", "[gpu][determinism]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    Rng lengths(16301);
    std::vector<int32_t> lens(1025);
    for (int32_t& len : lens) len = lengths.uniform(0, 3) == 0 ? 0 : int32_t(lengths.uniform(1, 700));
    lens[100] = 9000;    // split over CTAs, level-1 histograms added up
    lens[500] = 40000;   // split over CTAs, the candidate pool
    lens[1024] = 0;
    PagedCase c(layout_of(64, 64, 1), lens, 16302);
    Rng rng(16303);
    fill_spec6(c, rng);
    const DevicePaged d(c);
    const dsa_paged_inputs_t first_1024 = sub_batch(d.inputs, c.heads(), 1, 0, 1024);
    for (uint32_t flags : {0u, kSorted}) {
        INFO("flags " << flags);
        const dsa_topk_params_t params = c.params(2048, flags);
        const HostResult planned = run_gpu(gpu.get(), params, d.inputs, c.rows(), true, stream.get());
        const HostResult self = run_gpu(gpu.get(), params, first_1024, 1024, true, stream.get());
        CHECK(std::equal(self.indices.begin(), self.indices.end(), planned.indices.begin()));
        CHECK(std::memcmp(self.scores.data(), planned.scores.data(), self.scores.size() * 4) == 0);
    }
}

TEST_CASE("GPU ragged prefill: SPEC section 5 and exact equality with the CPU backend", "[gpu][ragged]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    const int heads = GENERATE(32, 64);
    SECTION("random inputs") {
        RaggedCase c = ragged_case(heads);
        Rng rng(5000 + heads);
        fill_spec6(c, rng);
        const Oracle oracle = compute_oracle(c);
        const DeviceRagged d(c);
        for_each_variant({1, 512, 2048}, {0u, kSorted | kAbsolute}, [&](int k, uint32_t flags, bool with_scores) {
            INFO("k " << k << ", flags " << flags);
            const HostResult r = run_gpu(gpu.get(), c.params(k, flags), d.inputs, c.rows(), with_scores, stream.get());
            CHECK(check_spec5(c, oracle, k, flags, r.indices.data(), r.scores_or_null()) == "");
        });
    }
    SECTION("tie-free inputs") {
        RaggedCase c = ragged_case(heads);
        Rng rng(6000 + heads);
        fill_tie_free(c, rng);
        const auto exact = integer_scores(c);
        const DeviceRagged d(c);
        for_each_variant({1, 512, 2048}, {kAbsolute, kSorted}, [&](int k, uint32_t flags, bool with_scores) {
            INFO("k " << k << ", flags " << flags);
            const HostResult r = run_gpu(gpu.get(), c.params(k, flags), d.inputs, c.rows(), with_scores, stream.get());
            CHECK(check_exact(c, exact, k, flags, r.indices.data(), r.scores_or_null()) == "");
            CHECK(same_results(c.rows(), k, flags & kSorted, run_cpu(c, k, flags, with_scores), r, with_scores) == "");
        });
    }
}

// =====================================================================================================
// Prefill (issue 13, "Checks"): the shapes that a fused prefill kernel finds hard. Such a kernel groups query
// rows 4 at a time, streams the union of a group's windows in 64-key tiles, keeps per row a buffer of 4096
// candidates compacted to the best k whenever it fills (a running threshold skipping the rest), and selects
// exactly at the end. So these cases have windows of any length and start (not multiples of 64 or 4), row
// counts of 4n+1 and 4n+3, groups of 4 mixing sequences, empty rows and rows shorter than k, windows just
// below, at and above 2048, 4096 and 6144 keys and up to 36,000 (many compactions), and score orders that
// make the compaction and the threshold work hardest. Integer inputs are compared with the CPU backend bit
// for bit; random (SPEC section 6) inputs go through the SPEC section 5 checker. Every case runs under
// gpu_tests (the fused kernel on sm_90a) and gpu_tests_split (the score + select kernels) (ctest).

namespace {

const std::vector<uint32_t> kRaggedFlagSets = {0u, kSorted, kAbsolute, kSorted | kAbsolute};

// The expected result of every (k, flags, scores) variant of a case from one CPU-backend call: its sorted top
// max_k with scores and relative indices. The ranking is a total order, so the sorted top k is that call's
// first min(k, n) entries; the unsorted result is the same entries in ascending position order
// (dsa_indexer.h); absolute indices add row_start; padding is -1 and -inf. One scoring pass on the CPU
// instead of one per variant.
class CpuRagged {
public:
    CpuRagged(const RaggedCase& c, int max_k) : c_(c), max_k_(max_k), top_(run_cpu(c, max_k, kSorted, true)) {}

    HostResult expected(int k, uint32_t flags, bool with_scores) const {
        REQUIRE(k <= max_k_);
        const int64_t rows = c_.rows();
        HostResult e{std::vector<int32_t>(size_t(rows * k), -1), {}};
        if (with_scores) e.scores.assign(size_t(rows * k), -std::numeric_limits<float>::infinity());
        std::vector<std::pair<int32_t, float>> row;
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t count = std::min<int64_t>(k, c_.visible(r));
            row.clear();
            for (int64_t i = 0; i < count; ++i)
                row.emplace_back(top_.indices[size_t(r * max_k_ + i)], top_.scores[size_t(r * max_k_ + i)]);
            if (!(flags & kSorted))
                std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
            const int32_t offset = (flags & kAbsolute) ? c_.row_start[size_t(r)] : 0;
            for (int64_t i = 0; i < count; ++i) {
                e.indices[size_t(r * k + i)] = row[size_t(i)].first + offset;
                if (with_scores) e.scores[size_t(r * k + i)] = row[size_t(i)].second;
            }
        }
        return e;
    }

private:
    const RaggedCase& c_;
    int max_k_;
    HostResult top_;
};

// Where a row is, for failure messages: its window, and its group of 4 rows counted from row 0.
std::string describe_row(const RaggedCase& c, int64_t r) {
    std::ostringstream s;
    s << "row " << r << " (window [" << c.row_start[size_t(r)] << ", " << c.row_end[size_t(r)] << "), " << c.visible(r)
      << " keys; in rows " << r / 4 * 4 << ".." << std::min(r / 4 * 4 + 3, c.rows() - 1) << ")";
    return s.str();
}

// "" when `got` equals `expected` bit for bit (indices, and scores when requested), else the first
// difference in words.
std::string diff_ragged(const RaggedCase& c, int k, const HostResult& expected, const HostResult& got) {
    if (got.indices.size() != expected.indices.size() || got.scores.size() != expected.scores.size())
        return "output sizes differ";
    for (int64_t r = 0; r < c.rows(); ++r) {
        const int32_t* e = expected.indices.data() + r * k;
        const int32_t* g = got.indices.data() + r * k;
        for (int i = 0; i < k; ++i) {
            if (e[i] == g[i]) continue;
            std::ostringstream s;
            s << describe_row(c, r) << " slot " << i << ": index " << g[i] << ", the CPU backend's " << e[i]
              << (std::is_permutation(e, e + k, g) ? " (the same set in another order)" : "");
            return s.str();
        }
        for (int i = 0; i < k && !expected.scores.empty(); ++i) {
            const size_t at = size_t(r * k + i);
            if (std::memcmp(&expected.scores[at], &got.scores[at], 4) == 0) continue;
            std::ostringstream s;
            s.precision(10);
            s << describe_row(c, r) << " slot " << i << " (index " << g[i] << "): score " << got.scores[at]
              << ", the CPU backend's " << expected.scores[at];
            return s.str();
        }
    }
    return "";
}

// Unsorted results come in ascending position order (dsa_indexer.h): "" when they do.
std::string ascending_when_unsorted(const RaggedCase& c, int k, uint32_t flags, const HostResult& got) {
    if (flags & kSorted) return "";
    for (int64_t r = 0; r < c.rows(); ++r) {
        const int64_t count = std::min<int64_t>(k, c.visible(r));
        for (int64_t i = 1; i < count; ++i)
            if (got.indices[size_t(r * k + i)] <= got.indices[size_t(r * k + i - 1)])
                return describe_row(c, r) + ": unsorted results not in ascending position order at slot " + std::to_string(i);
    }
    return "";
}

// Every variant of an integer-valued case on the GPU, equal bit for bit to the CPU backend; also to the exact
// expectation when `exact` (integer_scores) is given.
void check_ragged_exact(dsa_context_t gpu, cudaStream_t stream, const RaggedCase& c, std::initializer_list<int> ks,
                        const std::vector<std::vector<double>>* exact = nullptr,
                        const std::vector<uint32_t>& flag_sets = kRaggedFlagSets) {
    const CpuRagged cpu(c, std::max(ks));
    const DeviceRagged d(c);
    for_each_variant(ks, flag_sets, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", flags " << flags << (with_scores ? ", scores" : ""));
        const HostResult r = run_gpu(gpu, c.params(k, flags), d.inputs, c.rows(), with_scores, stream);
        CHECK(diff_ragged(c, k, cpu.expected(k, flags, with_scores), r) == "");
        if (exact) CHECK(check_exact(c, *exact, k, flags, r.indices.data(), r.scores_or_null()) == "");
    });
}

// Every variant of a random case on the GPU through the SPEC section 5 checker.
void check_ragged_spec5(dsa_context_t gpu, cudaStream_t stream, const RaggedCase& c, std::initializer_list<int> ks,
                        const std::vector<uint32_t>& flag_sets = kRaggedFlagSets) {
    const Oracle oracle = compute_oracle(c);
    const DeviceRagged d(c);
    for_each_variant(ks, flag_sets, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", flags " << flags << (with_scores ? ", scores" : ""));
        const HostResult r = run_gpu(gpu, c.params(k, flags), d.inputs, c.rows(), with_scores, stream);
        CHECK(check_spec5(c, oracle, k, flags, r.indices.data(), r.scores_or_null()) == "");
        CHECK(ascending_when_unsorted(c, k, flags, r) == "");
    });
}

// Integer inputs whose score at key i is exactly value(i) + C_r, C_r a constant of row r: head 0 reads the
// key's low three base-16 digits (dims 0..2, q 1, 16, 256, weight 1), head 1 the high three (dims 3..5,
// weight 4096), and every other head dim 6, which is 2 in every key (q 1, a random integer weight in [-3, 3],
// negative ones included). value(i) must lie in [0, 2^24); every partial sum is an integer below 2^24, exact
// in fp32 in any order. Scales 1; the keys' other dims are random (every query is 0 there).
template <class Value>
void fill_valued(RaggedCase& c, Rng& rng, Value&& value) {
    for (int64_t i = 0; i < c.num_keys(); ++i) {
        const int64_t v = value(i);
        if (v < 0 || v >= (int64_t(1) << 24)) FAIL("fill_valued: value " << v << " outside [0, 2^24)");
        uint8_t* key = c.mutable_key(i);
        for (int d = 0; d < kHeadDim; ++d)
            key[d] = fp8_encode(d < 6 ? double((v >> (4 * d)) & 15) : d == 6 ? 2.0 : double(rng.uniform(-2, 2)));
        c.set_scale(i, 1.0f);
    }
    for (int64_t r = 0; r < c.rows(); ++r) {
        uint8_t* q = c.mutable_query(r);
        float* w = c.mutable_weights(r);
        std::fill(q, q + c.heads() * kHeadDim, fp8_encode(0.0));
        for (int digit = 0; digit < 3; ++digit) {
            q[digit] = fp8_encode(double(1 << (4 * digit)));
            q[kHeadDim + 3 + digit] = fp8_encode(double(1 << (4 * digit)));
        }
        w[0] = 1.0f;
        w[1] = 4096.0f;
        for (int h = 2; h < c.heads(); ++h) {
            q[h * kHeadDim + 6] = fp8_encode(1.0);
            w[h] = float(rng.uniform(-3, 3));
        }
    }
}

}  // namespace

TEST_CASE("GPU prefill: one causal sequence of 5001 tokens", "[gpu][ragged][prefill]") {
    // Row r sees [0, r + 1): rows shorter and longer than k = 2048, windows of every length up to 5001,
    // 4n+1 rows (the last group holds one row).
    Context gpu(&kDevice, 1);
    Stream stream;
    const std::vector<std::pair<int32_t, int32_t>> windows = causal_windows({5001}, {5001});
    SECTION("tie-free inputs, 64 heads: equal to the CPU backend") {
        RaggedCase c(64, 5001, windows);
        Rng rng(17001);
        fill_tie_free(c, rng);
        check_ragged_exact(gpu.get(), stream.get(), c, {1, 1000, 2048});
    }
    SECTION("random inputs, 32 heads: SPEC section 5") {
        // The costliest CPU part of the prefill cases: the float64 oracle over 12.5 million (row, key) pairs
        // (hence 32 heads; 64 with random inputs: the chunked case) and the single-threaded checker, about
        // 2.5 s per variant here. So one variant, the one the checker says most about (order and scores);
        // the other k and flags with random inputs: the chunked case.
        RaggedCase c(32, 5001, windows);
        Rng rng(17002);
        fill_spec6(c, rng);
        check_ragged_spec5(gpu.get(), stream.get(), c, {2048}, {kSorted | kAbsolute});
    }
}

TEST_CASE("GPU prefill: causal sequences of 1, 63, 2048, 2049, 4100 and 9000 tokens in one call", "[gpu][ragged][prefill]") {
    // Every token a query row: 17261 rows (4n+1) packed sequence after sequence; the groups of 4 rows at the
    // ends of the first, fourth and fifth sequences (rows 0..3, 4160..4163, 8260..8263) mix two sequences.
    Context gpu(&kDevice, 1);
    Stream stream;
    const std::vector<int32_t> lens = {1, 63, 2048, 2049, 4100, 9000};
    RaggedCase c(64, 1 + 63 + 2048 + 2049 + 4100 + 9000, causal_windows(lens, lens));
    REQUIRE(c.rows() % 4 == 1);
    Rng rng(17101);
    fill_tie_free(c, rng);
    // Two flag sets, both sort orders and both index modes (all four in the other cases): the host-side
    // comparison of 17261 rows x k per variant is single-threaded.
    check_ragged_exact(gpu.get(), stream.get(), c, {1, 1000, 2048}, nullptr, {kAbsolute, kSorted});
}

TEST_CASE("GPU prefill: chunked prefill, empty rows, windows across sequences", "[gpu][ragged][prefill]") {
    // Each sequence's cached prefix is in K and only its last chunk are query rows, so windows start at the
    // sequence (anywhere in the buffer) and end past a long prefix: sequence 1's rows see ~20000 keys. Chunks
    // of 3, 40, 6, 130, 2, 1, 11 and 4 rows put rows of two sequences in one group of 4. Around them: empty
    // windows (at 0, mid-buffer, at N), windows of exactly 4096 and 4097 keys starting mid-sequence, and the
    // whole buffer (36,316 keys over every sequence). 203 rows (4n+3).
    Context gpu(&kDevice, 1);
    Stream stream;
    const int heads = GENERATE(32, 64);
    const std::vector<int32_t> key_lens = {3, 20011, 4197, 130, 2100, 5000, 777, 4098};
    const std::vector<int32_t> chunks = {3, 40, 6, 130, 2, 1, 11, 4};
    int32_t n = 0;
    for (int32_t len : key_lens) n += len;
    std::vector<std::pair<int32_t, int32_t>> windows = {{0, 0}};
    for (const auto& w : causal_windows(key_lens, chunks)) windows.push_back(w);
    windows.insert(windows.end(), {{n, n}, {1234, 1234}, {5, 5 + 4096}, {100, 100 + 4097}, {0, n}});
    RaggedCase c(heads, n, windows);
    REQUIRE(c.rows() % 4 == 3);
    SECTION("tie-free inputs: equal to the CPU backend and to the exact scores") {
        Rng rng(17201 + heads);
        fill_tie_free(c, rng);
        const auto exact = integer_scores(c);
        check_ragged_exact(gpu.get(), stream.get(), c, {1, 7, 1000, 2048}, &exact);
    }
    SECTION("random inputs: SPEC section 5") {
        Rng rng(17301 + heads);
        fill_spec6(c, rng);
        check_ragged_spec5(gpu.get(), stream.get(), c, {1, 7, 1000, 2048});
    }
    SECTION("tie-free inputs, each sequence's first half scaled x4: equal to the CPU backend") {
        // A long row's best k then sit in its first keys, so an estimate of its k-th best taken from them is
        // too high: sequence 1's rows (~20000 keys) and the whole-buffer row end short and are scored again.
        // Scores stay exact: integer sums times a power of two.
        Rng rng(17501 + heads);
        fill_tie_free(c, rng);
        int32_t first = 0;
        for (int32_t len : key_lens) {
            for (int32_t i = first; i < first + len / 2; ++i) c.set_scale(i, 4.0f * c.k_scale[size_t(i)]);
            first += len;
        }
        check_ragged_exact(gpu.get(), stream.get(), c, {1, 7, 1000, 2048});
    }
}

TEST_CASE("GPU prefill: scores rising, falling, equal or few-valued along the keys", "[gpu][ragged][prefill][ties]") {
    // Score orders against a running threshold and a 4096-candidate buffer: rising scores make every tile beat
    // the candidates so far (a compaction every ~2048 keys at k = 2048); falling ones let nothing past the
    // threshold after the first fill; equal scores and a staircase (p / 2048) make ties that the smaller
    // position must win across compactions; four random values make ties everywhere. Windows of 2048..2050,
    // 4095..4098, 6144..6146 and ~20480 keys, an empty row sharing a group with long ones; 21 rows (4n+1).
    Context gpu(&kDevice, 1);
    Stream stream;
    const int heads = GENERATE(32, 64);
    const std::vector<int32_t> key_lens = {20483, 4098, 6146, 2050, 65};
    int32_t n = 0;
    for (int32_t len : key_lens) n += len;
    std::vector<std::pair<int32_t, int32_t>> windows = causal_windows(key_lens, {7, 4, 3, 3, 2});
    windows.insert(windows.begin() + 7, {20483, 20483});
    windows.push_back({n, n});
    RaggedCase c(heads, n, windows);
    REQUIRE(c.rows() % 4 == 1);
    Rng rng(17401 + heads);
    auto run = [&](auto&& value) {
        fill_valued(c, rng, value);
        const auto exact = integer_scores(c);
        check_ragged_exact(gpu.get(), stream.get(), c, {1, 7, 1000, 2048}, &exact);
    };
    SECTION("rising") { run([](int64_t i) { return i; }); }
    SECTION("falling") { run([&](int64_t i) { return n - 1 - i; }); }
    SECTION("all equal") { run([](int64_t) { return int64_t(777); }); }
    SECTION("staircase: equal in runs of 2048, rising") { run([](int64_t i) { return i / 2048; }); }
    SECTION("four values at random") { run([&](int64_t) { return rng.uniform(0, 3); }); }
}

TEST_CASE("GPU ties, signed zeros, NaN and infinities follow the ranking rule", "[gpu][ties][nan][sanitize]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    PagedCase c(layout_of(64, 64, 3), {3000, 700, 70}, 7001);
    Rng rng(7002);
    fill_tie_free(c, rng);
    // Sequence 0: special scales and NaN keys; sequence 1: a large group of identical keys and a group of
    // zero keys scaled by +-1 (scores +0 and -0); rows 7 and 8 (sequence 2): weights +inf and -inf.
    add_special_scores(c, 0, 400, rng);
    std::vector<uint8_t> tied_key(c.key(3, 11), c.key(3, 11) + kHeadDim);
    for (int64_t p : random_subset(rng, 700, 300)) std::memcpy(c.mutable_key(1, p), tied_key.data(), kHeadDim);
    for (int64_t p : random_subset(rng, 700, 100)) {
        std::memset(c.mutable_key(1, p), 0, kHeadDim);
        c.set_scale(1, p, rng.uniform(0, 1) ? 1.0f : -1.0f);
    }
    c.mutable_weights(7)[0] = std::numeric_limits<float>::infinity();
    c.mutable_weights(8)[0] = -std::numeric_limits<float>::infinity();
    const Oracle oracle = compute_oracle(c);  // exact for these inputs
    std::vector<std::vector<double>> exact;
    for (const RowOracle& row : oracle) exact.push_back(row.score);
    const DevicePaged d(c);
    for_each_variant({1, 200, 650, 2048}, {0u, kSorted, kSorted | kLogical}, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", flags " << flags);
        const HostResult r = run_gpu(gpu.get(), c.params(k, flags), d.inputs, c.rows(), with_scores, stream.get());
        CHECK(check_exact(c, exact, k, flags, r.indices.data(), r.scores_or_null()) == "");
    });
}

TEST_CASE("GPU output stays valid whatever the weights hold", "[gpu][nan]") {
    // NaN weights are device data here: not rejected, but the output must still be valid.
    Context gpu(&kDevice, 1);
    Stream stream;
    PagedCase c(layout_of(64, 64, 2), {5000, 900, 3}, 7101);
    Rng rng(7102);
    fill_spec6(c, rng);
    const float specials[] = {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN()};
    for (float& w : c.weights)
        if (rng.uniform(0, 7) == 0) w = specials[rng.uniform(0, 2)];
    std::fill(c.weights.begin(), c.weights.begin() + 64, specials[2]);  // a row of NaN weights only
    const DevicePaged d(c);
    for (int k : {1, 2048}) {
        const HostResult r = run_gpu(gpu.get(), c.params(k, kSorted), d.inputs, c.rows(), true, stream.get());
        CHECK(check_valid(c, k, kSorted, r.indices.data(), r.scores_or_null()) == "");
    }
}

// =====================================================================================================
// Determinism, streams, graphs

TEST_CASE("GPU results are bitwise identical across 100 runs, streams and batch compositions", "[gpu][determinism]") {
    Context gpu(&kDevice, 1);
    Stream stream, other_stream;
    PagedCase c(layout_of(64, 64, 2), repeat(8, 8192), 8001);
    Rng rng(8002);
    fill_spec6(c, rng);
    const DevicePaged d(c);
    const dsa_topk_params_t params = c.params(2048, kSorted);
    const HostResult reference = run_gpu(gpu.get(), params, d.inputs, c.rows(), true, stream.get());

    DeviceArray<uint8_t> workspace = workspace_for(gpu.get(), params, d.inputs);
    DeviceOutput out(c.rows(), 2048, true);
    int identical = 0;
    for (int run = 1; run < 100; ++run) {
        out.poison();
        REQUIRE(launch(gpu.get(), params, d.inputs, out.outputs(), workspace.get(), workspace.bytes(), stream.get()) ==
                DSA_STATUS_SUCCESS);
        stream.sync();
        identical += out.download() == reference;
    }
    CHECK(identical == 99);
    CHECK(run_gpu(gpu.get(), params, d.inputs, c.rows(), true, other_stream.get()) == reference);
    CHECK(run_gpu(gpu.get(), params, d.inputs, c.rows(), true, nullptr) == reference);  // legacy default stream

    // Sequences 2..4 alone: their rows do not depend on the rest of the batch.
    const dsa_paged_inputs_t part = sub_batch(d.inputs, c.heads(), c.layout.next_n, 2, 3);
    const HostResult alone = run_gpu(gpu.get(), params, part, 3 * 2, true, stream.get());
    const size_t offset = size_t(2 * 2 * 2048), values = size_t(3 * 2 * 2048);
    CHECK(std::equal(alone.indices.begin(), alone.indices.end(), reference.indices.begin() + offset));
    CHECK(std::memcmp(alone.scores.data(), reference.scores.data() + offset, values * 4) == 0);
}

TEST_CASE("GPU calls captured in a CUDA graph replay to the direct results", "[gpu][graph]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    PagedCase c(layout_of(64, 64, 1), repeat(16, 6000), 9001);
    Rng rng(9002);
    fill_spec6(c, rng);
    DevicePaged d(c);
    const dsa_topk_params_t params = c.params(2048, kSorted);
    const HostResult direct = run_gpu(gpu.get(), params, d.inputs, c.rows(), true, stream.get());

    DeviceArray<uint8_t> workspace = workspace_for(gpu.get(), params, d.inputs);
    DeviceOutput out(c.rows(), 2048, true);
    cudaGraph_t graph = nullptr;
    cuda_ok(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    const dsa_status_t status = launch(gpu.get(), params, d.inputs, out.outputs(), workspace.get(), workspace.bytes(), stream.get());
    const cudaError_t end = cudaStreamEndCapture(stream.get(), &graph);
    INFO(describe_status(status));
    REQUIRE(status == DSA_STATUS_SUCCESS);
    REQUIRE(end == cudaSuccess);  // the call did nothing a capture forbids (allocation, host synchronisation)
    cudaGraphExec_t exec = nullptr;
    cuda_ok(cudaGraphInstantiateWithFlags(&exec, graph, 0), "cudaGraphInstantiate");
    CHECK(out.download().all_poison());  // captured, not run
    for (int replay = 0; replay < 3; ++replay) {
        out.poison();
        cuda_ok(cudaGraphLaunch(exec, stream.get()), "cudaGraphLaunch");
        stream.sync();
        CHECK(out.download() == direct);
    }
    // The graph reads the inputs at replay time: new queries give the new direct result.
    Rng other(9003);
    fill_spec6(c, other);
    d.q.upload(c.q.data());
    d.weights.upload(c.weights.data());
    const HostResult new_direct = run_gpu(gpu.get(), params, d.inputs, c.rows(), true, stream.get());
    out.poison();
    cuda_ok(cudaGraphLaunch(exec, stream.get()), "cudaGraphLaunch");
    stream.sync();
    CHECK(out.download() == new_direct);
    CHECK(dsa_context_synchronize(gpu.get()) == DSA_STATUS_SUCCESS);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
}

// =====================================================================================================
// Bad input found on the device, workspace, host checks

TEST_CASE("GPU: a bad block-table entry or seq_len pads its rows and is reported once", "[gpu][validation][sanitize]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    PagedCase c(layout_of(64, 64, 2), {1000, 900, 640, 77}, 10001);
    Rng rng(10002);
    fill_tie_free(c, rng);
    const std::vector<std::pair<const char*, std::function<void(PagedCase&)>>> corruptions = {
        {"entry num_pages + 5", [](PagedCase& b) { b.block_table[size_t(1 * b.table_stride + 0)] = int32_t(b.num_pages + 5); }},
        {"entry -1 in the last visible page", [](PagedCase& b) { b.block_table[size_t(1 * b.table_stride + 14)] = -1; }},
        {"seq_len beyond max_pages * P", [](PagedCase& b) { b.seq_lens[1] = b.max_pages * 64 + 1; }},
        {"negative seq_len", [](PagedCase& b) { b.seq_lens[1] = -5; }},
    };
    // Scored rows (k 256, sorted, scores), and rows written whole without scores (k 1024 covers the 900
    // tokens of sequence 1; unsorted, no scores): both must find the bad entry.
    const std::vector<std::tuple<int, uint32_t, bool>> modes = {{256, kSorted, true}, {1024, 0u, false}};
    for (const auto& [k, flags, with_scores] : modes) {
        const HostResult valid = run_cpu(c, k, flags, with_scores);
        for (const auto& [what, corrupt] : corruptions) {
            INFO(what << ", k " << k << (with_scores ? ", sorted, scores" : ", unsorted, no scores"));
            PagedCase bad = c;
            corrupt(bad);
            const DevicePaged d(bad);
            const dsa_topk_params_t params = bad.params(k, flags);
            DeviceArray<uint8_t> workspace = workspace_for(gpu.get(), params, d.inputs);
            DeviceOutput out(c.rows(), k, with_scores);
            const dsa_status_t status =
                launch(gpu.get(), params, d.inputs, out.outputs(), workspace.get(), workspace.bytes(), stream.get());
            INFO(describe_status(status));
            REQUIRE(status == DSA_STATUS_SUCCESS);  // device data: not looked at on the host
            stream.sync();
            const HostResult r = out.download();
            for (int64_t row = 0; row < c.rows(); ++row) {
                const bool padded = row / 2 == 1;  // sequence 1's rows
                for (int i = 0; i < k; ++i) {
                    const size_t at = size_t(row * k + i);
                    if (padded) {
                        CHECK(r.indices[at] == -1);
                        if (with_scores) CHECK((std::isinf(r.scores[at]) && r.scores[at] < 0));
                    } else {
                        CHECK(r.indices[at] == valid.indices[at]);
                    }
                }
            }
            CHECK(dsa_context_synchronize(gpu.get()) == DSA_STATUS_DEVICE_INPUT_ERROR);
            CHECK(std::string(dsa_last_error_message()) != "");
            CHECK(dsa_context_synchronize(gpu.get()) == DSA_STATUS_SUCCESS);  // reading the flag cleared it
            const DevicePaged good(c);
            CHECK(run_gpu(gpu.get(), params, good.inputs, c.rows(), with_scores, stream.get()) == valid);
        }
    }
}

TEST_CASE("GPU: a ragged window outside [0, num_keys] pads its row and is reported once", "[gpu][validation][sanitize]") {
    // On a GPU context the windows are device data: checked by the kernels, not on the host.
    Context gpu(&kDevice, 1);
    Stream stream;
    RaggedCase c(32, 600, causal_windows({400, 200}, {3, 3}));
    Rng rng(10101);
    fill_tie_free(c, rng);
    const int k = 64;
    const HostResult valid = run_cpu(c, k, kSorted, true);
    const std::vector<std::pair<int32_t, int32_t>> bad_windows = {{0, 601}, {-1, 10}, {300, 299}};
    for (const auto& [start, end] : bad_windows) {
        INFO("row 4 window [" << start << ", " << end << ")");
        RaggedCase bad = c;
        bad.row_start[4] = start;
        bad.row_end[4] = end;
        const DeviceRagged d(bad);
        const dsa_topk_params_t params = bad.params(k, kSorted);
        DeviceArray<uint8_t> workspace = workspace_for(gpu.get(), params, d.inputs);
        DeviceOutput out(c.rows(), k, true);
        REQUIRE(launch(gpu.get(), params, d.inputs, out.outputs(), workspace.get(), workspace.bytes(), stream.get()) ==
                DSA_STATUS_SUCCESS);
        stream.sync();
        const HostResult r = out.download();
        for (int64_t row = 0; row < c.rows(); ++row)
            for (int i = 0; i < k; ++i) {
                const size_t at = size_t(row * k + i);
                CHECK(r.indices[at] == (row == 4 ? -1 : valid.indices[at]));
            }
        CHECK(dsa_context_synchronize(gpu.get()) == DSA_STATUS_DEVICE_INPUT_ERROR);
        CHECK(dsa_context_synchronize(gpu.get()) == DSA_STATUS_SUCCESS);
    }
}

TEST_CASE("GPU: too small a workspace is rejected and nothing is written", "[gpu][validation]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    PagedCase paged(layout_of(64, 64, 1), repeat(8, 8192), 11001);
    RaggedCase ragged = ragged_case(64);
    Rng rng(11002);
    fill_spec6(paged, rng);
    fill_spec6(ragged, rng);
    const DevicePaged dp(paged);
    const DeviceRagged dr(ragged);

    auto expect_rejections = [&](const dsa_topk_params_t& params, const auto& inputs, int64_t rows) {
        size_t needed = 0;
        REQUIRE(workspace_size(gpu.get(), params, inputs, &needed) == DSA_STATUS_SUCCESS);
        if (needed == 0) {
            WARN("this call needs no workspace: nothing to check");
            return;
        }
        DeviceArray<uint8_t> workspace(needed);
        DeviceOutput out(rows, params.topk, true);
        CHECK(launch(gpu.get(), params, inputs, out.outputs(), workspace.get(), needed - 1, stream.get()) ==
              DSA_STATUS_INSUFFICIENT_WORKSPACE);
        CHECK(launch(gpu.get(), params, inputs, out.outputs(), nullptr, needed, stream.get()) == DSA_STATUS_INSUFFICIENT_WORKSPACE);
        CHECK(launch(gpu.get(), params, inputs, out.outputs(), nullptr, 0, stream.get()) == DSA_STATUS_INSUFFICIENT_WORKSPACE);
        stream.sync();
        CHECK(out.download().all_poison());
        CHECK(dsa_context_synchronize(gpu.get()) == DSA_STATUS_SUCCESS);
    };
    expect_rejections(paged.params(2048, kSorted), dp.inputs, paged.rows());
    expect_rejections(ragged.params(2048, kSorted), dr.inputs, ragged.rows());
}

TEST_CASE("GPU: host-visible checks still reject before any work", "[gpu][validation][sanitize]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    PagedCase c(layout_of(64, 64, 1), {500, 20}, 12001);
    Rng rng(12002);
    fill_spec6(c, rng);
    const DevicePaged d(c);
    DeviceArray<uint8_t> workspace = workspace_for(gpu.get(), c.params(64, 0), d.inputs);
    const std::vector<std::tuple<const char*, dsa_status_t, std::function<void(dsa_topk_params_t&, dsa_paged_inputs_t&)>>> cases = {
        {"topk 0", DSA_STATUS_UNSUPPORTED, [](dsa_topk_params_t& p, dsa_paged_inputs_t&) { p.topk = 0; }},
        {"num_heads 48", DSA_STATUS_UNSUPPORTED, [](dsa_topk_params_t& p, dsa_paged_inputs_t&) { p.num_heads = 48; }},
        {"unknown flag", DSA_STATUS_INVALID_ARGUMENT, [](dsa_topk_params_t& p, dsa_paged_inputs_t&) { p.flags = 0x10; }},
        {"q NULL", DSA_STATUS_INVALID_ARGUMENT, [](dsa_topk_params_t&, dsa_paged_inputs_t& in) { in.q = nullptr; }},
        {"q misaligned", DSA_STATUS_INVALID_ARGUMENT,
         [](dsa_topk_params_t&, dsa_paged_inputs_t& in) { in.q = static_cast<const uint8_t*>(in.q) + 1; }},
        {"page stride not a multiple of 16", DSA_STATUS_INVALID_ARGUMENT,
         [](dsa_topk_params_t&, dsa_paged_inputs_t& in) { in.page_stride_bytes += 8; }},
        {"negative batch", DSA_STATUS_INVALID_ARGUMENT, [](dsa_topk_params_t&, dsa_paged_inputs_t& in) { in.batch_size = -1; }},
    };
    for (const auto& [what, expected, breaks] : cases) {
        INFO(what);
        dsa_topk_params_t params = c.params(64, 0);
        dsa_paged_inputs_t inputs = d.inputs;
        breaks(params, inputs);
        DeviceOutput out(c.rows(), 64, true);
        CHECK(launch(gpu.get(), params, inputs, out.outputs(), workspace.get(), workspace.bytes(), stream.get()) == expected);
        stream.sync();
        CHECK(out.download().all_poison());
    }
    CHECK(dsa_context_synchronize(gpu.get()) == DSA_STATUS_SUCCESS);
}

// The engine path looks a pointer up only when its argument brings a new one: a host buffer is rejected
// whenever it comes, also in an argument that held device memory on the calls before, and nothing is written.
TEST_CASE("GPU: pointers that are not the GPU's memory are rejected, also between good calls", "[gpu][validation]") {
    Context gpu(&kDevice, 1);
    Stream stream;
    PagedCase c(layout_of(64, 64, 1), {500, 20}, 12101);
    Rng rng(12102);
    fill_spec6(c, rng);
    const DevicePaged d(c);
    const dsa_topk_params_t params = c.params(64, 0);
    DeviceArray<uint8_t> workspace = workspace_for(gpu.get(), params, d.inputs);
    DeviceOutput out(c.rows(), 64, true);
    auto call = [&](const dsa_paged_inputs_t& inputs, const dsa_topk_outputs_t& outputs) {
        const dsa_status_t status = launch(gpu.get(), params, inputs, outputs, workspace.get(), workspace.bytes(), stream.get());
        stream.sync();
        return status;
    };
    REQUIRE(call(d.inputs, out.outputs()) == DSA_STATUS_SUCCESS);
    const HostResult good = out.download();
    Buffer<uint8_t> host_q = c.q;  // aligned as the API requires: only where it lives is wrong
    Buffer<int32_t> host_indices(size_t(c.rows()) * 64, 0x5A5A5A5A);
    for (int round = 0; round < 2; ++round) {  // the second round after good calls with the same buffers
        INFO("round " << round);
        out.poison();
        dsa_paged_inputs_t inputs = d.inputs;
        inputs.q = host_q.data();
        CHECK(call(inputs, out.outputs()) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(std::string(dsa_last_error_message()).find("inputs->q") != std::string::npos);
        CHECK(out.download().all_poison());
        dsa_topk_outputs_t outputs = out.outputs();
        outputs.indices = host_indices.data();
        CHECK(call(d.inputs, outputs) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(std::string(dsa_last_error_message()).find("outputs->indices") != std::string::npos);
        CHECK(std::all_of(host_indices.begin(), host_indices.end(), [](int32_t x) { return x == 0x5A5A5A5A; }));
        CHECK(out.download().all_poison());
        REQUIRE(call(d.inputs, out.outputs()) == DSA_STATUS_SUCCESS);
        CHECK(out.download() == good);
        REQUIRE(call(d.inputs, out.outputs()) == DSA_STATUS_SUCCESS);
    }
    CHECK(dsa_context_synchronize(gpu.get()) == DSA_STATUS_SUCCESS);
}

// =====================================================================================================
// Owned cache on a GPU context

TEST_CASE("GPU owned cache: writes from host and device memory, dsa_topk equals the CPU context", "[gpu][cache]") {
    Context gpu(&kDevice, 1), cpu;
    PagedLayout layout = layout_of(64, 64, 2);
    PagedCase c(layout, {3000, 100, 0, 2100}, 13001);
    Rng rng(13002);
    fill_tie_free(c, rng);
    const int P = layout.page_size;
    const int64_t slots_count = c.num_pages * P;
    std::vector<int64_t> slots(static_cast<size_t>(slots_count));
    std::vector<uint8_t> keys(slots.size() * kHeadDim);
    std::vector<float> scales(slots.size());
    for (int64_t s = 0; s < slots_count; ++s) {
        slots[size_t(s)] = s;
        const uint8_t* page = c.k_cache.data() + (s / P) * c.page_stride;
        std::memcpy(&keys[size_t(s) * kHeadDim], page + (s % P) * kHeadDim, kHeadDim);
        std::memcpy(&scales[size_t(s)], page + int64_t(P) * kHeadDim + (s % P) * 4, 4);
    }
    dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
    config.num_pages = c.num_pages;
    config.page_size = P;
    dsa_cache_t gpu_cache = nullptr, cpu_cache = nullptr;
    REQUIRE(dsa_cache_create(gpu.get(), &config, &gpu_cache) == DSA_STATUS_SUCCESS);
    REQUIRE(dsa_cache_create(cpu.get(), &config, &cpu_cache) == DSA_STATUS_SUCCESS);

    // First half from host memory, second half from device memory.
    const int64_t half = slots_count / 2;
    CHECK(dsa_cache_write(gpu_cache, slots.data(), keys.data(), scales.data(), half, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
    DeviceArray<int64_t> d_slots(slots);
    DeviceArray<uint8_t> d_keys(keys);
    DeviceArray<float> d_scales(scales);
    CHECK(dsa_cache_write(gpu_cache, d_slots.get() + half, d_keys.get() + half * kHeadDim, d_scales.get() + half,
                          slots_count - half, kDevice) == DSA_STATUS_SUCCESS);
    CHECK(dsa_cache_write(cpu_cache, slots.data(), keys.data(), scales.data(), slots_count, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
    CHECK(dsa_cache_write(gpu_cache, slots.data(), keys.data(), scales.data(), 1, 1234) == DSA_STATUS_INVALID_ARGUMENT);

    std::vector<uint8_t> read_keys(keys.size());
    std::vector<float> read_scales(scales.size());
    REQUIRE(dsa_cache_read(gpu_cache, slots.data(), read_keys.data(), read_scales.data(), slots_count, DSA_MEMORY_HOST) ==
            DSA_STATUS_SUCCESS);
    CHECK(bool(read_keys == keys));
    CHECK(std::memcmp(read_scales.data(), scales.data(), scales.size() * 4) == 0);
    // A bad slot changes nothing, on the device too.
    const int64_t bad_slots[2] = {0, slots_count};
    CHECK(dsa_cache_write(gpu_cache, bad_slots, keys.data(), scales.data(), 2, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
    REQUIRE(dsa_cache_read(gpu_cache, slots.data(), read_keys.data(), read_scales.data(), slots_count, DSA_MEMORY_HOST) ==
            DSA_STATUS_SUCCESS);
    CHECK(bool(read_keys == keys));

    dsa_paged_inputs_t inputs = c.inputs();
    inputs.k_cache = nullptr;
    inputs.num_pages = 0;
    inputs.page_stride_bytes = 0;
    for_each_variant({1, 512, 2048}, {0u, kSorted | kLogical}, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", flags " << flags);
        const dsa_topk_params_t params = c.params(k, flags);
        TopkOutput on_gpu(c.rows(), k, with_scores), on_cpu(c.rows(), k, with_scores);
        const dsa_topk_outputs_t gpu_out = on_gpu.outputs(), cpu_out = on_cpu.outputs();
        const dsa_status_t status = dsa_topk(gpu.get(), gpu_cache, &params, &inputs, &gpu_out);
        INFO(describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
        REQUIRE(dsa_topk(cpu.get(), cpu_cache, &params, &inputs, &cpu_out) == DSA_STATUS_SUCCESS);
        CHECK(on_gpu.same_bits(on_cpu));
        CHECK(on_gpu.guards_intact());
    });
    CHECK(dsa_cache_destroy(gpu_cache) == DSA_STATUS_SUCCESS);
    CHECK(dsa_cache_destroy(cpu_cache) == DSA_STATUS_SUCCESS);
}

TEST_CASE("GPU contexts: device count, set_devices, no device", "[gpu][context]") {
    Context gpu(&kDevice, 1);
    int32_t devices = -1;
    CHECK(dsa_context_num_devices(gpu.get(), &devices) == DSA_STATUS_SUCCESS);
    CHECK(devices == 1);
    const int32_t missing = 9999;
    CHECK(dsa_context_set_devices(gpu.get(), &missing, 1) == DSA_STATUS_NO_DEVICE);
    CHECK(dsa_context_num_devices(gpu.get(), &devices) == DSA_STATUS_SUCCESS);
    CHECK(devices == 1);  // unchanged by the failure
    CHECK(dsa_context_set_devices(gpu.get(), nullptr, 0) == DSA_STATUS_SUCCESS);
    CHECK(dsa_context_num_devices(gpu.get(), &devices) == DSA_STATUS_SUCCESS);
    CHECK(devices == 0);
    CHECK(dsa_context_set_devices(gpu.get(), &kDevice, 1) == DSA_STATUS_SUCCESS);
    CHECK(dsa_context_num_devices(gpu.get(), &devices) == DSA_STATUS_SUCCESS);
    CHECK(devices == 1);
}

#endif  // DSA_TEST_HAVE_CUDA
