// GPU timing (METHOD.md): each call is captured once in a CUDA graph per rotated copy of the K cache; the
// latency is the median of CUDA-event-timed single replays. Copies rotate so that inputs smaller than the L2
// do not stay cached between calls. CPU timing: the median wall clock of synchronous calls.
#include "workloads.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "dsa_indexer.h"

namespace dsa_bench {

using dsa_test::PagedCase;
using dsa_test::PagedLayout;

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
    if (parameters.topk != defaults.topk) suffix += "_k" + std::to_string(parameters.topk);
    if (parameters.heads != defaults.heads) suffix += "_h" + std::to_string(parameters.heads);
    if (parameters.page_size != defaults.page_size) suffix += "_p" + std::to_string(parameters.page_size);
    size_t start = 0;
    while (start <= text.size()) {
        const size_t comma = std::min(text.find(',', start), text.size());
        const std::string item = text.substr(start, comma - start);
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
        start = comma + 1;
    }
    return true;
}

double k_bytes_of(int64_t tokens) { return double(tokens) * kTokenBytes; }

namespace {

std::string verify(const PagedCase& c, int topk, const std::vector<int32_t>& indices, const std::vector<float>& scores) {
    const dsa_test::Oracle oracle = dsa_test::compute_oracle(c);
    return dsa_test::check_spec5(c, oracle, topk, 0, indices.data(), scores.data());
}

}  // namespace

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
    r.workspace_bytes = workspace_bytes;
    r.latency_us = median(times);
    r.check = verify(c, w.topk, host_indices, host_scores);
    return r;
}
#endif

}  // namespace dsa_bench
