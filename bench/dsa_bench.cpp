// dsa_bench: named workloads of the paged decode top-k on the CPU or one GPU; prints latency, K bandwidth,
// the bandwidth floor measured in the same run, and PASS/FAIL by SPEC section 5. With --devices, the
// multi-GPU owned-cache path instead (see "--devices" below).
//
// GPU timing (METHOD.md): each call is captured once in a CUDA graph per rotated copy of the K cache; the
// latency is the median of CUDA-event-timed single replays. Copies rotate so that inputs smaller than the L2
// do not stay cached between calls.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#if DSA_BENCH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "dsa_indexer.h"
#include "test_util.hpp"

namespace {

using dsa_test::PagedCase;
using dsa_test::PagedLayout;

struct Workload {
    std::string name;
    std::vector<int32_t> seq_lens;
    int next_n = 1;
    int heads = 64;
    int page_size = 64;
    int topk = 2048;
};

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

std::vector<Workload> gpu_workloads() {
    std::vector<Workload> w = {
        {"32x6400", repeat(32, 6400)},          {"1x131072", repeat(1, 131072)},
        {"8x8192", repeat(8, 8192)},            {"64x8192", repeat(64, 8192)},
        {"32x32768", repeat(32, 32768)},        {"256x8192", repeat(256, 8192)},
        {"16x131072", repeat(16, 131072)},      {"128x32768", repeat(128, 32768)},
        {"skewed_1..131072", skewed_batch()},   {"32x8192_next_n2", repeat(32, 8192), 2},
        {"64x8192_k512", repeat(64, 8192), 1, 64, 64, 512},
        {"64x8192_h32", repeat(64, 8192), 1, 32},
        {"fib_4", fib_batch(4, 11)},            {"fib_16", fib_batch(16, 12)},
        {"fib_31", fib_batch(31, 13)},
    };
    return w;
}

// Sizes that finish in seconds on a 2-core machine.
std::vector<Workload> cpu_workloads(bool quick) {
    if (quick) return {{"4x2048", repeat(4, 2048)}, {"2x1024_next_n2", repeat(2, 1024), 2}, {"fib_4", fib_batch(4, 11)}};
    return {
        {"1x1024", repeat(1, 1024)},           {"8x1024", repeat(8, 1024)},   {"1x4096", repeat(1, 4096)},
        {"8x4096", repeat(8, 4096)},           {"32x8192", repeat(32, 8192)}, {"1x32768", repeat(1, 32768)},
        {"8x4096_next_n2", repeat(8, 4096), 2}, {"fib_4", fib_batch(4, 11)},  {"fib_16", fib_batch(16, 12)},
    };
}

struct Result {
    std::string name;
    std::string backend;
    int64_t rows = 0;
    int64_t tokens = 0;
    double k_bytes = 0;
    double latency_us = 0;
    double floor_us = 0;  // GPU only
    std::string check;    // "" = PASS
};

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

void require_ok(dsa_status_t status, const char* what) {
    if (status != DSA_STATUS_SUCCESS)
        throw std::runtime_error(std::string(what) + ": " + dsa_status_string(status) + ": " + dsa_last_error_message());
}

std::string verify(const PagedCase& c, int topk, const std::vector<int32_t>& indices, const std::vector<float>& scores) {
    const dsa_test::Oracle oracle = dsa_test::compute_oracle(c);
    return dsa_test::check_spec5(c, oracle, topk, 0, indices.data(), scores.data());
}

Result run_cpu(const Workload& w, const PagedCase& c, int iterations) {
    dsa_test::Context ctx;
    const dsa_topk_params_t params = c.params(w.topk, 0);
    const dsa_paged_inputs_t inputs = c.inputs();
    std::vector<int32_t> indices(size_t(c.rows() * w.topk));
    std::vector<float> scores(indices.size());
    dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
    outputs.indices = indices.data();
    outputs.scores = scores.data();
    std::vector<double> times;
    for (int i = 0; i < iterations + 1; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        require_ok(dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr), "dsa_topk_paged");
        const auto t1 = std::chrono::steady_clock::now();
        if (i > 0) times.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());  // first = warm-up
    }
    Result r;
    r.backend = "cpu";
    r.latency_us = median(times);
    r.check = verify(c, w.topk, indices, scores);
    return r;
}

