// dsa_bench, the command line: named workloads (or --shape batches) of the paged decode top-k on the CPU or
// one GPU; prints latency, K bandwidth, the bandwidth floor measured in the same run (GPU) or the CPU
// throughput, and PASS/FAIL by SPEC section 5. With --devices, the multi-GPU owned-cache path instead.
// The parts: workloads.* (what runs and how it is timed), multi_gpu.* (--devices), plot.* (--plot).
// Exit status: 0 all passed, 1 a check failed, 2 a usage error or a backend that cannot run.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#if DSA_BENCH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "bench_util.hpp"
#include "dsa_indexer.h"
#include "multi_gpu.hpp"
#include "plot.hpp"
#include "test_util.hpp"
#include "workloads.hpp"

namespace {

using namespace dsa_bench;

void print_usage(FILE* to) {
    std::fprintf(to,
        "usage: dsa_bench [--backend cpu|gpu] [--quick] [--json FILE] [--plot FILE] [--only NAME] [--iterations N]\n"
        "                 [--shape BxL[,BxL...] [--next-n N] [--topk K] [--heads H] [--page-size P]]\n"
        "  Runs named paged-decode workloads and prints latency, GB/s of K read, and on a GPU the %% of the\n"
        "  bandwidth floor (K bytes over the device copy bandwidth measured in the same run), on the CPU its\n"
        "  throughput (tokens and rows per second); PASS/FAIL by SPEC 5.\n"
        "  Default backend: gpu when the library has a usable GPU, else cpu (the first line says which, and why).\n"
        "  --only NAME runs one named workload. --shape runs B sequences of L tokens per item instead of the named\n"
        "  workloads, with next_n (default 1), k (2048), H heads (64) and page size P (64).\n"
        "  --json - writes JSON to stdout. --plot FILE writes an SVG: latency and %% of the floor against context\n"
        "  length, one line per batch size, for the workloads named BxL.\n"
        "       dsa_bench --devices N1,N2,... [--json FILE] [--iterations N]\n"
        "  Multi-GPU owned-cache path on GPUs 0..N-1 against 1 GPU in the same run: rows-sharded (replicated\n"
        "  cache) dsa_topk throughput, context-sharded (sharded cache) dsa_topk latency, and the replication cost\n"
        "  of dsa_cache_write; host wall-clock medians; PASS = indices bitwise equal to 1 GPU's. Needs GPUs.\n");
}

int usage_error(const std::string& message) {
    std::fprintf(stderr, "dsa_bench: %s\n", message.c_str());
    print_usage(stderr);
    return 2;
}

// "" when GPU 0 gives a context, else the library's reason.
std::string gpu_unusable_reason() {
    const int32_t device = 0;
    dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
    config.device_ids = &device;
    config.num_devices = 1;
    dsa_context_t probe = nullptr;
    const dsa_status_t status = dsa_context_create(&config, &probe);
    if (status == DSA_STATUS_SUCCESS) {
        dsa_context_destroy(probe);
        return "";
    }
    return std::string(dsa_status_string(status)) + ": " + dsa_last_error_message();
}

// "" when the library accepts these parameters (asked through a CPU context's workspace-size query, so
// the rules are the library's own), else its message.
std::string check_parameters(const Workload& w) {
    dsa_test::Context ctx;
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    params.num_heads = w.heads;
    params.page_size = w.page_size;
    params.topk = w.topk;
    params.next_n = w.next_n;
    dsa_paged_inputs_t inputs = DSA_PAGED_INPUTS_INIT;
    size_t bytes = 0;
    if (dsa_topk_paged_workspace_size(ctx.get(), &params, &inputs, &bytes) == DSA_STATUS_SUCCESS) return "";
    return dsa_last_error_message();
}

bool parse_int(const std::string& text, int* out) {
    char* end = nullptr;
    const long value = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || value < -1000000000L || value > 1000000000L) return false;
    *out = int(value);
    return true;
}

