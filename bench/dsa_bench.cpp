// dsa_bench, the command line: named workloads (or --shape batches) of the paged decode top-k on the CPU or
// one GPU; prints latency, K bandwidth, the bandwidth floor measured in the same run (GPU) or the CPU
// throughput, and PASS/FAIL by SPEC section 5. With --ragged, the prefill top-k (dsa_topk_ragged, SPEC
// section 2) instead: latency, TFLOP/s and % of the FP8 peak, PASS/FAIL on sampled rows. With --devices,
// the multi-GPU owned-cache path instead.
// The parts: workloads.* (what runs and how it is timed), multi_gpu.* (--devices), plot.* (--plot).
// Exit status: 0 all passed, 1 a check failed, 2 a usage error or a backend that cannot run.
#include <algorithm>
#include <cmath>
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

// The dense FP8 wgmma rate measured on an H200 in issue 13: the default denominator of --ragged's % of peak.
constexpr double kH200Fp8PeakTflops = 1421;

void print_usage(FILE* to) {
    std::fprintf(to,
        "usage: dsa_bench [--backend cpu|gpu] [--quick] [--json FILE] [--plot FILE] [--only NAME[,NAME...]]\n"
        "                 [--iterations N] [--scores] [--sorted] [--input-cache DIR]\n"
        "                 [--shape BxL[,BxL...] [--next-n N] [--topk K] [--heads H] [--page-size P]]\n"
        "  Runs named paged-decode workloads and prints latency, GB/s of K read, and on a GPU the %% of the\n"
        "  bandwidth floor (K bytes over the device copy bandwidth measured in the same run), on the CPU its\n"
        "  throughput (tokens and rows per second); PASS/FAIL by SPEC 5.\n"
        "  Timed calls return indices only, as engines call the operator; --scores asks for the scores too\n"
        "  (then rows that see at most k positions are scored; without it they need no scores), --sorted the\n"
        "  results in rank order (DSA_TOPK_SORTED; the check then checks the order too).\n"
        "  Default backend: gpu when the library has a usable GPU, else cpu (the first line says which, and why).\n"
        "  --only runs the named workloads, on the inputs a full run gives them. --shape runs B sequences of L\n"
        "  tokens per item instead of the named workloads, with next_n (default 1), k (2048), H heads (64) and\n"
        "  page size P (64).\n"
        "  --input-cache DIR keeps each workload's generated inputs in DIR and reads them back in later runs (a\n"
        "  run of several builds over the same workloads draws them once; bench/input_cache.hpp).\n"
        "  --json - writes JSON to stdout. --plot FILE writes an SVG: latency and %% of the floor against context\n"
        "  length, one line per batch size, for the workloads named BxL.\n"
        "       dsa_bench --ragged [--backend cpu|gpu] [--quick] [--json FILE] [--only NAME[,NAME...]]\n"
        "                 [--iterations N] [--scores] [--sorted] [--shape S[,S...]] [--topk K] [--heads H]\n"
        "                 [--fp8-peak TFLOPS]\n"
        "                 [--input-cache DIR]\n"
        "  Prefill (SPEC 2, dsa_topk_ragged): one causal sequence of S query rows over S keys (row r sees keys\n"
        "  [0, r + 1)) for S = 4096, 8192, 16384, 32768, prefill_16384_front (its first 8192 keys' scales x4) and\n"
        "  prefill_chunked_mix (4 sequences of 1000..12000 keys, the last 100%%..25%% of each query rows) on a\n"
        "  GPU; S = 1024..4096 and a quarter-size mix on the CPU;\n"
        "  --quick keeps the smallest, --shape runs the given S instead. --topk (2048) and --heads (64) apply to\n"
        "  every workload. Prints latency, TFLOP/s (2 * H * 128 * the keys of all rows' windows), %% of the FP8\n"
        "  peak (--fp8-peak, default %.0f: the H200's dense FP8 wgmma rate, issue 13) and the workspace;\n"
        "  PASS/FAIL by SPEC 5 on a sample of rows (%lld spread over the call, each sequence's first and last,\n"
        "  the first with k-1, k, k+1 keys).\n"
        "       dsa_bench --devices N1,N2,... [--json FILE] [--iterations N]\n"
        "  Multi-GPU owned-cache path on GPUs 0..N-1 against 1 GPU in the same run: rows-sharded (replicated\n"
        "  cache) dsa_topk throughput, context-sharded (sharded cache) dsa_topk latency, and the replication cost\n"
        "  of dsa_cache_write; host wall-clock medians; PASS = indices bitwise equal to 1 GPU's. Needs GPUs.\n",
        kH200Fp8PeakTflops, (long long)kSampledRows);
}

