// The single-device workloads of dsa_bench: named paged-decode batches (SPEC section 1) and ragged prefill
// calls (SPEC section 2, --ragged) for the GPU and for the CPU, workloads of a given shape (--shape), and how
// each is timed and checked (SPEC section 5).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#if DSA_BENCH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "test_util.hpp"

namespace dsa_bench {

constexpr int kDefaultHeads = 64;
constexpr int kDefaultTopk = 2048;
// A ragged call's check covers this many rows spread over the call, plus the first and last row of each
// sequence and the first rows whose windows hold k - 1, k and k + 1 keys: the float64 oracle of every row of
// a long prefill would take hours on the host.
constexpr int64_t kSampledRows = 64;

struct Workload {
    std::string name;
    std::vector<int32_t> seq_lens;
    int next_n = 1;
    int heads = kDefaultHeads;
    int page_size = 64;
    int topk = kDefaultTopk;
    int32_t table_width = 0;  // block-table columns (max_pages); 0: just enough for the longest sequence
    int seed = 0;             // its inputs' seed: its place in the list that names it, however a run selects it
};

// The named workloads: sizes for one GPU, and sizes that finish in seconds on a 2-core machine.
std::vector<Workload> gpu_workloads();
std::vector<Workload> cpu_workloads(bool quick);

// "BxL[,BxL...]" -> B sequences of L tokens each, one workload per item, named "BxL" (plus the suffixes
// _next_nN, _kK, _hH, _pP of parameters that differ from the defaults). false, with `error` set, on text
// that is no such list.
bool parse_shapes(const std::string& text, const Workload& parameters, std::vector<Workload>* out, std::string* error);

// A ragged prefill call: sequences packed one after another in K, sequence i holding key_lens[i] keys of
// which the last query_lens[i] are query rows, each seeing its sequence's keys up to and including itself.
struct RaggedWorkload {
    std::string name;
    std::vector<int32_t> key_lens;
    std::vector<int32_t> query_lens;
    int heads = kDefaultHeads;
    int topk = kDefaultTopk;
    int seed = 0;  // as Workload::seed
    // The first front_keys keys of K get 4x their scale, so every row that sees them has its best k among
    // them (relevance at the front, e.g. a long shared prompt): the inputs on which an estimate of a long
    // row's k-th best taken from its first keys fails.
    int32_t front_keys = 0;
};

// The named prefill workloads: one causal sequence of S = N tokens per size, the 16384 one again with its
// first half front-loaded (front_keys), and a chunked-prefill mix on a GPU; on the CPU, sizes that finish in
// seconds on 2 cores (quick: the smallest only). Each with `parameters`' heads and topk (names carry _kK / _hH
// where they differ from the defaults).
std::vector<RaggedWorkload> ragged_gpu_workloads(const RaggedWorkload& parameters);
std::vector<RaggedWorkload> ragged_cpu_workloads(bool quick, const RaggedWorkload& parameters);

// "S[,S...]" -> one causal sequence of S query rows over S keys per item, named "prefill_S" plus suffixes as
// above. false, with `error` set, on text that is no such list.
bool parse_ragged_shapes(const std::string& text, const RaggedWorkload& parameters, std::vector<RaggedWorkload>* out,
                         std::string* error);

// The case of a workload, with SPEC section 6 inputs drawn from its seed, or read from the file a run with the
// same workload wrote in `input_cache` (bench/input_cache.hpp; "": drawn, no file); *cached says which.
dsa_test::PagedCase paged_case_of(const Workload& w, const std::string& input_cache = {}, bool* cached = nullptr);
dsa_test::RaggedCase ragged_case_of(const RaggedWorkload& w, const std::string& input_cache = {},
                                    bool* cached = nullptr);

// GPU: the back-to-back timing's calls per CUDA graph (workloads.cpp's header comment).
constexpr int kBackToBackCalls = 10;

struct Result {
    std::string name;
    std::string backend;
    int64_t rows = 0;
    int64_t tokens = 0;  // visible tokens (paged), keys N (ragged)
    double k_bytes = 0;  // paged only
    double latency_us = 0;       // a single call from an idle GPU (GPU: graph replay, launch included)
    double back_to_back_us = 0;  // GPU: per call, calls following each other in one graph (no launch gap)
    double floor_us = 0;  // paged, GPU only
    double flops = 0;     // ragged only: 2 * H * D * (the sum of the rows' window lengths)
    int64_t checked_rows = 0;  // ragged only: the rows the oracle checked, a sample (0 when the call failed)
    size_t workspace_bytes = 0;  // what dsa_topk_{paged,ragged}_workspace_size asks for (0 on the CPU)
    double host_call_us = 0;     // GPU: the median host time of an eager call, until it returns (work enqueued)
    std::string check;    // "" = PASS
};

// Bytes of K a workload reads: every visible token once (key and scale).
double k_bytes_of(int64_t tokens);
// Multiply-adds counted as 2 FLOPs: every row scores its window with H dot products of D.
double ragged_flops(const dsa_test::RaggedCase& c);

// What a timed call asks for besides the indices (SPEC section 1): each index's score (engines take the indices
// alone; rows that see at most k positions then need no scores at all), and the results in rank order.
struct Returned {
    bool scores = false;  // --scores
    bool sorted = false;  // --sorted: DSA_TOPK_SORTED
    uint32_t flags() const { return sorted ? DSA_TOPK_SORTED : 0u; }
};

Result run_cpu(const Workload& w, const dsa_test::PagedCase& c, int iterations, const Returned& returned);
Result run_ragged_cpu(const RaggedWorkload& w, const dsa_test::RaggedCase& c, int iterations,
                      const Returned& returned);
#if DSA_BENCH_CUDA
// Device-to-device copy bandwidth, counting bytes read plus bytes written: the floor's denominator.
double measure_copy_bandwidth(cudaStream_t stream);
Result run_gpu(const Workload& w, const dsa_test::PagedCase& c, int iterations, size_t l2_bytes,
               const Returned& returned);
Result run_ragged_gpu(const RaggedWorkload& w, const dsa_test::RaggedCase& c, int iterations, size_t l2_bytes,
                      const Returned& returned);
#endif

}  // namespace dsa_bench
