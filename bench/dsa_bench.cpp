// dsa_bench: named workloads of the paged decode top-k on the CPU or one GPU; prints latency, K bandwidth,
// the bandwidth floor measured in the same run, and PASS/FAIL by SPEC section 5.
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
        "  size, for the workloads named BxL.\n");
}

}  // namespace

int main(int argc, char** argv) {
    std::string backend, json_path, plot_path, only;
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
        else {
            print_usage();
            return arg == "--help" || arg == "-h" ? 0 : 2;
        }
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
