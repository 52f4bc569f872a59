// The single-device workloads of dsa_bench: named paged-decode batches for the GPU and for the CPU, batches
// of a given shape (--shape), and how each is timed and checked (SPEC section 5).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#if DSA_BENCH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "test_util.hpp"

namespace dsa_bench {

struct Workload {
    std::string name;
    std::vector<int32_t> seq_lens;
    int next_n = 1;
    int heads = 64;
    int page_size = 64;
    int topk = 2048;
    int32_t table_width = 0;  // block-table columns (max_pages); 0: just enough for the longest sequence
};

// The named workloads: sizes for one GPU, and sizes that finish in seconds on a 2-core machine.
std::vector<Workload> gpu_workloads();
std::vector<Workload> cpu_workloads(bool quick);

// "BxL[,BxL...]" -> B sequences of L tokens each, one workload per item, named "BxL" (plus the suffixes
// _next_nN, _kK, _hH, _pP of parameters that differ from the defaults). false, with `error` set, on text
// that is no such list.
bool parse_shapes(const std::string& text, const Workload& parameters, std::vector<Workload>* out, std::string* error);

struct Result {
    std::string name;
    std::string backend;
    int64_t rows = 0;
    int64_t tokens = 0;
    double k_bytes = 0;
    double latency_us = 0;
    double floor_us = 0;  // GPU only
    size_t workspace_bytes = 0;  // GPU only: what dsa_topk_paged_workspace_size asks for
    std::string check;    // "" = PASS
};

// Bytes of K a workload reads: every visible token once (key and scale).
double k_bytes_of(int64_t tokens);

Result run_cpu(const Workload& w, const dsa_test::PagedCase& c, int iterations);
#if DSA_BENCH_CUDA
// Device-to-device copy bandwidth, counting bytes read plus bytes written: the floor's denominator.
double measure_copy_bandwidth(cudaStream_t stream);
Result run_gpu(const Workload& w, const dsa_test::PagedCase& c, int iterations, size_t l2_bytes);
#endif

}  // namespace dsa_bench
