// GPU timing (METHOD.md): each call is captured in a CUDA graph per rotated copy of its inputs (paged: the K
// cache; ragged: every input); copies rotate so that inputs smaller than the L2 do not stay cached between
// calls. Two times: the latency, the median of CUDA-event-timed single replays of one call each, which start on
// an idle GPU and so also hold the graph launch's submission (~2.5 us; bench/NOTES.md, session 35); and the
// back-to-back time, per call of replays of kBackToBackCalls calls each, which leaves it out, as a call inside an
// engine's step graph does. Beside them, the host time of an eager call (until it returns, its work enqueued):
// what a caller's CPU pays per call. CPU timing: the median wall clock of synchronous calls. Checks: SPEC
// section 5 against the float64 oracle of tests/test_util, on every row of a paged call and on a sample of the
// rows of a ragged one.
#include "workloads.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "dsa_indexer.h"
#include "input_cache.hpp"

namespace dsa_bench {

using dsa_test::PagedCase;
using dsa_test::PagedLayout;
using dsa_test::RaggedCase;

namespace {

std::vector<int32_t> repeat(int batch, int32_t len) { return std::vector<int32_t>(size_t(batch), len); }

// FlashInfer-Bench-like decode batches: a few sequences of up to ~5800 tokens.
std::vector<int32_t> fib_batch(int batch, uint64_t seed) {
    dsa_test::Rng rng(seed);
    std::vector<int32_t> lens;
    for (int i = 0; i < batch; ++i) lens.push_back(int32_t(rng.uniform(1, 5800)));
    return lens;
}

// Lengths from 1 to 131072 in one batch (geometric), the skew a persistent schedule must absorb.
std::vector<int32_t> skewed_batch() {
    std::vector<int32_t> lens;
    for (int32_t len = 1; len <= 131072; len *= 2) lens.push_back(len);
    return lens;
}

}  // namespace

std::vector<Workload> gpu_workloads() {
    std::vector<Workload> w = {
        {"32x6400", repeat(32, 6400)},          {"1x131072", repeat(1, 131072)},
        {"8x8192", repeat(8, 8192)},            {"64x8192", repeat(64, 8192)},
        {"32x32768", repeat(32, 32768)},        {"256x8192", repeat(256, 8192)},
        {"16x131072", repeat(16, 131072)},      {"128x32768", repeat(128, 32768)},
        {"128x4096", repeat(128, 4096)},
        {"skewed_1..131072", skewed_batch()},   {"32x8192_next_n2", repeat(32, 8192), 2},
        {"64x8192_k512", repeat(64, 8192), 1, 64, 64, 512},
        {"64x8192_h32", repeat(64, 8192), 1, 32},
        {"fib_4", fib_batch(4, 11)},            {"fib_16", fib_batch(16, 12)},
        {"fib_31", fib_batch(31, 13)},          {"fib_22", fib_batch(22, 14)},
        {"fib_29", fib_batch(29, 15)},
        // An engine's block table: sized for the model's longest context (160K tokens), not for the batch.
        {"256x2000_table2560", repeat(256, 2000), 1, 64, 64, 2048, 2560},
    };
    return w;
}

std::vector<Workload> cpu_workloads(bool quick) {
    if (quick) return {{"4x2048", repeat(4, 2048)}, {"2x1024_next_n2", repeat(2, 1024), 2}, {"fib_4", fib_batch(4, 11)}};
    return {
        {"1x1024", repeat(1, 1024)},           {"8x1024", repeat(8, 1024)},   {"1x4096", repeat(1, 4096)},
        {"8x4096", repeat(8, 4096)},           {"32x8192", repeat(32, 8192)}, {"1x32768", repeat(1, 32768)},
        {"8x4096_next_n2", repeat(8, 4096), 2}, {"fib_4", fib_batch(4, 11)},  {"fib_16", fib_batch(16, 12)},
    };
}

namespace {

// "_kK" and "_hH" for a top-k and a head count other than the defaults: the names of workloads run with them.
std::string topk_heads_suffix(int topk, int heads) {
    std::string suffix;
    if (topk != kDefaultTopk) suffix += "_k" + std::to_string(topk);
    if (heads != kDefaultHeads) suffix += "_h" + std::to_string(heads);
    return suffix;
}

// One causal sequence: S query rows over S keys, row r seeing keys [0, r + 1).
RaggedWorkload causal_prefill(int32_t tokens, const RaggedWorkload& parameters) {
    RaggedWorkload w = parameters;
    w.name = "prefill_" + std::to_string(tokens) + topk_heads_suffix(w.topk, w.heads);
    w.key_lens = {tokens};
    w.query_lens = {tokens};
    return w;
}

// Chunked prefill: prompts of 1, 3, 6 and 12 x `unit` keys in one call, whose last 100%, 75%, 50% and 25%
// are this chunk's query rows (a new short prompt next to later chunks of longer ones), so that windows
// range from 1 key to 12 x unit and rows of each sequence sit below and above k.
RaggedWorkload chunked_mix(const std::string& name, int32_t unit, const RaggedWorkload& parameters) {
    RaggedWorkload w = parameters;
    w.name = name + topk_heads_suffix(w.topk, w.heads);
    w.key_lens = {1 * unit, 3 * unit, 6 * unit, 12 * unit};
    w.query_lens = {1 * unit, 3 * unit * 3 / 4, 6 * unit / 2, 12 * unit / 4};
    return w;
}

}  // namespace

std::vector<RaggedWorkload> ragged_gpu_workloads(const RaggedWorkload& parameters) {
    std::vector<RaggedWorkload> w;
    for (int32_t tokens : {4096, 8192, 16384, 32768}) w.push_back(causal_prefill(tokens, parameters));
    RaggedWorkload front = causal_prefill(16384, parameters);
    front.name = "prefill_16384_front" + topk_heads_suffix(front.topk, front.heads);
    front.front_keys = 8192;
    w.push_back(front);
    w.push_back(chunked_mix("prefill_chunked_mix", 1000, parameters));
    return w;
}

// The CPU backend scores about 33 GFLOP/s on 2 cores: S = 1024 is 8.6 GFLOP (0.26 s, the quick run), S = 4096
// 137 GFLOP (4.3 s); the quarter-size mix 51 GFLOP.
std::vector<RaggedWorkload> ragged_cpu_workloads(bool quick, const RaggedWorkload& parameters) {
    if (quick) return {causal_prefill(1024, parameters)};
    return {causal_prefill(1024, parameters), causal_prefill(2048, parameters), causal_prefill(4096, parameters),
            chunked_mix("prefill_chunked_mix_small", 250, parameters)};
}

namespace {

template <class T>
CachedBytes cached_bytes(dsa_test::Buffer<T>& buffer) {
    return {buffer.data(), buffer.size() * sizeof(T)};
}

std::string joined(const std::vector<int32_t>& values) {
    std::string text;
    for (int32_t v : values) text += (text.empty() ? "" : ",") + std::to_string(v);
    return text;
}

}  // namespace

// The buffers fill_spec6 draws are cached; the rest of a case (block table, paddings) is its constructor's, cheap.
PagedCase paged_case_of(const Workload& w, const std::string& input_cache, bool* cached) {
    dsa_test::PagedLayout layout;
    layout.heads = w.heads;
    layout.page_size = w.page_size;
    layout.next_n = w.next_n;
    if (w.table_width > 0) {
        const int32_t longest = *std::max_element(w.seq_lens.begin(), w.seq_lens.end());
        layout.unused_columns = std::max(1, w.table_width - (longest + w.page_size - 1) / w.page_size);
    }
    PagedCase c(layout, w.seq_lens, 1234 + uint64_t(w.seed));
    const std::string description = "paged spec6 heads " + std::to_string(w.heads) + " page_size " +
                                    std::to_string(w.page_size) + " next_n " + std::to_string(w.next_n) +
                                    " table_width " + std::to_string(w.table_width) + " seed " +
                                    std::to_string(w.seed) + " seq_lens " + joined(w.seq_lens);
    const auto generate = [&] {
        dsa_test::Rng rng(99 + uint64_t(w.seed));
        dsa_test::fill_spec6(c, rng);
    };
    const std::vector<CachedBytes> parts = {cached_bytes(c.k_cache), cached_bytes(c.q), cached_bytes(c.weights)};
    const bool read = fill_from_cache(input_cache, description, parts, generate);
    if (cached) *cached = read;
    return c;
}

RaggedCase ragged_case_of(const RaggedWorkload& w, const std::string& input_cache, bool* cached) {
    int64_t keys = 0;
    for (int32_t len : w.key_lens) keys += len;
    RaggedCase c(w.heads, keys, dsa_test::causal_windows(w.key_lens, w.query_lens));
    const std::string description = "ragged spec6 heads " + std::to_string(w.heads) + " seed " +
                                    std::to_string(w.seed) + " key_lens " + joined(w.key_lens) + " query_lens " +
                                    joined(w.query_lens);
    const auto generate = [&] {
        dsa_test::Rng rng(99 + uint64_t(w.seed));
        dsa_test::fill_spec6(c, rng);
    };
    const std::vector<CachedBytes> parts = {cached_bytes(c.q), cached_bytes(c.k), cached_bytes(c.k_scale),
                                            cached_bytes(c.weights)};
    const bool read = fill_from_cache(input_cache, description, parts, generate);
    if (cached) *cached = read;
    for (int32_t i = 0; i < w.front_keys && i < keys; ++i) c.k_scale[size_t(i)] *= 4.0f;
    return c;
}

namespace {

// A whole number in [1, limit] from all of `text`, else 0.
int64_t positive(const std::string& text, int64_t limit) {
    if (text.empty() || text.size() > 12 || text.find_first_not_of("0123456789") != std::string::npos) return 0;
    const int64_t value = std::atoll(text.c_str());
    return value <= limit ? value : 0;
}

}  // namespace

bool parse_shapes(const std::string& text, const Workload& parameters, std::vector<Workload>* out, std::string* error) {
    const Workload defaults;
    std::string suffix;
    if (parameters.next_n != defaults.next_n) suffix += "_next_n" + std::to_string(parameters.next_n);
    suffix += topk_heads_suffix(parameters.topk, parameters.heads);
    if (parameters.page_size != defaults.page_size) suffix += "_p" + std::to_string(parameters.page_size);
    return for_each_item(text, [&](const std::string& item) {
        const size_t x = item.find('x');
        const int64_t batch = x == std::string::npos ? 0 : positive(item.substr(0, x), 1 << 20);
        const int64_t length = x == std::string::npos ? 0 : positive(item.substr(x + 1), int64_t(1) << 30);
        if (batch == 0 || length == 0) {
            *error = "\"" + item + "\" is not BxL (B sequences of L tokens, both whole numbers >= 1)";
            return false;
        }
        Workload w = parameters;
        w.name = std::to_string(batch) + "x" + std::to_string(length) + suffix;
        w.seq_lens = repeat(int(batch), int32_t(length));
        out->push_back(w);
        return true;
    });
}

bool parse_ragged_shapes(const std::string& text, const RaggedWorkload& parameters, std::vector<RaggedWorkload>* out,
                         std::string* error) {
    return for_each_item(text, [&](const std::string& item) {
        const int64_t tokens = positive(item, int64_t(1) << 30);
        if (tokens == 0) {
            *error = "\"" + item + "\" is not S (query rows = keys of one causal sequence, a whole number >= 1)";
            return false;
        }
        out->push_back(causal_prefill(int32_t(tokens), parameters));
        return true;
    });
}

double k_bytes_of(int64_t tokens) { return double(tokens) * kTokenBytes; }

double ragged_flops(const RaggedCase& c) {
    double window_keys = 0;
    for (int64_t r = 0; r < c.rows(); ++r) window_keys += double(c.visible(r));
    return 2.0 * c.heads() * dsa_test::kHeadDim * window_keys;
}

namespace {

// A call's outputs in host memory, poisoned first so that a slot no call wrote fails the check; scores only
// when the call asks for them.
struct HostOutputs {
    HostOutputs(int64_t rows, int topk, bool with_scores)
        : indices(size_t(rows) * size_t(topk)), scores(with_scores ? indices.size() : 0) {
        std::memset(indices.data(), dsa_test::kPoisonByte, indices.size() * 4);
        std::memset(scores.data(), dsa_test::kPoisonByte, scores.size() * 4);
    }
    dsa_topk_outputs_t outputs() {
        dsa_topk_outputs_t out = DSA_TOPK_OUTPUTS_INIT;
        out.indices = indices.data();
        out.scores = scores_or_null();
        return out;
    }
    float* scores_or_null() { return scores.empty() ? nullptr : scores.data(); }
    const float* scores_or_null() const { return scores.empty() ? nullptr : scores.data(); }
    std::vector<int32_t> indices;
    std::vector<float> scores;
};

// The median wall clock of `iterations` synchronous calls in microseconds, after one untimed warm-up call.
double median_wall_us(int iterations, const std::function<void()>& call) {
    std::vector<double> times;
    for (int i = 0; i < iterations + 1; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        call();
        const auto t1 = std::chrono::steady_clock::now();
        if (i > 0) times.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    return median(times);
}

std::string verify(const PagedCase& c, int topk, uint32_t flags, const HostOutputs& out) {
    const dsa_test::Oracle oracle = dsa_test::compute_oracle(c);
    return dsa_test::check_spec5(c, oracle, topk, flags, out.indices.data(), out.scores_or_null());
}

// Some rows of a case as a case of its own, so that the float64 oracle and the SPEC 5 checker of
// tests/test_util run on a sample of a prefill's rows: the oracle of every row of a 32768 x 32768 call
// (some 10^13 float64 operations) would take hours on the host.
class SampledRows final : public dsa_test::TopkCase {
public:
    SampledRows(const TopkCase& whole, std::vector<int64_t> rows) : whole_(whole), rows_(std::move(rows)) {}
    int64_t row_in_call(int64_t row) const { return rows_[size_t(row)]; }

    int heads() const override { return whole_.heads(); }
    int64_t rows() const override { return int64_t(rows_.size()); }
    const uint8_t* query(int64_t row) const override { return whole_.query(row_in_call(row)); }
    const float* row_weights(int64_t row) const override { return whole_.row_weights(row_in_call(row)); }
    int64_t visible(int64_t row) const override { return whole_.visible(row_in_call(row)); }
    const uint8_t* key(int64_t row, int64_t pos) const override { return whole_.key(row_in_call(row), pos); }
    float key_scale(int64_t row, int64_t pos) const override { return whole_.key_scale(row_in_call(row), pos); }
    int32_t index_of(int64_t row, int64_t pos, uint32_t flags) const override {
        return whole_.index_of(row_in_call(row), pos, flags);
    }
    int64_t position_of(int64_t row, int32_t index, uint32_t flags) const override {
        return whole_.position_of(row_in_call(row), index, flags);
    }

private:
    const TopkCase& whole_;
    std::vector<int64_t> rows_;
};

// The rows a ragged check covers: kSampledRows spread evenly over the call (its first and last among them),
// the first and last row of every sequence, and the first rows whose windows hold k - 1, k and k + 1 keys
// (where padding stops and selection starts). Deterministic, so a failure reproduces.
std::vector<int64_t> sampled_rows(const RaggedCase& c, int topk) {
    const int64_t S = c.rows();
    std::vector<int64_t> rows;
    for (int64_t i = 0; S > 0 && i < kSampledRows; ++i) rows.push_back(i * (S - 1) / (kSampledRows - 1));
    std::vector<int64_t> windows_near_k = {int64_t(topk) - 1, topk, int64_t(topk) + 1};
    for (int64_t r = 0; r < S; ++r) {
        const size_t i = size_t(r);
        const bool first_of_sequence = r == 0 || c.row_start[i] != c.row_start[i - 1];
        const bool last_of_sequence = r + 1 == S || c.row_start[i + 1] != c.row_start[i];
        const auto near_k = std::find(windows_near_k.begin(), windows_near_k.end(), c.visible(r));
        const bool first_near_k = near_k != windows_near_k.end();
        if (first_near_k) windows_near_k.erase(near_k);
        if (first_of_sequence || last_of_sequence || first_near_k) rows.push_back(r);
    }
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    return rows;
}

// The checkers name a row by its number in the case they see ("row 12 slot 3: ..."): in a sample, that is
// not the call's row, which this puts in its place.
std::string with_call_row(const std::string& failure, const SampledRows& sample) {
    long long row = -1;
    int consumed = 0;
    if (std::sscanf(failure.c_str(), "row %lld%n", &row, &consumed) != 1 || row < 0 || row >= sample.rows())
        return failure;
    return "row " + std::to_string(sample.row_in_call(row)) + failure.substr(size_t(consumed));
}

// SPEC section 5 on the sampled rows of a ragged call; *checked_rows: how many.
std::string verify_sample(const RaggedCase& c, int topk, uint32_t flags, const HostOutputs& out,
                          int64_t* checked_rows) {
    const SampledRows sample(c, sampled_rows(c, topk));
    std::vector<int32_t> indices;
    std::vector<float> scores;
    for (int64_t i = 0; i < sample.rows(); ++i) {
        const size_t first = size_t(sample.row_in_call(i)) * size_t(topk);
        indices.insert(indices.end(), out.indices.begin() + first, out.indices.begin() + first + topk);
        if (!out.scores.empty())
            scores.insert(scores.end(), out.scores.begin() + first, out.scores.begin() + first + topk);
    }
    *checked_rows = sample.rows();
    const dsa_test::Oracle oracle = dsa_test::compute_oracle(sample);
    const float* sampled_scores = scores.empty() ? nullptr : scores.data();
    return with_call_row(dsa_test::check_spec5(sample, oracle, topk, flags, indices.data(), sampled_scores), sample);
}

}  // namespace

Result run_cpu(const Workload& w, const PagedCase& c, int iterations, const Returned& returned) {
    dsa_test::Context ctx;
    const dsa_topk_params_t params = c.params(w.topk, returned.flags());
    const dsa_paged_inputs_t inputs = c.inputs();
    HostOutputs out(c.rows(), w.topk, returned.scores);
    const dsa_topk_outputs_t outputs = out.outputs();
    Result r;
    r.backend = "cpu";
    r.latency_us = median_wall_us(iterations, [&] {
        require_ok(dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr), "dsa_topk_paged");
    });
    r.check = verify(c, w.topk, returned.flags(), out);
    return r;
}

Result run_ragged_cpu(const RaggedWorkload& w, const RaggedCase& c, int iterations, const Returned& returned) {
    dsa_test::Context ctx;
    const dsa_topk_params_t params = c.params(w.topk, returned.flags());
    const dsa_ragged_inputs_t inputs = c.inputs();
    HostOutputs out(c.rows(), w.topk, returned.scores);
    const dsa_topk_outputs_t outputs = out.outputs();
    Result r;
    r.backend = "cpu";
    // Asked on the CPU too (it is 0 there), so that both backends report the library's own number.
    require_ok(dsa_topk_ragged_workspace_size(ctx.get(), &params, &inputs, &r.workspace_bytes), "workspace size");
    r.latency_us = median_wall_us(iterations, [&] {
        require_ok(dsa_topk_ragged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr), "dsa_topk_ragged");
    });
    r.check = verify_sample(c, w.topk, returned.flags(), out, &r.checked_rows);
    return r;
}