#if DSA_BENCH_CUDA
void cuda_ok(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

struct DeviceMemory {
    void* ptr = nullptr;
    explicit DeviceMemory(size_t bytes) { cuda_ok(cudaMalloc(&ptr, std::max<size_t>(bytes, 16)), "cudaMalloc"); }
    ~DeviceMemory() { cudaFree(ptr); }
    DeviceMemory(const DeviceMemory&) = delete;
    DeviceMemory& operator=(const DeviceMemory&) = delete;
    template <class T>
    T* as() const { return static_cast<T*>(ptr); }
};

template <class T, class A>
std::unique_ptr<DeviceMemory> upload(const std::vector<T, A>& host) {
    auto mem = std::make_unique<DeviceMemory>(host.size() * sizeof(T));
    cuda_ok(cudaMemcpy(mem->ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
    return mem;
}

// Device-to-device copy bandwidth, counting bytes read plus bytes written: the floor's denominator.
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

Result run_gpu(const Workload& w, const PagedCase& c, int iterations, size_t l2_bytes) {
    const int32_t device = 0;
    dsa_test::Context ctx(&device, 1);
    cudaStream_t stream;
    cuda_ok(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");

    auto q = upload(c.q), weights = upload(c.weights), seq_lens = upload(c.seq_lens), table = upload(c.block_table);
    const size_t cache_bytes = c.k_cache.size();
    const int copies = int(std::clamp<size_t>((3 * l2_bytes + cache_bytes - 1) / std::max<size_t>(cache_bytes, 1), 1, 16));
    std::vector<std::unique_ptr<DeviceMemory>> caches;
    for (int i = 0; i < copies; ++i) caches.push_back(upload(c.k_cache));

    const dsa_topk_params_t params = c.params(w.topk, 0);
    dsa_paged_inputs_t inputs = c.inputs();
    inputs.q = q->ptr;
    inputs.weights = weights->as<float>();
    inputs.seq_lens = seq_lens->as<int32_t>();
    inputs.block_table = table->as<int32_t>();
    size_t workspace_bytes = 0;
    require_ok(dsa_topk_paged_workspace_size(ctx.get(), &params, &inputs, &workspace_bytes), "workspace size");
    DeviceMemory workspace(workspace_bytes);
    const size_t out_elems = size_t(c.rows() * w.topk);
    DeviceMemory indices(out_elems * 4), scores(out_elems * 4);
    dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
    outputs.indices = indices.as<int32_t>();
    outputs.scores = scores.as<float>();

    std::vector<cudaGraphExec_t> graphs;
    for (int i = 0; i < copies; ++i) {
        inputs.k_cache = caches[size_t(i)]->ptr;
        cudaGraph_t graph;
        cuda_ok(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "begin capture");
        const dsa_status_t status =
            dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, workspace.ptr, workspace_bytes, stream);
        cuda_ok(cudaStreamEndCapture(stream, &graph), "end capture");
        require_ok(status, "dsa_topk_paged (captured)");
        cudaGraphExec_t exec;
        cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "graph instantiate");
        cudaGraphDestroy(graph);
        graphs.push_back(exec);
    }
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    std::vector<double> times;
    for (int i = 0; i < iterations + 5; ++i) {
        cudaEventRecord(start, stream);
        cuda_ok(cudaGraphLaunch(graphs[size_t(i) % graphs.size()], stream), "graph launch");
        cudaEventRecord(stop, stream);
        cuda_ok(cudaEventSynchronize(stop), "replay");
        float ms = 0;
        cudaEventElapsedTime(&ms, start, stop);
        if (i >= 5) times.push_back(ms * 1e3);  // the first replays warm up
    }
    require_ok(dsa_context_synchronize(ctx.get()), "dsa_context_synchronize");
    std::vector<int32_t> host_indices(out_elems);
    std::vector<float> host_scores(out_elems);
    cuda_ok(cudaMemcpy(host_indices.data(), indices.ptr, out_elems * 4, cudaMemcpyDeviceToHost), "download");
    cuda_ok(cudaMemcpy(host_scores.data(), scores.ptr, out_elems * 4, cudaMemcpyDeviceToHost), "download");
    for (cudaGraphExec_t g : graphs) cudaGraphExecDestroy(g);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);

    Result r;
    r.backend = "gpu";
    r.latency_us = median(times);
    r.check = verify(c, w.topk, host_indices, host_scores);
    return r;
}
#endif

std::string json_escape(const std::string& s) {
    std::string out;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\';
        out += (ch == '\n') ? ' ' : ch;
    }
    return out;
}

// ---- --devices N1,N2,...: the owned-cache path over several GPUs, against one GPU in the same run -------
// Caches hold random fp8 keys written with dsa_cache_write in big batches (not timed); physical pages are
// handed out in order (page i of sequence b is b * pages_per_seq + i), so a sharded cache spreads every
// sequence over all its GPUs. The context of N GPUs is devices 0 .. N-1. Measured:
//   rows-sharded     DSA_CACHE_REPLICATED: dsa_topk throughput over many rows; speedup = 1 GPU / N GPUs
//   context-sharded  DSA_CACHE_SHARDED: dsa_topk latency over few long sequences; ratio = N GPUs / 1 GPU
//   replication      dsa_cache_write of one new token per sequence from GPU 0's memory into a replicated
//                    cache on N GPUs: what keeping the replicas in step costs per decode step
// PASS: indices bitwise equal to the 1-GPU run's (which is checked for structure: distinct slots of its own
// sequence, then -1); for writes, the written tokens read back.

const char* const kMultiTiming =
    "host wall clock (steady_clock) around each call, median after warm-ups; dsa_topk and dsa_cache_write on an "
    "owned cache are synchronous and staged through the host, so CUDA graphs do not apply";

struct MultiRow {
    std::string config;   // "256x32768", "write 256 tokens"
    std::string kind;     // "rows-sharded", "context-sharded", "replication"
    std::string outputs;  // where dsa_topk wrote ("device 0", "host") or where written tokens came from
    int gpus = 0;
    double median_us = 0;
    double base_us = 0;        // the same measurement on 1 GPU (0: none)
    std::string target;        // "" = none
    bool meets_target = false;
    std::string check;         // "PASS", "PASS (ref)", "FAIL: ...", "SKIP: ..."
    bool is_speedup() const { return kind == "rows-sharded"; }
    // rows-sharded: 1 GPU / N GPUs; otherwise N GPUs / 1 GPU.
    double versus() const {
        if (!(median_us > 0 && base_us > 0)) return 0;
        return is_speedup() ? base_us / median_us : median_us / base_us;
    }
};

// The goals of the multi-GPU work, per measurement and GPU count ("" where none is set).
std::string multi_target(const std::string& config, const std::string& kind, const std::string& outputs, int gpus) {
    if (kind == "rows-sharded" && outputs == "device 0") {
        if (gpus == 2) return "x1.9";
        if (gpus == 4) return "x3.6";
        if (gpus == 8) return "x7";
    }
    if (kind == "context-sharded") {
        if (config == "8x1048576" && gpus == 4) return "<=0.3x";
        if (config == "1x4194304" && gpus == 4) return "<=0.35x";
        if (config == "1x16777216" && gpus == 8) return "<=0.18x";
    }
    if (kind == "replication" && gpus > 1) return "<=20us";
    return "";
}

bool meets(const MultiRow& r) {
    if (r.target.empty() || !(r.median_us > 0)) return false;
    if (r.target[0] == 'x') return r.versus() >= std::atof(r.target.c_str() + 1);
    if (r.target.back() == 'x') return r.versus() > 0 && r.versus() <= std::atof(r.target.c_str() + 2);
    return r.median_us <= std::atof(r.target.c_str() + 2);  // "<=20us"
}

// "1,2,4" -> {1, 2, 4}; false on anything else.
bool parse_device_counts(const std::string& text, std::vector<int>* counts) {
    counts->clear();
    size_t at = 0;
    while (at <= text.size()) {
        const size_t comma = std::min(text.find(',', at), text.size());
        const std::string item = text.substr(at, comma - at);
        if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 3) return false;
        counts->push_back(std::atoi(item.c_str()));
        if (counts->back() < 1) return false;
        at = comma + 1;
    }
    return !counts->empty();
}