int usage_error(const std::string& message) {
    std::fprintf(stderr, "dsa_bench: %s\n", message.c_str());
    print_usage(stderr);
    return 2;
}

// What the command line asked for.
struct Options {
    std::string backend, json_path, plot_path, only, devices, shapes, input_cache;
    bool quick = false;
    bool ragged = false;
    Returned returned;  // --scores, --sorted
    int iterations = 0;
    Workload paged_parameters;         // --next-n, --topk, --heads, --page-size
    RaggedWorkload ragged_parameters;  // --topk, --heads
    bool paged_shape_options = false;  // any of --next-n, --topk, --heads, --page-size
    bool paged_only_options = false;   // --next-n or --page-size
    double fp8_peak_tflops = kH200Fp8PeakTflops;
    bool fp8_peak_given = false;
};

bool parse_int(const std::string& text, int* out) {
    char* end = nullptr;
    const long value = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || value < -1000000000L || value > 1000000000L) return false;
    *out = int(value);
    return true;
}

bool parse_positive(const std::string& text, double* out) {
    char* end = nullptr;
    const double value = std::strtod(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !(value > 0) || !std::isfinite(value)) return false;
    *out = value;
    return true;
}

// -1 when the run goes on, else the exit status (0 after --help, 2 after a usage error).
int parse_options(int argc, char** argv, Options* o) {
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            print_usage(stdout);
            return 0;
        }
        if (arg == "--quick" || arg == "--ragged" || arg == "--scores" || arg == "--sorted") {
            (arg == "--quick"    ? o->quick
             : arg == "--ragged" ? o->ragged
             : arg == "--scores" ? o->returned.scores
                                 : o->returned.sorted) = true;
            continue;
        }
        if (arg.rfind("--", 0) != 0) return usage_error("unexpected argument \"" + arg + "\"");
        if (i + 1 >= argc) return usage_error(arg + " needs a value");
        const std::string value = argv[++i];
        int number = 0;
        const bool is_number = parse_int(value, &number);
        if (arg == "--backend") o->backend = value;
        else if (arg == "--json") o->json_path = value;
        else if (arg == "--plot") o->plot_path = value;
        else if (arg == "--only") o->only = value;
        else if (arg == "--devices") o->devices = value;
        else if (arg == "--shape") o->shapes = value;
        else if (arg == "--input-cache") o->input_cache = value;
        else if (arg == "--fp8-peak") {
            if (!parse_positive(value, &o->fp8_peak_tflops))
                return usage_error("--fp8-peak takes a positive number of TFLOP/s, not \"" + value + "\"");
            o->fp8_peak_given = true;
        } else if (arg == "--iterations" || arg == "--next-n" || arg == "--topk" || arg == "--heads" ||
                   arg == "--page-size") {
            if (!is_number) return usage_error(arg + " takes a whole number, not \"" + value + "\"");
            if (arg == "--iterations") o->iterations = number;
            else {
                o->paged_shape_options = true;
                o->paged_only_options |= arg == "--next-n" || arg == "--page-size";
                (arg == "--next-n" ? o->paged_parameters.next_n
                 : arg == "--topk" ? o->paged_parameters.topk
                 : arg == "--heads" ? o->paged_parameters.heads
                                    : o->paged_parameters.page_size) = number;
                if (arg == "--topk") o->ragged_parameters.topk = number;
                if (arg == "--heads") o->ragged_parameters.heads = number;
            }
        } else {
            return usage_error("unknown option " + arg);
        }
    }
    return -1;
}

