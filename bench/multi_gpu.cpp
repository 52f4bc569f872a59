// dsa_bench --devices N1,N2,...: the owned-cache path over several GPUs, against one GPU in the same run.
// Caches hold random fp8 keys written with dsa_cache_write in big batches (not timed); physical pages are
// handed out in order (page i of sequence b is b * pages_per_seq + i), so a sharded cache spreads every
// sequence over all its GPUs. The context of N GPUs is devices 0 .. N-1. Measured:
//   rows-sharded     DSA_CACHE_REPLICATED: dsa_topk throughput over many rows; speedup = 1 GPU / N GPUs
//   context-sharded  DSA_CACHE_SHARDED: dsa_topk latency over few long sequences; ratio = N GPUs / 1 GPU
//   replication      dsa_cache_write of one new token per sequence from GPU 0's memory into a replicated
//                    cache on N GPUs: what keeping the replicas in step costs per decode step
// PASS: indices bitwise equal to the 1-GPU run's (which is checked for structure: distinct slots of its own
// sequence, then -1); for writes, the written tokens read back.
#include "multi_gpu.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "dsa_indexer.h"
#include "test_util.hpp"

namespace dsa_bench {
namespace {

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

}  // namespace

bool parse_device_counts(const std::string& text, std::vector<int>* counts) {
    counts->clear();
    return for_each_item(text, [&](const std::string& item) {
        if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos || item.size() > 3) return false;
        counts->push_back(std::atoi(item.c_str()));
        return counts->back() >= 1;
    });
}

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

}  // namespace dsa_bench