#if DSA_BENCH_CUDA
double measure_copy_bandwidth(cudaStream_t stream) {
    const size_t bytes = size_t(1) << 30;
    DeviceMemory src(bytes), dst(bytes);
    cuda_ok(cudaMemset(src.ptr, 1, bytes), "cudaMemset");
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    std::vector<double> seconds;
    for (int i = 0; i < 8; ++i) {
        cudaEventRecord(start, stream);
        cudaMemcpyAsync(dst.ptr, src.ptr, bytes, cudaMemcpyDeviceToDevice, stream);
        cudaEventRecord(stop, stream);
        cuda_ok(cudaEventSynchronize(stop), "copy bandwidth");
        float ms = 0;
        cudaEventElapsedTime(&ms, start, stop);
        if (i > 0) seconds.push_back(ms * 1e-3);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return 2.0 * double(bytes) / median(seconds);
}

namespace {

// The stream the timed calls run on (non-blocking: no implicit ordering with the legacy default stream).
struct Stream {
    Stream() { cuda_ok(cudaStreamCreateWithFlags(&handle, cudaStreamNonBlocking), "cudaStreamCreate"); }
    ~Stream() { cudaStreamDestroy(handle); }
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    cudaStream_t handle = nullptr;
};

// How many copies of a call's inputs the replays rotate through: enough for 3x the L2, so that no replay
// finds its inputs cached by the one before; at most 16, and no more than half the free device memory holds
// (call it after allocating the workspace and outputs). One when one copy alone is past 3x the L2.
int rotation_copies(size_t input_bytes, size_t l2_bytes) {
    const size_t bytes = std::max<size_t>(input_bytes, 1);
    size_t free_bytes = 0, total_bytes = 0;
    cuda_ok(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    const size_t past_l2 = (3 * l2_bytes + bytes - 1) / bytes;
    return int(std::clamp<size_t>(std::min(past_l2, free_bytes / 2 / bytes), 1, 16));
}

// A call's outputs in device memory, poisoned like HostOutputs.
class DeviceOutputs {
public:
    DeviceOutputs(int64_t rows, int topk, bool with_scores)
        : rows_(rows), topk_(topk), with_scores_(with_scores), bytes_(size_t(rows) * size_t(topk) * 4),
          indices_(bytes_), scores_(with_scores ? bytes_ : 0) {
        cuda_ok(cudaMemset(indices_.ptr, dsa_test::kPoisonByte, bytes_), "cudaMemset");
        if (with_scores_) cuda_ok(cudaMemset(scores_.ptr, dsa_test::kPoisonByte, bytes_), "cudaMemset");
        cuda_ok(cudaDeviceSynchronize(), "poison outputs");  // before any work on a non-blocking stream
    }
    dsa_topk_outputs_t outputs() const {
        dsa_topk_outputs_t out = DSA_TOPK_OUTPUTS_INIT;
        out.indices = indices_.as<int32_t>();
        out.scores = with_scores_ ? scores_.as<float>() : nullptr;
        return out;
    }
    // Once the context reports no error found on the device: the outputs, copied to the host.
    HostOutputs download(dsa_context_t ctx) const {
        require_ok(dsa_context_synchronize(ctx), "dsa_context_synchronize");
        HostOutputs host(rows_, topk_, with_scores_);
        cuda_ok(cudaMemcpy(host.indices.data(), indices_.ptr, bytes_, cudaMemcpyDeviceToHost), "download");
        if (with_scores_)
            cuda_ok(cudaMemcpy(host.scores.data(), scores_.ptr, bytes_, cudaMemcpyDeviceToHost), "download");
        return host;
    }

private:
    int64_t rows_;
    int topk_;
    bool with_scores_;
    size_t bytes_;  // of each output
    DeviceMemory indices_, scores_;
};

// One CUDA graph per copy of a call's inputs, each capturing calls_per_graph calls: call(i) enqueues one on
// the stream, reading copy i; graph g's calls read copies g * calls_per_graph + j (mod copies), so that
// replaying the graphs in turn keeps the rotation going.
class CapturedCalls {
public:
    CapturedCalls(cudaStream_t stream, int copies, const std::function<dsa_status_t(int)>& call, const char* what,
                  int calls_per_graph = 1)
        : stream_(stream), calls_per_graph_(calls_per_graph) {
        for (int i = 0; i < copies; ++i) {
            cudaGraph_t graph;
            cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
            dsa_status_t status = DSA_STATUS_SUCCESS;
            for (int j = 0; j < calls_per_graph && status == DSA_STATUS_SUCCESS; ++j)
                status = call((i * calls_per_graph + j) % copies);
            cuda_ok(cudaStreamEndCapture(stream, &graph), "end capture");
            if (status != DSA_STATUS_SUCCESS) cudaGraphDestroy(graph);
            require_ok(status, what);
            cudaGraphExec_t exec;
            cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "graph instantiate");
            cudaGraphDestroy(graph);
            graphs_.push_back(exec);
        }
    }
    ~CapturedCalls() {
        for (cudaGraphExec_t g : graphs_) cudaGraphExecDestroy(g);
    }
    CapturedCalls(const CapturedCalls&) = delete;
    CapturedCalls& operator=(const CapturedCalls&) = delete;

    // The median of `iterations` CUDA-event-timed single replays in microseconds per call, after untimed
    // warm-up replays; replay i is graph i mod copies.
    double median_replay_us(int iterations) const {
        const int warmup = 5;
        cudaEvent_t start, stop;
        cuda_ok(cudaEventCreate(&start), "cudaEventCreate");
        cuda_ok(cudaEventCreate(&stop), "cudaEventCreate");
        std::vector<double> times;
        for (int i = 0; i < iterations + warmup; ++i) {
            cudaEventRecord(start, stream_);
            cuda_ok(cudaGraphLaunch(graphs_[size_t(i) % graphs_.size()], stream_), "graph launch");
            cudaEventRecord(stop, stream_);
            cuda_ok(cudaEventSynchronize(stop), "replay");
            float ms = 0;
            cudaEventElapsedTime(&ms, start, stop);
            if (i >= warmup) times.push_back(ms * 1e3 / calls_per_graph_);
        }
        cudaEventDestroy(start);
        cudaEventDestroy(stop);
        return median(times);
    }

private:
    cudaStream_t stream_;
    int calls_per_graph_;
    std::vector<cudaGraphExec_t> graphs_;
};

// The median host time in microseconds of `iterations` eager calls (after untimed warm-up calls): from the
// call until it returns, its work enqueued on `stream` (what an engine that does not use CUDA graphs pays on
// its CPU per step). Each call is waited for before the next, so a full queue never slows one down; call i
// reads copy i mod copies.
double median_eager_call_us(cudaStream_t stream, int iterations, int copies, const std::function<dsa_status_t(int)>& call,
                            const char* what) {
    const int warmup = 5;
    std::vector<double> times;
    for (int i = 0; i < iterations + warmup; ++i) {
        const auto start = std::chrono::steady_clock::now();
        const dsa_status_t status = call(i % copies);
        const auto end = std::chrono::steady_clock::now();
        require_ok(status, what);
        cuda_ok(cudaStreamSynchronize(stream), "eager call");
        if (i >= warmup) times.push_back(std::chrono::duration<double, std::micro>(end - start).count());
    }
    return median(times);
}

// A GPU result's times of `call` (entry: the API function's name, for errors) over `copies` rotated input copies:
// the latency, the back-to-back time (replays of kBackToBackCalls calls, half as many replays, at least 5) and
// the eager host time.
Result timed_gpu_result(cudaStream_t stream, int copies, const std::function<dsa_status_t(int)>& call,
                        const std::string& entry, int iterations, size_t workspace_bytes) {
    const std::string captured = entry + " (captured)", eager = entry + " (eager)";
    const CapturedCalls single(stream, copies, call, captured.c_str());
    const CapturedCalls back_to_back(stream, copies, call, captured.c_str(), kBackToBackCalls);
    Result r;
    r.backend = "gpu";
    r.workspace_bytes = workspace_bytes;
    r.latency_us = single.median_replay_us(iterations);
    r.back_to_back_us = back_to_back.median_replay_us(std::max(5, iterations / 2));
    r.host_call_us = median_eager_call_us(stream, iterations, copies, call, eager.c_str());
    return r;
}

// One copy of a ragged call's inputs in device memory.
struct DeviceRaggedInputs {
    explicit DeviceRaggedInputs(const RaggedCase& c)
        : q(upload(c.q)), k(upload(c.k)), k_scale(upload(c.k_scale)), weights(upload(c.weights)),
          row_start(upload(c.row_start)), row_end(upload(c.row_end)) {}
    static size_t bytes_of(const RaggedCase& c) {
        return c.q.size() + c.k.size() + 4 * (c.k_scale.size() + c.weights.size() + 2 * c.row_start.size());
    }
    dsa_ragged_inputs_t inputs(const RaggedCase& c) const {
        dsa_ragged_inputs_t in = c.inputs();
        in.q = q->ptr;
        in.k = k->ptr;
        in.k_scale = k_scale->as<float>();
        in.weights = weights->as<float>();
        in.row_start = row_start->as<int32_t>();
        in.row_end = row_end->as<int32_t>();
        return in;
    }
    std::unique_ptr<DeviceMemory> q, k, k_scale, weights, row_start, row_end;
};

}  // namespace

Result run_gpu(const Workload& w, const PagedCase& c, int iterations, size_t l2_bytes, const Returned& returned) {
    const int32_t device = 0;
    dsa_test::Context ctx(&device, 1);
    Stream stream;
    auto q = upload(c.q), weights = upload(c.weights), seq_lens = upload(c.seq_lens), table = upload(c.block_table);
    const dsa_topk_params_t params = c.params(w.topk, returned.flags());
    dsa_paged_inputs_t inputs = c.inputs();
    inputs.q = q->ptr;
    inputs.weights = weights->as<float>();
    inputs.seq_lens = seq_lens->as<int32_t>();
    inputs.block_table = table->as<int32_t>();
    size_t workspace_bytes = 0;
    require_ok(dsa_topk_paged_workspace_size(ctx.get(), &params, &inputs, &workspace_bytes), "workspace size");
    DeviceMemory workspace(workspace_bytes);
    const DeviceOutputs out(c.rows(), w.topk, returned.scores);
    const dsa_topk_outputs_t outputs = out.outputs();

    // The K cache is what a decode call reads: it rotates; q, weights and the table are small.
    std::vector<std::unique_ptr<DeviceMemory>> caches;
    for (int i = rotation_copies(c.k_cache.size(), l2_bytes); i > 0; --i) caches.push_back(upload(c.k_cache));
    const std::function<dsa_status_t(int)> call = [&](int i) {
        inputs.k_cache = caches[size_t(i)]->ptr;
        return dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, workspace.ptr, workspace_bytes, stream.handle);
    };
    Result r = timed_gpu_result(stream.handle, int(caches.size()), call, "dsa_topk_paged", iterations, workspace_bytes);
    r.check = verify(c, w.topk, returned.flags(), out.download(ctx.get()));
    return r;
}