void print_table(const std::vector<Result>& results, bool gpu) {
    if (gpu) {
        std::printf("\n%-20s %-4s %6s %9s %11s %9s %9s %8s %9s  %s\n", "workload", "dev", "rows", "tokens", "latency_us",
                    "GB/s", "floor_us", "%floor", "ws_MB", "check");
    } else {
        std::printf("\n%-20s %-4s %6s %9s %11s %9s %9s %9s  %s\n", "workload", "dev", "rows", "tokens", "latency_us",
                    "GB/s", "Mtok/s", "rows/s", "check");
    }
    for (const Result& r : results) {
        const double seconds = r.latency_us * 1e-6;
        const double gbs = r.latency_us > 0 ? r.k_bytes / (r.latency_us * 1e3) : 0.0;
        const std::string check = r.check.empty() ? "PASS" : "FAIL: " + r.check;
        if (gpu) {
            const double pct = r.latency_us > 0 && r.floor_us > 0 ? 100.0 * r.floor_us / r.latency_us : 0.0;
            std::printf("%-20s %-4s %6lld %9lld %11.1f %9.1f %9.1f %7.0f%% %9.1f  %s\n", r.name.c_str(),
                        r.backend.c_str(), (long long)r.rows, (long long)r.tokens, r.latency_us, gbs, r.floor_us, pct,
                        double(r.workspace_bytes) / (1 << 20), check.c_str());
        } else {
            const double mtoks = seconds > 0 ? double(r.tokens) / seconds / 1e6 : 0.0;
            const double rows = seconds > 0 ? double(r.rows) / seconds : 0.0;
            std::printf("%-20s %-4s %6lld %9lld %11.1f %9.3f %9.2f %9.0f  %s\n", r.name.c_str(), r.backend.c_str(),
                        (long long)r.rows, (long long)r.tokens, r.latency_us, gbs, mtoks, rows, check.c_str());
        }
    }
}