// The options that belong to one mode only: "" when the combination is fine, else what is wrong.
std::string mode_conflict(const Options& o) {
    if (o.ragged) {
        if (!o.devices.empty()) return "--devices runs the multi-GPU paged path: not with --ragged";
        if (o.paged_only_options) return "--next-n and --page-size are paged-decode options: not with --ragged";
        if (!o.plot_path.empty()) return "--plot draws the paged workloads named BxL: not with --ragged";
    } else {
        if (o.fp8_peak_given) return "--fp8-peak goes with --ragged";
        if (o.devices.empty() && o.paged_shape_options && o.shapes.empty())
            return "--next-n, --topk, --heads and --page-size go with --shape";
    }
    if (!o.shapes.empty() && !o.only.empty()) return "--only picks a named workload: not with --shape";
    if (!o.devices.empty() && !o.input_cache.empty())
        return "--input-cache keeps single-device workloads' inputs: not with --devices";
    if (!o.devices.empty() && (o.returned.scores || o.returned.sorted))
        return "--scores and --sorted shape single-device calls: not with --devices";
    return "";
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

// Whether the library accepts a workload's parameters, asked through a CPU context's workspace-size query
// (so that the rules are the library's own): "" when it does, else its message.
std::string library_verdict(dsa_status_t status) {
    return status == DSA_STATUS_SUCCESS ? "" : dsa_last_error_message();
}

std::string check_parameters(const Workload& w) {
    dsa_test::Context ctx;
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    params.num_heads = w.heads;
    params.page_size = w.page_size;
    params.topk = w.topk;
    params.next_n = w.next_n;
    dsa_paged_inputs_t inputs = DSA_PAGED_INPUTS_INIT;
    size_t bytes = 0;
    return library_verdict(dsa_topk_paged_workspace_size(ctx.get(), &params, &inputs, &bytes));
}

std::string check_parameters(const RaggedWorkload& w) {
    dsa_test::Context ctx;
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    params.num_heads = w.heads;
    params.topk = w.topk;
    dsa_ragged_inputs_t inputs = DSA_RAGGED_INPUTS_INIT;
    size_t bytes = 0;
    return library_verdict(dsa_topk_ragged_workspace_size(ctx.get(), &params, &inputs, &bytes));
}

// Resolves o->backend to "cpu" or "gpu" and prints which, and why: first, so that a CPU run on a GPU
// machine is never silent. Returns 0, or the exit status when it cannot run.
int choose_backend(Options* o) {
    std::string why;
    if (o->backend.empty()) {
        const std::string reason = gpu_unusable_reason();
        o->backend = reason.empty() ? "gpu" : "cpu";
        why = reason.empty() ? "default: GPU 0 is usable" : "default without a usable GPU (" + reason + ")";
    } else if (o->backend == "gpu") {
        const std::string reason = gpu_unusable_reason();
        if (!reason.empty()) {
            std::fprintf(stderr, "dsa_bench: --backend gpu, but GPU 0 cannot be used: %s\n", reason.c_str());
            return 2;
        }
        why = "requested";
    } else if (o->backend == "cpu") {
        why = "requested";
    } else {
        return usage_error("--backend is cpu or gpu, not \"" + o->backend + "\"");
    }
    std::printf("backend: %s (%s)\n", o->backend.c_str(), why.c_str());
    return 0;
}

// What a run's printed and written figures depend on besides the results.
struct RunInfo {
    bool gpu = false;
    bool ragged = false;
    std::string device_name = "cpu";
    double copy_bandwidth = 0;  // GPU only: bytes per second, read + write
    size_t l2_bytes = 0;        // GPU only
    double fp8_peak_tflops = 0;
    int iterations = 0;
    Returned returned;          // --scores, --sorted
    std::string input_cache;    // --input-cache: "" for none
};

// The GPU's name, L2 and copy bandwidth, printed (nothing on the CPU).
void describe_gpu([[maybe_unused]] RunInfo* info) {
#if DSA_BENCH_CUDA
    cudaDeviceProp prop;
    cuda_ok(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    info->device_name = prop.name;
    info->l2_bytes = size_t(prop.l2CacheSize);
    cudaStream_t stream;
    cuda_ok(cudaStreamCreate(&stream), "cudaStreamCreate");
    info->copy_bandwidth = measure_copy_bandwidth(stream);
    cudaStreamDestroy(stream);
    std::printf("device: %s, %d SMs, L2 %zu MB, measured copy bandwidth %.0f GB/s (read + write)\n", prop.name,
                prop.multiProcessorCount, info->l2_bytes >> 20, info->copy_bandwidth / 1e9);
#endif
}

// Keeps the workloads named in `only` (comma-separated, in the workloads' own order; all of them when it is
// empty); false, after listing the valid names, when a name matches no workload.
template <class W>
bool keep_only(std::vector<W>* workloads, const std::string& only, const Options& o) {
    if (only.empty()) return true;
    std::vector<std::string> wanted;
    for_each_item(only, [&](const std::string& name) {
        wanted.push_back(name);
        return true;
    });
    std::string names;
    for (const W& w : *workloads) names += " " + w.name;
    for (const std::string& name : wanted) {
        auto named = [&](const W& w) { return w.name == name; };
        if (std::none_of(workloads->begin(), workloads->end(), named)) {
            std::fprintf(stderr, "dsa_bench: --only %s: no such workload on the %s backend%s; valid names:%s\n",
                         name.c_str(), o.backend.c_str(), o.quick ? " with --quick" : "", names.c_str());
            return false;
        }
    }
    std::vector<W> picked;
    for (const W& w : *workloads)
        if (std::find(wanted.begin(), wanted.end(), w.name) != wanted.end()) picked.push_back(w);
    *workloads = picked;
    return true;
}

// run()'s result, or a FAIL whose check is the exception's message: one workload failing stops no other.
template <class Run>
Result caught(const std::string& backend, Run run) {
    try {
        return run();
    } catch (const std::exception& e) {
        Result r;
        r.backend = backend;
        r.check = e.what();
        return r;
    }
}

// Where a workload's inputs came from, on stderr, when a cache is in use.
void report_inputs(const RunInfo& info, bool cached) {
    if (!info.input_cache.empty())
        std::fprintf(stderr, "    inputs %s\n", cached ? "read from the cache" : "drawn, and written to the cache");
}

Result run_paged_workload(const Workload& w, const RunInfo& info) {
    bool cached = false;
    const dsa_test::PagedCase c = paged_case_of(w, info.input_cache, &cached);
    report_inputs(info, cached);
    Result r = caught(info.gpu ? "gpu" : "cpu", [&] {
#if DSA_BENCH_CUDA
        if (info.gpu) return run_gpu(w, c, info.iterations, info.l2_bytes, info.returned);
#endif
        return run_cpu(w, c, info.iterations, info.returned);
    });
    r.name = w.name;
    r.rows = c.rows();
    for (int32_t len : w.seq_lens) r.tokens += len;
    r.k_bytes = k_bytes_of(r.tokens);
    if (info.gpu && info.copy_bandwidth > 0) r.floor_us = r.k_bytes / info.copy_bandwidth * 1e6;
    return r;
}

Result run_ragged_workload(const RaggedWorkload& w, const RunInfo& info) {
    bool cached = false;
    const dsa_test::RaggedCase c = ragged_case_of(w, info.input_cache, &cached);
    report_inputs(info, cached);
    Result r = caught(info.gpu ? "gpu" : "cpu", [&] {
#if DSA_BENCH_CUDA
        if (info.gpu) return run_ragged_gpu(w, c, info.iterations, info.l2_bytes, info.returned);
#endif
        return run_ragged_cpu(w, c, info.iterations, info.returned);
    });
    r.name = w.name;
    r.rows = c.rows();
    r.tokens = c.num_keys();
    r.flops = ragged_flops(c);
    return r;
}

template <class W, class RunOne>
std::vector<Result> run_all(const std::vector<W>& workloads, const RunInfo& info, RunOne run_one) {
    std::vector<Result> results;
    for (size_t i = 0; i < workloads.size(); ++i) {
        std::fprintf(stderr, "[%zu/%zu] %s ...\n", i + 1, workloads.size(), workloads[i].name.c_str());
        results.push_back(run_one(workloads[i], info));
    }
    return results;
}

std::string check_text(const Result& r) {
    if (!r.check.empty()) return "FAIL: " + r.check;
    if (r.checked_rows > 0 && r.checked_rows < r.rows)
        return "PASS (sampled " + std::to_string(r.checked_rows) + " of " + std::to_string(r.rows) + " rows)";
    return "PASS";
}

double tflops(const Result& r) { return r.latency_us > 0 ? r.flops / (r.latency_us * 1e6) : 0.0; }
double peak_percent(const Result& r, const RunInfo& info) { return 100.0 * tflops(r) / info.fp8_peak_tflops; }

void print_paged_table(const std::vector<Result>& results, bool gpu) {
    if (gpu) {
        std::printf("\n%-20s %-4s %6s %9s %11s %8s %9s %9s %8s %9s %8s  %s\n", "workload", "dev", "rows", "tokens",
                    "latency_us", "b2b_us", "GB/s", "floor_us", "%floor", "ws_MB", "host_us", "check");
    } else {
        std::printf("\n%-20s %-4s %6s %9s %11s %9s %9s %9s  %s\n", "workload", "dev", "rows", "tokens", "latency_us",
                    "GB/s", "Mtok/s", "rows/s", "check");
    }
    for (const Result& r : results) {
        const double seconds = r.latency_us * 1e-6;
        const double gbs = r.latency_us > 0 ? r.k_bytes / (r.latency_us * 1e3) : 0.0;
        const std::string check = check_text(r);
        if (gpu) {
            const double pct = r.latency_us > 0 && r.floor_us > 0 ? 100.0 * r.floor_us / r.latency_us : 0.0;
            std::printf("%-20s %-4s %6lld %9lld %11.1f %8.1f %9.1f %9.1f %7.0f%% %9.1f %8.1f  %s\n", r.name.c_str(),
                        r.backend.c_str(), (long long)r.rows, (long long)r.tokens, r.latency_us, r.back_to_back_us, gbs,
                        r.floor_us, pct, double(r.workspace_bytes) / (1 << 20), r.host_call_us, check.c_str());
        } else {
            const double mtoks = seconds > 0 ? double(r.tokens) / seconds / 1e6 : 0.0;
            const double rows = seconds > 0 ? double(r.rows) / seconds : 0.0;
            std::printf("%-20s %-4s %6lld %9lld %11.1f %9.3f %9.2f %9.0f  %s\n", r.name.c_str(), r.backend.c_str(),
                        (long long)r.rows, (long long)r.tokens, r.latency_us, gbs, mtoks, rows, check.c_str());
        }
    }
}

void print_ragged_table(const std::vector<Result>& results, const RunInfo& info) {
    std::printf("\n%-26s %-4s %6s %6s %11s %9s %9s %9s%s  %s\n", "workload", "dev", "S", "N", "latency_us", "TFLOP/s",
                "%fp8peak", "ws_MB", info.gpu ? "  host_us    b2b_us" : "", "check");
    for (const Result& r : results) {
        char host[32] = "";
        if (info.gpu) std::snprintf(host, sizeof host, " %8.1f %9.1f", r.host_call_us, r.back_to_back_us);
        std::printf("%-26s %-4s %6lld %6lld %11.1f %9.3f %8.2f%% %9.1f%s  %s\n", r.name.c_str(), r.backend.c_str(),
                    (long long)r.rows, (long long)r.tokens, r.latency_us, tflops(r), peak_percent(r, info),
                    double(r.workspace_bytes) / (1 << 20), host, check_text(r).c_str());
    }
}

std::string timing_of(const RunInfo& info) {
    if (!info.gpu) return "median wall clock";
    return std::string("median of CUDA-event-timed CUDA-graph replays, ") +
           (info.ragged ? "inputs rotated (copies past 3x the L2, one when a copy is past it)" : "K cache rotated") +
           "; latency_us: one call a replay, from an idle GPU; back_to_back_us: per call, " +
           std::to_string(kBackToBackCalls) + " calls a replay";
}

// What each timed call asks for.
std::string outputs_of(const RunInfo& info) {
    const std::string values = info.returned.scores ? "indices and scores" : "indices";
    return info.returned.sorted ? values + ", sorted" : values;
}

// One result's JSON fields after the common ones.
std::string mode_fields(const Result& r, const RunInfo& info) {
    char text[512];
    if (info.ragged) {
        std::snprintf(text, sizeof text,
                      "\"S\": %lld, \"N\": %lld, \"flops\": %.0f, \"tflops\": %.3f, \"fp8_peak_pct\": %.3f, "
                      "\"checked_rows\": %lld",
                      (long long)r.rows, (long long)r.tokens, r.flops, tflops(r), peak_percent(r, info),
                      (long long)r.checked_rows);
    } else {
        std::snprintf(text, sizeof text, "\"rows\": %lld, \"tokens\": %lld, \"k_bytes\": %.0f, \"floor_us\": %.2f",
                      (long long)r.rows, (long long)r.tokens, r.k_bytes, r.floor_us);
    }
    return text;
}

bool write_json(const std::string& path, const std::vector<Result>& results, const RunInfo& info) {
    FILE* f = path == "-" ? stdout : std::fopen(path.c_str(), "w");
    if (!f) return false;
    std::fprintf(f, "{\n  \"device\": \"%s\",\n  \"library_version\": %d,\n  \"mode\": \"%s\",\n",
                 json_escape(info.device_name).c_str(), dsa_version(), info.ragged ? "ragged" : "paged");
    std::fprintf(f, "  \"copy_bandwidth_gbs\": %.1f,\n", info.copy_bandwidth / 1e9);
    if (info.ragged)
        std::fprintf(f, "  \"fp8_peak_tflops\": %.1f,\n  \"check\": \"SPEC 5 on sampled rows (checked_rows of S)\",\n",
                     info.fp8_peak_tflops);
    std::fprintf(f, "  \"outputs\": \"%s\",\n", outputs_of(info).c_str());
    std::fprintf(f, "  \"timing\": \"%s\",\n  \"results\": [\n", timing_of(info).c_str());
    for (size_t i = 0; i < results.size(); ++i) {
        const Result& r = results[i];
        char host[80] = "";
        if (info.gpu)
            std::snprintf(host, sizeof host, "\"back_to_back_us\": %.2f, \"host_call_us\": %.2f, ", r.back_to_back_us,
                          r.host_call_us);
        std::fprintf(f,
                     "    {\"workload\": \"%s\", \"backend\": \"%s\", %s, \"latency_us\": %.2f, %s"
                     "\"workspace_bytes\": %zu, \"pass\": %s, \"check\": \"%s\"}%s\n",
                     json_escape(r.name).c_str(), r.backend.c_str(), mode_fields(r, info).c_str(), r.latency_us, host,
                     r.workspace_bytes, r.check.empty() ? "true" : "false", json_escape(r.check).c_str(),
                     i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    return f == stdout || std::fclose(f) == 0;
}

// Each workload's seed is its place in the list that names it (the --shape list or the named workloads), given
// before --quick and --only select, so that a name always stands for the same inputs.
template <class W>
void seed_in_order(std::vector<W>* workloads) {
    for (size_t i = 0; i < workloads->size(); ++i) (*workloads)[i].seed = int(i);
}

// The paged workloads this run measures (after `o`'s --shape, --quick and --only); false after a usage error.
bool paged_workloads(const Options& o, bool gpu, std::vector<Workload>* out) {
    if (o.shapes.empty()) *out = gpu ? gpu_workloads() : cpu_workloads(o.quick);  // else parsed before the backend
    seed_in_order(out);
    if (!o.shapes.empty()) return true;
    if (o.quick && gpu) out->resize(3);
    return keep_only(out, o.only, o);
}

bool ragged_workloads(const Options& o, bool gpu, std::vector<RaggedWorkload>* out) {
    if (o.shapes.empty()) *out = gpu ? ragged_gpu_workloads(o.ragged_parameters) : ragged_cpu_workloads(o.quick, o.ragged_parameters);
    seed_in_order(out);
    if (!o.shapes.empty()) return true;
    if (o.quick) out->resize(1);  // the smallest comes first
    return keep_only(out, o.only, o);
}

int run(int argc, char** argv) {
    Options o;
    const int parsed = parse_options(argc, argv, &o);
    if (parsed >= 0) return parsed;
    const std::string conflict = mode_conflict(o);
    if (!conflict.empty()) return usage_error(conflict);
    if (!o.devices.empty()) {
        std::vector<int> counts;
        if (!parse_device_counts(o.devices, &counts)) return usage_error("--devices takes counts like 1,2,4");
        return run_multi_gpu(counts, o.json_path, o.iterations);
    }
    // Shapes and parameters are checked before anything runs, so that a usage error costs nothing.
    std::vector<Workload> paged;
    std::vector<RaggedWorkload> ragged;
    std::string error;
    if (o.ragged) {
        if (!o.shapes.empty() && !parse_ragged_shapes(o.shapes, o.ragged_parameters, &ragged, &error))
            return usage_error("--shape: " + error);
        const std::string rejected = check_parameters(o.ragged_parameters);
        if (!rejected.empty()) return usage_error("--topk / --heads rejected by the library: " + rejected);
    } else if (!o.shapes.empty()) {
        if (!parse_shapes(o.shapes, o.paged_parameters, &paged, &error)) return usage_error("--shape: " + error);
        const std::string rejected = check_parameters(o.paged_parameters);
        if (!rejected.empty()) return usage_error("--shape parameters rejected by the library: " + rejected);
    }

    const int backend_status = choose_backend(&o);
    if (backend_status != 0) return backend_status;
    RunInfo info;
    info.gpu = o.backend == "gpu";
    info.ragged = o.ragged;
    info.fp8_peak_tflops = o.fp8_peak_tflops;
    info.returned = o.returned;
    info.input_cache = o.input_cache;
    info.iterations = o.iterations > 0 ? o.iterations : info.gpu ? 50 : (o.quick ? 3 : 5);
    if (info.gpu) describe_gpu(&info);
    std::printf("timed calls return: %s\n", outputs_of(info).c_str());
    if (o.ragged) {
        std::printf("FP8 peak: %g TFLOP/s (%s); check: SPEC 5 on sampled rows, not every row\n", info.fp8_peak_tflops,
                    o.fp8_peak_given ? "--fp8-peak" : "default: the H200's dense FP8 wgmma rate, issue 13");
    }

    std::vector<Result> results;
    if (o.ragged) {
        if (!ragged_workloads(o, info.gpu, &ragged)) return 2;
        results = run_all(ragged, info, run_ragged_workload);
        print_ragged_table(results, info);
    } else {
        if (!paged_workloads(o, info.gpu, &paged)) return 2;
        results = run_all(paged, info, run_paged_workload);
        print_paged_table(results, info.gpu);
    }
    if (!o.json_path.empty() && !write_json(o.json_path, results, info)) {
        std::fprintf(stderr, "dsa_bench: cannot write %s\n", o.json_path.c_str());
        return 2;
    }
    if (!o.plot_path.empty() && !write_plot(o.plot_path, results, info.device_name)) {
        std::fprintf(stderr, "dsa_bench: cannot write %s\n", o.plot_path.c_str());
        return 2;
    }
    const auto failed = [](const Result& r) { return !r.check.empty(); };
    const int failures = int(std::count_if(results.begin(), results.end(), failed));
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