Result run_ragged_gpu(const RaggedWorkload& w, const RaggedCase& c, int iterations, size_t l2_bytes,
                      const Returned& returned) {
    const int32_t device = 0;
    dsa_test::Context ctx(&device, 1);
    Stream stream;
    const dsa_topk_params_t params = c.params(w.topk, returned.flags());
    const dsa_ragged_inputs_t sizes = c.inputs();  // the size query reads num_rows and num_keys only
    size_t workspace_bytes = 0;
    require_ok(dsa_topk_ragged_workspace_size(ctx.get(), &params, &sizes, &workspace_bytes), "workspace size");
    DeviceMemory workspace(workspace_bytes);
    const DeviceOutputs out(c.rows(), w.topk, returned.scores);
    const dsa_topk_outputs_t outputs = out.outputs();

    // Every input rotates; q ([S, H, 128] fp8) is most of the bytes. On an H200 (50 MB of L2) that is 5 copies
    // at S = 4096, 2 at S = 16384 and 1 at S = 32768 (q alone is 256 MB there). Few copies are fine for big S:
    // the call is compute-bound (~S * N / 2 * H * 256 FLOPs against S * H * 132 bytes of q and weights), and K
    // (4 MB at S = 32768) is small and re-read from the L2 by every row anyway, which no rotation changes.
    std::vector<std::unique_ptr<DeviceRaggedInputs>> copies;
    for (int i = rotation_copies(DeviceRaggedInputs::bytes_of(c), l2_bytes); i > 0; --i)
        copies.push_back(std::make_unique<DeviceRaggedInputs>(c));
    const std::function<dsa_status_t(int)> call = [&](int i) {
        const dsa_ragged_inputs_t inputs = copies[size_t(i)]->inputs(c);
        return dsa_topk_ragged(ctx.get(), &params, &inputs, &outputs, workspace.ptr, workspace_bytes, stream.handle);
    };
    Result r =
        timed_gpu_result(stream.handle, int(copies.size()), call, "dsa_topk_ragged", iterations, workspace_bytes);
    r.check = verify_sample(c, w.topk, returned.flags(), out.download(ctx.get()), &r.checked_rows);
    return r;
}
#endif

}  // namespace dsa_bench