bool write_json(const std::string& path, const std::vector<Result>& results, const std::string& device_name,
                double copy_bandwidth, bool gpu) {
    FILE* f = path == "-" ? stdout : std::fopen(path.c_str(), "w");
    if (!f) return false;
    std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"library_version\": %d,\n  \"copy_bandwidth_gbs\": %.1f,\n",
                 json_escape(device_name).c_str(), dsa_version(), copy_bandwidth / 1e9);
    std::fprintf(f, "  \"timing\": \"%s\",\n  \"results\": [\n",
                 gpu ? "median of CUDA-event-timed CUDA-graph replays, K cache rotated" : "median wall clock");
    for (size_t i = 0; i < results.size(); ++i) {
        const Result& r = results[i];
        std::fprintf(f,
                     "    {\"workload\": \"%s\", \"backend\": \"%s\", \"rows\": %lld, \"tokens\": %lld, "
                     "\"latency_us\": %.2f, \"k_bytes\": %.0f, \"floor_us\": %.2f, \"workspace_bytes\": %zu, "
                     "\"pass\": %s, \"check\": \"%s\"}%s\n",
                     json_escape(r.name).c_str(), r.backend.c_str(), (long long)r.rows, (long long)r.tokens,
                     r.latency_us, r.k_bytes, r.floor_us, r.workspace_bytes, r.check.empty() ? "true" : "false",
                     json_escape(r.check).c_str(), i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    return f == stdout || std::fclose(f) == 0;
}

int run(int argc, char** argv) {
    std::string backend, json_path, plot_path, only, devices, shapes;
    bool quick = false;
    int iterations = 0;
    Workload shape_parameters;
    bool shape_options = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            print_usage(stdout);
            return 0;
        }
        if (arg == "--quick") {
            quick = true;
            continue;
        }
        if (arg.rfind("--", 0) != 0) return usage_error("unexpected argument \"" + arg + "\"");
        if (i + 1 >= argc) return usage_error(arg + " needs a value");
        const std::string value = argv[++i];
        int number = 0;
        const bool is_number = parse_int(value, &number);
        if (arg == "--backend") backend = value;
        else if (arg == "--json") json_path = value;
        else if (arg == "--plot") plot_path = value;
        else if (arg == "--only") only = value;
        else if (arg == "--devices") devices = value;
        else if (arg == "--shape") shapes = value;
        else if (arg == "--iterations" || arg == "--next-n" || arg == "--topk" || arg == "--heads" ||
                 arg == "--page-size") {
            if (!is_number) return usage_error(arg + " takes a whole number, not \"" + value + "\"");
            if (arg == "--iterations") iterations = number;
            else {
                shape_options = true;
                (arg == "--next-n" ? shape_parameters.next_n
                 : arg == "--topk" ? shape_parameters.topk
                 : arg == "--heads" ? shape_parameters.heads
                                    : shape_parameters.page_size) = number;
            }
        } else {
            return usage_error("unknown option " + arg);
        }
    }
    if (!devices.empty()) {
        std::vector<int> counts;
        if (!parse_device_counts(devices, &counts)) return usage_error("--devices takes counts like 1,2,4");
        return run_multi_gpu(counts, json_path, iterations);
    }
    if (shape_options && shapes.empty()) return usage_error("--next-n, --topk, --heads and --page-size go with --shape");
    if (!shapes.empty() && !only.empty()) return usage_error("--only picks a named workload: not with --shape");
    std::vector<Workload> shape_workloads;
    if (!shapes.empty()) {
        std::string error;
        if (!parse_shapes(shapes, shape_parameters, &shape_workloads, &error)) return usage_error("--shape: " + error);
        const std::string rejected = check_parameters(shape_parameters);
        if (!rejected.empty()) return usage_error("--shape parameters rejected by the library: " + rejected);
    }

    // Which backend runs, and why: printed first, so that a CPU run on a GPU machine is never silent.
    std::string why;
    if (backend.empty()) {
        const std::string reason = gpu_unusable_reason();
        backend = reason.empty() ? "gpu" : "cpu";
        why = reason.empty() ? "default: GPU 0 is usable" : "default without a usable GPU (" + reason + ")";
    } else if (backend == "gpu") {
        const std::string reason = gpu_unusable_reason();
        if (!reason.empty()) {
            std::fprintf(stderr, "dsa_bench: --backend gpu, but GPU 0 cannot be used: %s\n", reason.c_str());
            return 2;
        }
        why = "requested";
    } else if (backend == "cpu") {
        why = "requested";
    } else {
        return usage_error("--backend is cpu or gpu, not \"" + backend + "\"");
    }
    const bool gpu = backend == "gpu";
    std::printf("backend: %s (%s)\n", backend.c_str(), why.c_str());
    if (iterations <= 0) iterations = gpu ? 50 : (quick ? 3 : 5);

    std::string device_name = "cpu";
    double copy_bandwidth = 0;
    [[maybe_unused]] size_t l2_bytes = 0;  // GPU only
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
    std::vector<Workload> workloads = !shape_workloads.empty() ? shape_workloads
                                      : gpu                     ? gpu_workloads()
                                                                : cpu_workloads(quick);
    if (quick && gpu && shape_workloads.empty()) workloads.resize(3);
    if (!only.empty()) {
        std::vector<Workload> picked;
        std::string names;
        for (const Workload& w : workloads) {
            if (w.name == only) picked.push_back(w);
            names += " " + w.name;
        }
        if (picked.empty()) {
            std::fprintf(stderr, "dsa_bench: --only %s: no such workload on the %s backend%s; valid names:%s\n",
                         only.c_str(), backend.c_str(), quick ? " with --quick" : "", names.c_str());
            return 2;
        }
        workloads = picked;
    }
    std::vector<Result> results;
    int failures = 0;
    for (size_t wi = 0; wi < workloads.size(); ++wi) {
        const Workload& w = workloads[wi];
        std::fprintf(stderr, "[%zu/%zu] %s ...\n", wi + 1, workloads.size(), w.name.c_str());
        dsa_test::PagedLayout layout;
        layout.heads = w.heads;
        layout.page_size = w.page_size;
        layout.next_n = w.next_n;
        if (w.table_width > 0) {
            const int32_t longest = *std::max_element(w.seq_lens.begin(), w.seq_lens.end());
            layout.unused_columns = std::max(1, w.table_width - (longest + w.page_size - 1) / w.page_size);
        }
        dsa_test::PagedCase c(layout, w.seq_lens, 1234 + wi);
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
        r.k_bytes = k_bytes_of(r.tokens);
        if (gpu && copy_bandwidth > 0) r.floor_us = r.k_bytes / copy_bandwidth * 1e6;
        failures += r.check.empty() ? 0 : 1;
        results.push_back(r);
    }

    print_table(results, gpu);
    if (!json_path.empty() && !write_json(json_path, results, device_name, copy_bandwidth, gpu)) {
        std::fprintf(stderr, "dsa_bench: cannot write %s\n", json_path.c_str());
        return 2;
    }
    if (!plot_path.empty() && !write_plot(plot_path, results, device_name)) {
        std::fprintf(stderr, "dsa_bench: cannot write %s\n", plot_path.c_str());
        return 2;
    }
    std::printf("dsa_bench: %d passed, %d failed\n", int(results.size()) - failures, failures);
    return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "dsa_bench: %s\n", e.what());
        return 2;
    }
}