void print_multi_table(const std::vector<MultiRow>& rows) {
    std::printf("\n== multi-GPU results (dsa_topk: H 64, D 128, P 64, k 2048, next_n 1, unsorted; speedup = 1 GPU / "
                "N GPUs, ratio = N GPUs / 1 GPU)\n");
    std::printf("%-18s %-16s %-11s %4s %11s %9s %8s %6s  %s\n", "config", "kind", "outputs", "GPUs", "median_us",
                "vs_1GPU", "target", "goal", "check");
    for (const MultiRow& r : rows) {
        char versus[32] = "-";
        if (r.versus() > 0) std::snprintf(versus, sizeof versus, r.is_speedup() ? "x%.2f" : "%.2fx", r.versus());
        std::printf("%-18s %-16s %-11s %4d %11.1f %9s %8s %6s  %s\n", r.config.c_str(), r.kind.c_str(),
                    r.outputs.c_str(), r.gpus, r.median_us, versus, r.target.empty() ? "-" : r.target.c_str(),
                    r.target.empty() ? "-" : (r.meets_target ? "met" : "missed"), r.check.c_str());
    }
}

bool write_multi_json(const std::string& path, const std::string& device_name, int gpus_present,
                      const std::vector<int>& counts, int warmups, int reps, const std::string& note,
                      const std::vector<MultiRow>& rows) {
    FILE* f = path == "-" ? stdout : std::fopen(path.c_str(), "w");
    if (!f) return false;
    std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"gpus_present\": %d,\n  \"library_version\": %d,\n",
                 json_escape(device_name).c_str(), gpus_present, dsa_version());
    std::fprintf(f, "  \"device_counts\": [");
    for (size_t i = 0; i < counts.size(); ++i) std::fprintf(f, "%s%d", i ? ", " : "", counts[i]);
    std::fprintf(f, "],\n  \"timing\": \"%s\",\n  \"warmups\": %d,\n  \"repetitions\": %d,\n  \"note\": \"%s\",\n",
                 json_escape(kMultiTiming).c_str(), warmups, reps, json_escape(note).c_str());
    std::fprintf(f, "  \"results\": [],\n  \"multi_gpu\": [\n");
    for (size_t i = 0; i < rows.size(); ++i) {
        const MultiRow& r = rows[i];
        const bool pass = r.check.rfind("PASS", 0) == 0;
        std::fprintf(f,
                     "    {\"config\": \"%s\", \"kind\": \"%s\", \"outputs\": \"%s\", \"gpus\": %d, \"median_us\": %.2f, "
                     "\"baseline_1gpu_us\": %.2f, \"%s\": %.4f, \"target\": \"%s\", \"meets_target\": %s, "
                     "\"pass\": %s, \"check\": \"%s\"}%s\n",
                     json_escape(r.config).c_str(), r.kind.c_str(), json_escape(r.outputs).c_str(), r.gpus, r.median_us,
                     r.base_us, r.is_speedup() ? "speedup_vs_1gpu" : "ratio_vs_1gpu", r.versus(),
                     json_escape(r.target).c_str(), r.target.empty() ? "null" : (r.meets_target ? "true" : "false"),
                     pass ? "true" : "false", json_escape(r.check).c_str(), i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    if (f != stdout) std::fclose(f);
    return true;
}

#if DSA_BENCH_CUDA
constexpr int kMultiPage = 64;
constexpr int kMultiTopk = 2048;
constexpr double kTokenBytes = 128 + 4;

// Deterministic random fp8 keys and scales, fast enough for caches of 16M tokens: each key byte is one of
// 256 fp8 codes drawn once from N(0, 1) * 128 (|value| up to 448); scales in [0.5, 1.5) / 448.
class KeySource {
public:
    KeySource() {
        dsa_test::Rng rng(4242);
        for (uint8_t& code : codes_) code = dsa_test::fp8_encode(std::clamp(rng.normal(), -3.5, 3.5) * 128.0);
    }
    void fill(uint64_t seed, int64_t n, uint8_t* keys, float* scales) const {
        uint64_t state = seed * 0x9E3779B97F4A7C15ull;
        for (int64_t i = 0; i < n * 128; i += 8) {
            uint64_t bits = next(state);
            for (int j = 0; j < 8; ++j, bits >>= 8) keys[i + j] = codes_[bits & 255];
        }
        for (int64_t i = 0; i < n; ++i) scales[i] = float((0.5 + double(next(state) >> 11) * 0x1.0p-53) / 448.0);
    }

private:
    static uint64_t next(uint64_t& state) {  // splitmix64
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    uint8_t codes_[256];
};

// Writes slots [0, num_slots) in batches of 1M tokens from host memory.
void fill_cache(dsa_cache_t cache, int64_t num_slots, const KeySource& source) {
    const int64_t batch = int64_t(1) << 20;
    std::vector<int64_t> slots(size_t(std::min(batch, num_slots)));
    std::vector<uint8_t> keys(slots.size() * 128);
    std::vector<float> scales(slots.size());
    for (int64_t first = 0; first < num_slots; first += batch) {
        const int64_t n = std::min(batch, num_slots - first);
        for (int64_t i = 0; i < n; ++i) slots[size_t(i)] = first + i;
        source.fill(uint64_t(first / batch) + 1, n, keys.data(), scales.data());
        require_ok(dsa_cache_write(cache, slots.data(), keys.data(), scales.data(), n, DSA_MEMORY_HOST),
                   "dsa_cache_write (filling the cache)");
    }
}

// Destroys a cache at scope exit.
struct CacheHandle {
    dsa_cache_t cache = nullptr;
    CacheHandle(dsa_context_t ctx, int64_t num_pages, int mode) {
        dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
        config.num_pages = num_pages;
        config.page_size = kMultiPage;
        config.mode = mode;
        require_ok(dsa_cache_create(ctx, &config, &cache), "dsa_cache_create");
    }
    ~CacheHandle() { dsa_cache_destroy(cache); }
    CacheHandle(const CacheHandle&) = delete;
    CacheHandle& operator=(const CacheHandle&) = delete;
};

std::unique_ptr<dsa_test::Context> first_gpus_context(int n) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) ids[size_t(i)] = i;
    return std::make_unique<dsa_test::Context>(ids.data(), n);
}

// "" when GPUs 0 .. n-1 each have `bytes` free plus a margin (library buffers, NCCL), else why not.
std::string memory_shortfall(int n, double bytes) {
    for (int d = 0; d < n; ++d) {
        size_t free_bytes = 0, total_bytes = 0;
        cuda_ok(cudaSetDevice(d), "cudaSetDevice");
        cuda_ok(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
        const double needed = bytes * 1.1 + 4e9;
        if (needed > double(free_bytes)) {
            char text[160];
            std::snprintf(text, sizeof text, "needs about %.1f GB on GPU %d, %.1f GB free", needed / 1e9, d,
                          double(free_bytes) / 1e9);
            return text;
        }
    }
    return "";
}

// A decode batch over an owned cache: `batch` sequences of `seq_len` tokens, pages in order, host inputs.
struct MultiDecode {
    std::string name, kind;
    int mode = DSA_CACHE_REPLICATED;
    int batch = 0;
    int32_t seq_len = 0;
    int64_t pages_per_seq() const { return (int64_t(seq_len) + kMultiPage - 1) / kMultiPage; }
    int64_t num_pages() const { return int64_t(batch) * pages_per_seq(); }
    // Bytes of cache on each of n GPUs.
    double bytes_per_gpu(int n) const {
        const int64_t pages = mode == DSA_CACHE_SHARDED ? (num_pages() + n - 1) / n : num_pages();
        return double(pages) * kMultiPage * kTokenBytes;
    }
};

struct DecodeInputs {
    dsa_test::Buffer<uint8_t> q;
    dsa_test::Buffer<float> weights;
    dsa_test::Buffer<int32_t> seq_lens, block_table;
    dsa_paged_inputs_t inputs = DSA_PAGED_INPUTS_INIT;
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
};

// q = fp8(clamp(randn, -2, 2)), weights randn (SPEC section 6); params H 64, P 64, k 2048, next_n 1.
std::unique_ptr<DecodeInputs> make_decode_inputs(const MultiDecode& w) {
    auto d = std::make_unique<DecodeInputs>();
    const int heads = d->params.num_heads;
    dsa_test::Rng rng(777 + uint64_t(w.batch));
    d->q.resize(size_t(w.batch) * heads * 128);
    for (uint8_t& v : d->q) v = dsa_test::fp8_encode(std::clamp(rng.normal(), -2.0, 2.0));
    d->weights.resize(size_t(w.batch) * heads);
    for (float& v : d->weights) v = float(rng.normal());
    d->seq_lens.assign(size_t(w.batch), w.seq_len);
    d->block_table.resize(size_t(w.num_pages()));
    for (int64_t p = 0; p < w.num_pages(); ++p) d->block_table[size_t(p)] = int32_t(p);  // in order
    d->params.page_size = kMultiPage;
    d->params.topk = kMultiTopk;
    d->inputs.batch_size = w.batch;
    d->inputs.max_pages = int32_t(w.pages_per_seq());
    d->inputs.block_table_stride = w.pages_per_seq();
    d->inputs.q = d->q.data();
    d->inputs.weights = d->weights.data();
    d->inputs.seq_lens = d->seq_lens.data();
    d->inputs.block_table = d->block_table.data();
    return d;
}

struct Timed {
    double median_us = 0;
    std::vector<int32_t> indices;
};

// Times dsa_topk with its outputs on GPU `memory_device`, or on the host (DSA_MEMORY_HOST).
Timed time_topk(dsa_context_t ctx, dsa_cache_t cache, const DecodeInputs& in, int32_t memory_device, int warmups,
                int reps) {
    const size_t elems = size_t(in.inputs.batch_size) * size_t(in.params.topk);
    std::unique_ptr<DeviceMemory> device_out;
    Timed t;
    dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
    outputs.memory_device = memory_device;
    if (memory_device >= 0) {
        cuda_ok(cudaSetDevice(memory_device), "cudaSetDevice");
        device_out = std::make_unique<DeviceMemory>(elems * 4);
        outputs.indices = device_out->as<int32_t>();
    } else {
        t.indices.resize(elems);
        outputs.indices = t.indices.data();
    }
    std::vector<double> times;
    for (int i = 0; i < warmups + reps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        require_ok(dsa_topk(ctx, cache, &in.params, &in.inputs, &outputs), "dsa_topk");
        const auto t1 = std::chrono::steady_clock::now();
        if (i >= warmups) times.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    t.median_us = median(times);
    if (device_out) {
        t.indices.resize(elems);
        cuda_ok(cudaMemcpy(t.indices.data(), device_out->ptr, elems * 4, cudaMemcpyDeviceToHost), "download");
    }
    return t;
}

// The 1-GPU reference's structure: each row holds min(k, seq_len) distinct slots of its own sequence
// (pages in order: sequence b owns slots [b * pages_per_seq * P, + seq_len)), then -1.
std::string check_reference(const MultiDecode& w, const std::vector<int32_t>& indices) {
    const int64_t span = w.pages_per_seq() * kMultiPage, count = std::min<int64_t>(kMultiTopk, w.seq_len);
    std::vector<int32_t> row;
    for (int b = 0; b < w.batch; ++b) {
        const auto first = indices.begin() + int64_t(b) * kMultiTopk;
        row.assign(first, first + count);
        for (int32_t slot : row)
            if (slot < int64_t(b) * span || slot >= int64_t(b) * span + w.seq_len)
                return "row " + std::to_string(b) + ": slot " + std::to_string(slot) + " is not one of its sequence's";
        std::sort(row.begin(), row.end());
        if (std::adjacent_find(row.begin(), row.end()) != row.end()) return "row " + std::to_string(b) + ": a slot repeats";
        if (std::any_of(first + count, first + kMultiTopk, [](int32_t v) { return v != -1; }))
            return "row " + std::to_string(b) + ": padding is not -1";
    }
    return "";
}

std::string compare_indices(const std::vector<int32_t>& reference, const std::vector<int32_t>& got) {
    if (reference.size() != got.size()) return "FAIL: output size differs from 1 GPU";
    const auto at = std::mismatch(reference.begin(), reference.end(), got.begin());
    if (at.first == reference.end()) return "PASS";
    const int64_t i = at.first - reference.begin();
    return "FAIL: indices differ from 1 GPU (first at row " + std::to_string(i / kMultiTopk) + ")";
}

// One decode configuration on every GPU count (1 first): outputs on GPU 0, and for rows-sharded on the host too.
void run_multi_decode(const MultiDecode& w, const std::vector<int>& counts, int warmups, int reps,
                      const KeySource& source, std::vector<MultiRow>& rows) {
    const bool rows_sharded = w.mode == DSA_CACHE_REPLICATED;
    std::unique_ptr<DecodeInputs> in;
    std::vector<int32_t> reference;
    double base_device_us = 0, base_host_us = 0;
    for (int n : counts) {
        std::fprintf(stderr, "[multi-GPU] %s (%s) on %d GPU(s) ...\n", w.name.c_str(), w.kind.c_str(), n);
        MultiRow row;
        row.config = w.name;
        row.kind = w.kind;
        row.outputs = "device 0";
        row.gpus = n;
        row.base_us = base_device_us;
        const std::string shortfall = memory_shortfall(n, w.bytes_per_gpu(n));
        if (!shortfall.empty()) {
            std::printf("note: %s on %d GPU(s) skipped: it does not fit (%s)\n", w.name.c_str(), n, shortfall.c_str());
            row.check = "SKIP: " + shortfall;
            rows.push_back(row);
            continue;
        }
        try {
            if (!in) in = make_decode_inputs(w);
            const std::unique_ptr<dsa_test::Context> ctx = first_gpus_context(n);
            CacheHandle cache(ctx->get(), w.num_pages(), w.mode);
            fill_cache(cache.cache, w.num_pages() * kMultiPage, source);
            const Timed on_device = time_topk(ctx->get(), cache.cache, *in, 0, warmups, reps);
            row.median_us = on_device.median_us;
            if (n == 1) {
                const std::string structure = check_reference(w, on_device.indices);
                row.check = structure.empty() ? "PASS (ref)" : "FAIL: " + structure;
                reference = on_device.indices;
                base_device_us = row.base_us = on_device.median_us;
            } else {
                row.check = reference.empty() ? "FAIL: no 1-GPU reference" : compare_indices(reference, on_device.indices);
            }
            rows.push_back(row);
            if (rows_sharded) {
                MultiRow host = row;
                host.outputs = "host";
                const Timed on_host = time_topk(ctx->get(), cache.cache, *in, DSA_MEMORY_HOST, warmups, reps);
                host.median_us = on_host.median_us;
                if (n == 1) base_host_us = on_host.median_us;
                host.base_us = base_host_us;
                host.check = compare_indices(on_device.indices, on_host.indices);
                if (n > 1 && host.check == "PASS" && !reference.empty()) host.check = compare_indices(reference, on_host.indices);
                rows.push_back(host);
            }
        } catch (const std::exception& e) {
            row.median_us = 0;
            row.check = std::string("FAIL: ") + e.what();
            rows.push_back(row);
        }
    }
}

// dsa_cache_write of one new token for each of `batch` sequences (the next position of each, as a decode
// step appends), slots, keys and scales in GPU 0's memory, into a replicated cache on every GPU count.
void run_multi_replication(int batch, const std::vector<int>& counts, int warmups, int reps, const KeySource& source,
                           std::vector<MultiRow>& rows) {
    const int64_t slots_per_seq = 4 * kMultiPage;  // 4 pages per sequence; the position advances each call
    const int calls = warmups + reps;
    std::vector<int64_t> slots(size_t(calls) * size_t(batch));
    for (int c = 0; c < calls; ++c)
        for (int b = 0; b < batch; ++b) slots[size_t(c) * batch + b] = b * slots_per_seq + c % slots_per_seq;
    std::vector<uint8_t> keys(size_t(batch) * 128);
    std::vector<float> scales(static_cast<size_t>(batch));
    source.fill(99, batch, keys.data(), scales.data());
    double base_us = 0;
    for (int n : counts) {
        std::fprintf(stderr, "[multi-GPU] write %d tokens (replication) on %d GPU(s) ...\n", batch, n);
        MultiRow row;
        row.config = "write " + std::to_string(batch) + " tokens";
        row.kind = "replication";
        row.outputs = "from GPU 0";
        row.gpus = n;
        try {
            const std::unique_ptr<dsa_test::Context> ctx = first_gpus_context(n);
            CacheHandle cache(ctx->get(), batch * slots_per_seq / kMultiPage, DSA_CACHE_REPLICATED);
            cuda_ok(cudaSetDevice(0), "cudaSetDevice");
            const auto d_slots = upload(slots), d_keys = upload(keys), d_scales = upload(scales);
            std::vector<double> times;
            for (int c = 0; c < calls; ++c) {
                const auto t0 = std::chrono::steady_clock::now();
                require_ok(dsa_cache_write(cache.cache, d_slots->as<int64_t>() + size_t(c) * batch, d_keys->ptr,
                                           d_scales->as<float>(), batch, 0),
                           "dsa_cache_write (from GPU 0)");
                const auto t1 = std::chrono::steady_clock::now();
                if (c >= warmups) times.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
            }
            row.median_us = median(times);
            if (n == 1) base_us = row.median_us;
            row.base_us = base_us;
            // The last call's tokens read back from the cache (on a replicated cache: from its replicas).
            std::vector<uint8_t> keys_back(keys.size(), 0xEE);
            std::vector<float> scales_back(scales.size(), -1.0f);
            require_ok(dsa_cache_read(cache.cache, slots.data() + size_t(calls - 1) * batch, keys_back.data(),
                                      scales_back.data(), batch, DSA_MEMORY_HOST),
                       "dsa_cache_read");
            const bool same = keys_back == keys && std::memcmp(scales_back.data(), scales.data(), scales.size() * 4) == 0;
            row.check = same ? (n == 1 ? "PASS (ref)" : "PASS") : "FAIL: the written tokens did not read back";
        } catch (const std::exception& e) {
            row.check = std::string("FAIL: ") + e.what();
        }
        rows.push_back(row);
    }
}
#endif

// --devices: returns the exit status (0 when every check passed or nothing could run, 1 on a FAIL).
int run_multi_gpu(std::vector<int> counts, const std::string& json_path, int iterations) {
    const int reps = iterations > 0 ? std::max(iterations, 10) : 20;
    const int warmups = 3;
    std::vector<MultiRow> rows;
    std::string device_name = "none", note;
    int gpus_present = 0;
#if DSA_BENCH_CUDA
    if (cudaGetDeviceCount(&gpus_present) != cudaSuccess) gpus_present = 0;
#endif
    if (gpus_present == 0) {
        note = DSA_BENCH_CUDA ? "no GPU visible" : "this build has no CUDA support";
        std::printf("dsa_bench --devices: the multi-GPU benchmark needs GPUs (%s): nothing run\n", note.c_str());
        if (!json_path.empty() && !write_multi_json(json_path, device_name, 0, {}, warmups, reps, note, rows)) return 2;
        return 0;
    }
#if DSA_BENCH_CUDA
    // 1 GPU is the reference of every measurement: always run, first. Counts above what is present are dropped.
    std::sort(counts.begin(), counts.end());
    counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
    if (counts.front() != 1) counts.insert(counts.begin(), 1);
    while (counts.back() > gpus_present) {
        std::printf("note: %d GPUs requested, %d present: skipped\n", counts.back(), gpus_present);
        note += (note.empty() ? "" : "; ") + std::to_string(counts.back()) + " GPUs requested, " +
                std::to_string(gpus_present) + " present: skipped";
        counts.pop_back();
    }
    const bool eight = counts.back() >= 8;
    cudaDeviceProp prop;
    cuda_ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    device_name = prop.name;
    std::printf("multi-GPU benchmark on %d x %s, GPU counts:", gpus_present, prop.name);
    for (int n : counts) std::printf(" %d", n);
    std::printf("\ntiming: %s; %d repetitions after %d warm-ups\n", kMultiTiming, reps, warmups);

    const KeySource source;
    std::vector<MultiDecode> decodes = {{"256x32768", "rows-sharded", DSA_CACHE_REPLICATED, 256, 32768}};
    if (eight) decodes.push_back({"1024x32768", "rows-sharded", DSA_CACHE_REPLICATED, 1024, 32768});
    decodes.push_back({"8x1048576", "context-sharded", DSA_CACHE_SHARDED, 8, 1048576});
    decodes.push_back({"1x4194304", "context-sharded", DSA_CACHE_SHARDED, 1, 4194304});
    if (eight) decodes.push_back({"1x16777216", "context-sharded", DSA_CACHE_SHARDED, 1, 16777216});
    for (const MultiDecode& w : decodes) run_multi_decode(w, counts, warmups, reps, source, rows);
    for (int batch : {256, 1024}) run_multi_replication(batch, counts, 10, std::max(reps, 50), source, rows);
#endif
    for (MultiRow& r : rows) {
        r.target = multi_target(r.config, r.kind, r.outputs, r.gpus);
        r.meets_target = meets(r);
    }
    print_multi_table(rows);
    int failures = 0;
    for (const MultiRow& r : rows) failures += r.check.rfind("FAIL", 0) == 0 ? 1 : 0;
    if (!json_path.empty() && !write_multi_json(json_path, device_name, gpus_present, counts, warmups, reps, note, rows)) {
        std::fprintf(stderr, "dsa_bench: cannot write %s\n", json_path.c_str());
        return 2;
    }
    std::printf("dsa_bench --devices: %d rows, %d failed\n", int(rows.size()), failures);
    return failures == 0 ? 0 : 1;
}

// ---- --plot FILE: an SVG written by hand (no dependencies) ------------------------------------------------
// Two panels against context length L, one line per batch size B, for the workloads named "BxL" only:
// latency (log scale) and % of the bandwidth floor (the floor exists only on a GPU).

bool parse_batch_by_length(const std::string& name, int* batch, double* length) {
    const size_t x = name.find('x');
    if (x == 0 || x == std::string::npos || x + 1 >= name.size()) return false;
    for (size_t i = 0; i < name.size(); ++i)
        if (i != x && (name[i] < '0' || name[i] > '9')) return false;
    *batch = std::atoi(name.substr(0, x).c_str());
    *length = std::atof(name.substr(x + 1).c_str());
    return *batch > 0 && *length > 0;
}

std::string xml_escape(const std::string& s) {
    std::string out;
    for (char ch : s) {
        if (ch == '&') out += "&amp;";
        else if (ch == '<') out += "&lt;";
        else if (ch == '>') out += "&gt;";
        else if (ch == '"') out += "&quot;";
        else out += ch;
    }
    return out;
}

struct PlotAxis {
    double lo, hi;  // data range
    bool log;
    double pixel_lo, pixel_hi;
    double map(double v) const {
        const double t = log ? (std::log(v) - std::log(lo)) / (std::log(hi) - std::log(lo)) : (v - lo) / (hi - lo);
        return pixel_lo + t * (pixel_hi - pixel_lo);
    }
};

std::string format_length(double tokens) {
    char text[32];
    if (tokens >= 1024 && std::fmod(tokens, 1024) == 0) std::snprintf(text, sizeof text, "%gK", tokens / 1024);
    else std::snprintf(text, sizeof text, "%g", tokens);
    return text;
}

// One panel: axes, ticks, labels and a polyline with markers per batch size. Points are (L, value).
void plot_panel(FILE* f, double left, double top, double width, double height, const std::string& title,
                const std::string& y_label, bool y_log, const std::map<int, std::vector<std::pair<double, double>>>& lines,
                const PlotAxis& x_data, const char* const* colors, size_t num_colors, const std::string& empty_note) {
    std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-weight=\"bold\">%s</text>\n",
                 left + width / 2, top - 10, xml_escape(title).c_str());
    std::fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#444\"/>\n",
                 left, top, width, height);
    PlotAxis x = x_data;
    x.pixel_lo = left;
    x.pixel_hi = left + width;
    for (double tick = std::pow(2.0, std::floor(std::log2(x.lo))); tick <= x.hi * 1.0001; tick *= 2) {
        if (tick < x.lo * 0.9999) continue;
        const double px = x.map(tick);
        std::fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", px, top, px,
                     top + height);
        std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"11\">%s</text>\n", px,
                     top + height + 15, format_length(tick).c_str());
    }
    std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"12\">context length L (tokens)</text>\n",
                 left + width / 2, top + height + 34);
    std::fprintf(f, "<text transform=\"translate(%.1f %.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">%s</text>\n",
                 left - 48, top + height / 2, xml_escape(y_label).c_str());

    double y_min = INFINITY, y_max = 0;
    for (const auto& line : lines)
        for (const auto& point : line.second) {
            y_min = std::min(y_min, point.second);
            y_max = std::max(y_max, point.second);
        }
    if (!(y_max > 0)) {
        std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" fill=\"#888\">%s</text>\n",
                     left + width / 2, top + height / 2, xml_escape(empty_note).c_str());
        return;
    }
    PlotAxis y{0, 0, y_log, top + height, top};
    std::vector<double> ticks;
    if (y_log) {  // whole decades around the data, ticks at 1, 2, 5 x 10^k
        y.lo = std::pow(10.0, std::floor(std::log10(y_min)));
        y.hi = std::pow(10.0, std::ceil(std::log10(y_max)));
        if (y.hi <= y.lo) y.hi = y.lo * 10;
        for (double decade = y.lo; decade < y.hi * 1.0001; decade *= 10)
            for (double m : {1.0, 2.0, 5.0})
                if (decade * m <= y.hi * 1.0001) ticks.push_back(decade * m);
    } else {  // 0 .. 100 %, or beyond when a point is above the floor line
        y.lo = 0;
        y.hi = std::max(100.0, std::ceil(y_max / 20) * 20);
        for (double t = 0; t <= y.hi + 1e-9; t += 20) ticks.push_back(t);
    }
    for (double t : ticks) {
        const double py = y.map(t);
        std::fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", left, py,
                     left + width, py);
        std::fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\" font-size=\"11\">%g</text>\n", left - 5,
                     py + 4, t);
    }
    size_t series = 0;
    for (const auto& line : lines) {
        const char* color = colors[series++ % num_colors];
        std::string points;
        for (const auto& point : line.second) {
            char xy[64];
            std::snprintf(xy, sizeof xy, "%.1f,%.1f ", x.map(point.first), y.map(point.second));
            points += xy;
        }
        std::fprintf(f, "<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"/>\n", points.c_str(),
                     color);
        for (const auto& point : line.second)  // markers, so that a batch size with one length still shows
            std::fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"%s\"><title>B=%d L=%s: %.4g</title></circle>\n",
                         x.map(point.first), y.map(point.second), color, line.first,
                         format_length(point.first).c_str(), point.second);
    }
}

// Returns false when the file cannot be written.
bool write_plot(const std::string& path, const std::vector<Result>& results, const std::string& device_name) {
    std::map<int, std::vector<std::pair<double, double>>> latency, floor_percent;
    double x_min = INFINITY, x_max = 0;
    for (const Result& r : results) {
        int batch = 0;
        double length = 0;
        if (!parse_batch_by_length(r.name, &batch, &length) || !(r.latency_us > 0)) continue;
        latency[batch].push_back({length, r.latency_us});
        if (r.floor_us > 0) floor_percent[batch].push_back({length, 100.0 * r.floor_us / r.latency_us});
        x_min = std::min(x_min, length);
        x_max = std::max(x_max, length);
    }
    for (auto* lines : {&latency, &floor_percent})
        for (auto& line : *lines) std::sort(line.second.begin(), line.second.end());
    if (!(x_max > 0)) x_min = x_max = 1024;  // no BxL workload: empty panels, still a valid picture
    PlotAxis x{x_min / 1.5, x_max * 1.5, true, 0, 0};

    FILE* f = std::fopen(path.c_str(), "w");
    if (!f) return false;
    const double width = 1000, height = 470, panel_w = 360, panel_h = 330, top = 70;
    static const char* const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"};
    const size_t num_colors = sizeof colors / sizeof colors[0];
    std::fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    std::fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
                    "font-family=\"sans-serif\" font-size=\"13\">\n", width, height, width, height);
    std::fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    const int version = dsa_version();
    std::fprintf(f, "<text x=\"%g\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">dsa_bench on %s, library %d.%d.%d: "
                    "paged decode top-k, workloads B x L</text>\n", width / 2, xml_escape(device_name).c_str(),
                 version / 10000, version / 100 % 100, version % 100);
    plot_panel(f, 80, top, panel_w, panel_h, "latency", "latency (us, log scale)", true, latency, x, colors, num_colors,
               "no B x L workload was run");
    plot_panel(f, 80 + panel_w + 100, top, panel_w, panel_h, "% of the bandwidth floor", "floor / latency (%)", false,
               floor_percent, x, colors, num_colors, "no bandwidth floor on this backend");
    size_t series = 0;  // legend, right of the panels
    for (const auto& line : latency) {
        const double ly = top + 10 + 22 * double(series);
        std::fprintf(f, "<line x1=\"905\" y1=\"%.1f\" x2=\"930\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>\n", ly,
                     ly, colors[series % num_colors]);
        std::fprintf(f, "<text x=\"936\" y=\"%.1f\">B = %d</text>\n", ly + 4, line.first);
        ++series;
    }
    std::fprintf(f, "</svg>\n");
    return std::fclose(f) == 0;
}

void print_usage() {
    std::printf(
        "usage: dsa_bench [--backend cpu|gpu] [--quick] [--json FILE] [--plot FILE] [--only NAME] [--iterations N]\n"
        "  Runs named paged-decode workloads and prints latency, GB/s of K read, %% of the bandwidth floor\n"
        "  (GPU: K bytes over the device copy bandwidth measured in the same run) and PASS/FAIL by SPEC 5.\n"
        "  Default backend: gpu when the library has a usable GPU, else cpu. --json - writes JSON to stdout.\n"
        "  --plot FILE writes an SVG: latency and %% of the floor against context length, one line per batch\n"
        "  size, for the workloads named BxL.\n"
        "       dsa_bench --devices N1,N2,... [--json FILE] [--iterations N]\n"
        "  Multi-GPU owned-cache path on GPUs 0..N-1 against 1 GPU in the same run: rows-sharded (replicated\n"
        "  cache) dsa_topk throughput, context-sharded (sharded cache) dsa_topk latency, and the replication cost\n"
        "  of dsa_cache_write; host wall-clock medians; PASS = indices bitwise equal to 1 GPU's. Needs GPUs.\n");
}

}  // namespace

int main(int argc, char** argv) {
    std::string backend, json_path, plot_path, only, devices;
    bool quick = false;
    int iterations = 0;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                print_usage();
                std::exit(2);
            }
            return argv[++i];
        };
        if (arg == "--backend") backend = value();
        else if (arg == "--quick") quick = true;
        else if (arg == "--json") json_path = value();
        else if (arg == "--plot") plot_path = value();
        else if (arg == "--only") only = value();
        else if (arg == "--iterations") iterations = std::atoi(value().c_str());
        else if (arg == "--devices") devices = value();
        else {
            print_usage();
            return arg == "--help" || arg == "-h" ? 0 : 2;
        }
    }
    if (!devices.empty()) {
        std::vector<int> counts;
        if (!parse_device_counts(devices, &counts)) {
            print_usage();
            return 2;
        }
        return run_multi_gpu(counts, json_path, iterations);
    }
    if (backend.empty()) {
        const int32_t device = 0;
        dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
        config.device_ids = &device;
        config.num_devices = 1;
        dsa_context_t probe = nullptr;
        backend = dsa_context_create(&config, &probe) == DSA_STATUS_SUCCESS ? "gpu" : "cpu";
        dsa_context_destroy(probe);
    }
    if (backend != "cpu" && backend != "gpu") {
        print_usage();
        return 2;
    }
#if !DSA_BENCH_CUDA
    if (backend == "gpu") {
        std::fprintf(stderr, "dsa_bench: this build has no CUDA support\n");
        return 2;
    }
#endif
    const bool gpu = backend == "gpu";
    if (iterations <= 0) iterations = gpu ? 50 : (quick ? 3 : 5);

    std::string device_name = "cpu";
    double copy_bandwidth = 0;
    size_t l2_bytes = 0;
#if DSA_BENCH_CUDA
    if (gpu) {
        cudaDeviceProp prop;
        cuda_ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
        device_name = prop.name;
        l2_bytes = size_t(prop.l2CacheSize);
        cudaStream_t stream;
        cuda_ok(cudaStreamCreate(&stream), "cudaStreamCreate");
        copy_bandwidth = measure_copy_bandwidth(stream);
        cudaStreamDestroy(stream);
        std::printf("device: %s, %d SMs, L2 %zu MB, measured copy bandwidth %.0f GB/s (read + write)\n", prop.name,
                    prop.multiProcessorCount, l2_bytes >> 20, copy_bandwidth / 1e9);
    }
#endif
    std::vector<Workload> workloads = gpu ? gpu_workloads() : cpu_workloads(quick);
    if (quick && gpu) workloads.resize(3);
    std::vector<Result> results;
    int failures = 0;
    for (size_t wi = 0; wi < workloads.size(); ++wi) {
        const Workload& w = workloads[wi];
        if (!only.empty() && w.name != only) continue;
        std::fprintf(stderr, "[%zu/%zu] %s ...\n", wi + 1, workloads.size(), w.name.c_str());
        PagedLayout layout;
        layout.heads = w.heads;
        layout.page_size = w.page_size;
        layout.next_n = w.next_n;
        PagedCase c(layout, w.seq_lens, 1234 + wi);
        dsa_test::Rng rng(99 + wi);
        dsa_test::fill_spec6(c, rng);
        Result r;
        try {
#if DSA_BENCH_CUDA
            r = gpu ? run_gpu(w, c, iterations, l2_bytes) : run_cpu(w, c, iterations);
#else
            r = run_cpu(w, c, iterations);
#endif
        } catch (const std::exception& e) {
            r.backend = backend;
            r.check = e.what();
        }
        r.name = w.name;
        r.rows = c.rows();
        for (int32_t len : w.seq_lens) r.tokens += len;
        r.k_bytes = double(r.tokens) * (128 + 4);
        if (gpu && copy_bandwidth > 0) r.floor_us = r.k_bytes / copy_bandwidth * 1e6;
        failures += r.check.empty() ? 0 : 1;
        results.push_back(r);
    }

    std::printf("\n%-20s %-4s %6s %9s %11s %9s %9s %8s  %s\n", "workload", "dev", "rows", "tokens", "latency_us",
                "GB/s", "floor_us", "%floor", "check");
    for (const Result& r : results) {
        const double gbs = r.latency_us > 0 ? r.k_bytes / (r.latency_us * 1e3) : 0.0;
        const double pct = r.latency_us > 0 && r.floor_us > 0 ? 100.0 * r.floor_us / r.latency_us : 0.0;
        std::printf("%-20s %-4s %6lld %9lld %11.1f %9.1f %9.1f %7.0f%%  %s\n", r.name.c_str(), r.backend.c_str(),
                    (long long)r.rows, (long long)r.tokens, r.latency_us, gbs, r.floor_us, pct,
                    r.check.empty() ? "PASS" : ("FAIL: " + r.check).c_str());
    }
    if (!json_path.empty()) {
        FILE* f = json_path == "-" ? stdout : std::fopen(json_path.c_str(), "w");
        if (!f) {
            std::fprintf(stderr, "dsa_bench: cannot write %s\n", json_path.c_str());
            return 2;
        }
        std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"library_version\": %d,\n  \"copy_bandwidth_gbs\": %.1f,\n",
                     json_escape(device_name).c_str(), dsa_version(), copy_bandwidth / 1e9);
        std::fprintf(f, "  \"timing\": \"%s\",\n  \"results\": [\n",
                     gpu ? "median of CUDA-event-timed CUDA-graph replays, K cache rotated" : "median wall clock");
        for (size_t i = 0; i < results.size(); ++i) {
            const Result& r = results[i];
            std::fprintf(f,
                         "    {\"workload\": \"%s\", \"backend\": \"%s\", \"rows\": %lld, \"tokens\": %lld, "
                         "\"latency_us\": %.2f, \"k_bytes\": %.0f, \"floor_us\": %.2f, \"pass\": %s, \"check\": \"%s\"}%s\n",
                         json_escape(r.name).c_str(), r.backend.c_str(), (long long)r.rows, (long long)r.tokens,
                         r.latency_us, r.k_bytes, r.floor_us, r.check.empty() ? "true" : "false",
                         json_escape(r.check).c_str(), i + 1 < results.size() ? "," : "");
        }
        std::fprintf(f, "  ]\n}\n");
        if (f != stdout) std::fclose(f);
    }
    if (!plot_path.empty() && !write_plot(plot_path, results, device_name)) {
        std::fprintf(stderr, "dsa_bench: cannot write %s\n", plot_path.c_str());
        return 2;
    }
    std::printf("dsa_bench: %d passed, %d failed\n", int(results.size()) - failures, failures);
    return failures == 0 ? 0 : 1;
}
