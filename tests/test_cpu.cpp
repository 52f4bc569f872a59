// Tests of the public API on the CPU backend, one group per SPEC rule: version and errors, initialisers,
// contexts, results against the float64 oracle (paged and ragged), exact results on tie-free inputs,
// ties, NaN/inf ranking, every rejected input (with nothing written), the owned cache and determinism.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <future>
#include <limits>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#if defined(__linux__)
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#endif

#include "catch_shim.hpp"
#include "dsa_indexer.h"
#include "test_util.hpp"

using namespace dsa_test;

namespace {

constexpr uint32_t kSorted = DSA_TOPK_SORTED;
constexpr uint32_t kLogical = DSA_TOPK_LOGICAL_INDICES;
constexpr uint32_t kAbsolute = DSA_TOPK_ABSOLUTE_INDICES;
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::string flag_names(uint32_t flags) {
    std::string s = (flags & kSorted) ? "sorted" : "unsorted";
    if (flags & kLogical) s += "|logical";
    if (flags & kAbsolute) s += "|absolute";
    return s;
}

bool message_contains(const char* part) { return std::string(dsa_last_error_message()).find(part) != std::string::npos; }

dsa_status_t run_topk(dsa_context_t ctx, const PagedCase& c, int k, uint32_t flags, TopkOutput& out) {
    return run_paged(ctx, c, k, flags, out);
}
dsa_status_t run_topk(dsa_context_t ctx, const RaggedCase& c, int k, uint32_t flags, TopkOutput& out) {
    return run_ragged(ctx, c, k, flags, out);
}

// A successful call whose writes stayed inside its outputs.
template <class Case>
TopkOutput expect_success(dsa_context_t ctx, const Case& c, int k, uint32_t flags, bool with_scores) {
    TopkOutput out(c.rows(), k, with_scores);
    const dsa_status_t status = run_topk(ctx, c, k, flags, out);
    INFO(describe_status(status));
    REQUIRE(status == DSA_STATUS_SUCCESS);
    CHECK(out.guards_intact());
    return out;
}

template <class Case>
void expect_oracle_agreement(const Case& c, std::initializer_list<int> ks, const std::vector<uint32_t>& flag_sets) {
    const Oracle oracle = compute_oracle(c);
    Context ctx;
    for_each_variant(ks, flag_sets, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", " << flag_names(flags) << (with_scores ? ", scores" : ""));
        const TopkOutput out = expect_success(ctx.get(), c, k, flags, with_scores);
        CHECK(check_spec5(c, oracle, k, flags, out.indices(), out.scores()) == "");
    });
}

template <class Case>
void expect_exact(const Case& c, const std::vector<std::vector<double>>& exact, std::initializer_list<int> ks,
                  const std::vector<uint32_t>& flag_sets) {
    Context ctx;
    for_each_variant(ks, flag_sets, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", " << flag_names(flags) << (with_scores ? ", scores" : ""));
        const TopkOutput out = expect_success(ctx.get(), c, k, flags, with_scores);
        CHECK(check_exact(c, exact, k, flags, out.indices(), out.scores()) == "");
    });
}

PagedCase random_paged(const PagedLayout& layout, std::vector<int32_t> seq_lens, uint64_t seed) {
    PagedCase c(layout, std::move(seq_lens), seed);
    Rng rng(seed + 1);
    fill_spec6(c, rng);
    return c;
}

RaggedCase random_ragged(int heads, int64_t num_keys, const std::vector<std::pair<int32_t, int32_t>>& windows,
                         uint64_t seed) {
    RaggedCase c(heads, num_keys, windows);
    Rng rng(seed);
    fill_spec6(c, rng);
    return c;
}

uint64_t seed_of(int a, int b, int c) { return uint64_t(a) * 1000003u + uint64_t(b) * 1009u + uint64_t(c); }

}  // namespace

// =====================================================================================================
// The oracle itself: if these fail, nothing else can be trusted.

TEST_CASE("oracle: fp8 e4m3fn decoding and encoding follow the format", "[cpu][oracle]") {
    CHECK(fp8_decode(0x00) == 0.0);
    CHECK(std::signbit(fp8_decode(0x80)));
    CHECK(fp8_decode(0x01) == std::ldexp(1.0, -9));  // smallest subnormal
    CHECK(fp8_decode(0x07) == 7 * std::ldexp(1.0, -9));
    CHECK(fp8_decode(0x08) == std::ldexp(1.0, -6));  // smallest normal
    CHECK(fp8_decode(0x38) == 1.0);
    CHECK(fp8_decode(0x7E) == 448.0);
    CHECK(fp8_decode(0xFE) == -448.0);
    CHECK(std::isnan(fp8_decode(0x7F)));
    CHECK(std::isnan(fp8_decode(0xFF)));
    CHECK(fp8_decode(0x78) == 256.0);  // S.1111.000 is a number: e4m3fn has no infinity
    // Small integers used by the C tests and the example.
    const uint8_t integer_codes[] = {0x38, 0x40, 0x44, 0x48, 0x4A, 0x4C, 0x4E, 0x50};
    for (int v = 1; v <= 8; ++v) CHECK(fp8_encode(v) == integer_codes[v - 1]);

    for (int b = 0; b < 256; ++b) {
        if (std::isnan(fp8_decode(uint8_t(b)))) continue;
        INFO("code " << b);
        CHECK(fp8_encode(fp8_decode(uint8_t(b))) == b);
    }
    // Midpoints between neighbours round to the even code; anything past them to the nearer one.
    for (int b = 0; b < 0x7E; ++b) {
        const double lo = fp8_decode(uint8_t(b)), hi = fp8_decode(uint8_t(b + 1));
        const double mid = (lo + hi) / 2;
        INFO("between codes " << b << " and " << b + 1);
        CHECK(fp8_encode(mid) == ((b % 2 == 0) ? b : b + 1));
        CHECK(fp8_encode(-mid) == (0x80 | ((b % 2 == 0) ? b : b + 1)));
        CHECK(fp8_encode(std::nextafter(mid, 0.0)) == b);
        CHECK(fp8_encode(std::nextafter(mid, 1e9)) == b + 1);
    }
    CHECK(fp8_encode(1e6) == 0x7E);
    CHECK(fp8_encode(-460.0) == 0xFE);
    CHECK(fp8_encode(std::numeric_limits<double>::infinity()) == 0x7E);
    CHECK(fp8_encode(std::nan("")) == kFp8NaN);
}

TEST_CASE("oracle: the checkers reject broken results", "[cpu][oracle]") {
    // Rows: sequence 0 (300 tokens) gives rows 0-1, sequence 1 (45) rows 2-3, sequence 2 (empty) rows 4-5.
    const int k = 40;
    auto expect_breakages_caught = [&](const PagedCase& c, const std::vector<std::vector<double>>& scores,
                                       const std::function<std::string(const int32_t*, const float*)>& check) {
        Context ctx;
        const TopkOutput good = expect_success(ctx.get(), c, k, kSorted, true);
        REQUIRE(check(good.indices(), good.scores()) == "");
        const int64_t worst = ranked_positions(scores[0], 300).back();
        const std::vector<std::pair<const char*, std::function<void(int32_t*, float*)>>> breakages = {
            {"duplicate index", [&](int32_t* idx, float* s) { idx[1] = idx[0]; s[1] = s[0]; }},
            {"a slot of another sequence's page", [&](int32_t* idx, float*) { idx[0] = c.index_of(2, 0, 0); }},
            {"a position past the causal window", [&](int32_t* idx, float*) { idx[2 * k + 3] = c.index_of(3, 44, 0); }},
            {"-1 among the results", [&](int32_t* idx, float*) { idx[5] = -1; }},
            {"padding not -1", [&](int32_t* idx, float*) { idx[4 * k] = 0; }},
            {"padding score not -inf", [&](int32_t*, float* s) { s[4 * k + 7] = 0.0f; }},
            {"best result replaced by the worst", [&](int32_t* idx, float* s) {
                 idx[0] = c.index_of(0, worst, 0);
                 s[0] = float(scores[0][size_t(worst)]);
             }},
            {"sorted order swapped", [&](int32_t* idx, float* s) {
                 std::swap(idx[0], idx[k - 1]);
                 std::swap(s[0], s[k - 1]);
             }},
            {"a returned score off", [&](int32_t*, float* s) { s[3] = 2 * s[3] + 1; }},
        };
        for (const auto& [what, breaks] : breakages) {
            std::vector<int32_t> indices(good.indices(), good.indices() + c.rows() * k);
            std::vector<float> broken_scores(good.scores(), good.scores() + c.rows() * k);
            breaks(indices.data(), broken_scores.data());
            INFO(what);
            CHECK(check(indices.data(), broken_scores.data()) != "");
        }
    };
    SECTION("SPEC section 5 checker") {
        const PagedCase c = random_paged(layout_of(32, 32, 2), {300, 45, 0}, 11);
        const Oracle oracle = compute_oracle(c);
        std::vector<std::vector<double>> scores;
        for (const RowOracle& row : oracle) scores.push_back(row.score);
        expect_breakages_caught(c, scores, [&](const int32_t* idx, const float* s) {
            return check_spec5(c, oracle, k, kSorted, idx, s);
        });
    }
    SECTION("exact checker") {
        PagedCase c(layout_of(32, 32, 2), {300, 45, 0}, 12);
        Rng rng(13);
        fill_tie_free(c, rng);
        const auto exact = integer_scores(c);
        expect_breakages_caught(c, exact, [&](const int32_t* idx, const float* s) {
            return check_exact(c, exact, k, kSorted, idx, s);
        });
    }
}

// =====================================================================================================
// Version, status strings, error messages

TEST_CASE("version macros match the library", "[cpu][api]") {
    STATIC_REQUIRE(DSA_VERSION_NUMBER == DSA_VERSION_MAJOR * 10000 + DSA_VERSION_MINOR * 100 + DSA_VERSION_PATCH);
    CHECK(dsa_version() == DSA_VERSION_NUMBER);
}

TEST_CASE("every status has its name, others are unknown", "[cpu][api]") {
    const std::vector<std::pair<dsa_status_t, const char*>> names = {
        {DSA_STATUS_SUCCESS, "DSA_STATUS_SUCCESS"},
        {DSA_STATUS_INVALID_ARGUMENT, "DSA_STATUS_INVALID_ARGUMENT"},
        {DSA_STATUS_UNSUPPORTED, "DSA_STATUS_UNSUPPORTED"},
        {DSA_STATUS_OUT_OF_MEMORY, "DSA_STATUS_OUT_OF_MEMORY"},
        {DSA_STATUS_NO_DEVICE, "DSA_STATUS_NO_DEVICE"},
        {DSA_STATUS_CUDA_ERROR, "DSA_STATUS_CUDA_ERROR"},
        {DSA_STATUS_NCCL_ERROR, "DSA_STATUS_NCCL_ERROR"},
        {DSA_STATUS_INSUFFICIENT_WORKSPACE, "DSA_STATUS_INSUFFICIENT_WORKSPACE"},
        {DSA_STATUS_DEVICE_INPUT_ERROR, "DSA_STATUS_DEVICE_INPUT_ERROR"},
        {DSA_STATUS_NOT_IMPLEMENTED, "DSA_STATUS_NOT_IMPLEMENTED"},
        {DSA_STATUS_INTERNAL_ERROR, "DSA_STATUS_INTERNAL_ERROR"},
    };
    // The values are ABI: fixed forever.
    for (size_t i = 0; i < names.size(); ++i) {
        INFO(names[i].second);
        CHECK(int(names[i].first) == int(i));
        CHECK(std::string(dsa_status_string(names[i].first)) == names[i].second);
    }
    for (int unknown : {-1, 11, 12, 1000, std::numeric_limits<int>::max()})
        CHECK(std::string(dsa_status_string(dsa_status_t(unknown))) == "DSA_STATUS_UNKNOWN");
}

TEST_CASE("the last error message is per thread, set by a failure, cleared by a success", "[cpu][api]") {
    Context ctx;
    int32_t devices = -1;
    REQUIRE(dsa_context_num_devices(ctx.get(), nullptr) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(message_contains("out_num_devices"));
    REQUIRE(dsa_context_num_devices(ctx.get(), &devices) == DSA_STATUS_SUCCESS);
    CHECK(std::string(dsa_last_error_message()).empty());
    CHECK(devices == 0);

    // Thread A fails and keeps its message while thread B starts clean, fails differently and finishes.
    std::promise<void> b_done;
    std::string a_message, a_message_after_b, b_first_message, b_message;
    std::thread a([&] {
        dsa_context_num_devices(nullptr, &devices);
        a_message = dsa_last_error_message();
        b_done.get_future().wait();
        a_message_after_b = dsa_last_error_message();
    });
    std::thread b([&] {
        b_first_message = dsa_last_error_message();
        dsa_context_num_devices(ctx.get(), nullptr);
        b_message = dsa_last_error_message();
    });
    b.join();
    b_done.set_value();
    a.join();
    CHECK(a_message.find("context") != std::string::npos);
    CHECK(a_message_after_b == a_message);
    CHECK(b_first_message.empty());
    CHECK(b_message.find("out_num_devices") != std::string::npos);
    CHECK(std::string(dsa_last_error_message()).empty());  // this thread's last call succeeded
}

// =====================================================================================================
// Initialisers and struct_size

TEST_CASE("initialisers give the documented defaults, function and macro alike", "[cpu][api]") {
    auto garbage = [](auto& s) { std::memset(&s, 0xFF, sizeof s); };

    dsa_context_config_t context_fn, context_macro = DSA_CONTEXT_CONFIG_INIT;
    garbage(context_fn);
    dsa_context_config_init(&context_fn);
    for (const auto& c : {context_fn, context_macro}) {
        CHECK(c.struct_size == sizeof(dsa_context_config_t));
        CHECK(c.device_ids == nullptr);
        CHECK(c.num_devices == 0);
        CHECK(c.num_cpu_threads == 0);
    }
    dsa_topk_params_t params_fn, params_macro = DSA_TOPK_PARAMS_INIT;
    garbage(params_fn);
    dsa_topk_params_init(&params_fn);
    for (const auto& p : {params_fn, params_macro}) {
        CHECK(p.struct_size == sizeof(dsa_topk_params_t));
        CHECK(p.num_heads == 64);
        CHECK(p.head_dim == 128);
        CHECK(p.page_size == 64);
        CHECK(p.topk == 2048);
        CHECK(p.next_n == 1);
        CHECK(p.flags == 0u);
    }
    dsa_paged_inputs_t paged_fn, paged_macro = DSA_PAGED_INPUTS_INIT;
    garbage(paged_fn);
    dsa_paged_inputs_init(&paged_fn);
    for (const auto& in : {paged_fn, paged_macro}) {
        CHECK(in.struct_size == sizeof(dsa_paged_inputs_t));
        CHECK((in.batch_size == 0 && in.max_pages == 0 && in.block_table_stride == 0 && in.num_pages == 0 &&
               in.page_stride_bytes == 0));
        CHECK((in.q == nullptr && in.k_cache == nullptr && in.weights == nullptr && in.seq_lens == nullptr &&
               in.block_table == nullptr));
    }
    dsa_ragged_inputs_t ragged_fn, ragged_macro = DSA_RAGGED_INPUTS_INIT;
    garbage(ragged_fn);
    dsa_ragged_inputs_init(&ragged_fn);
    for (const auto& in : {ragged_fn, ragged_macro}) {
        CHECK(in.struct_size == sizeof(dsa_ragged_inputs_t));
        CHECK((in.num_rows == 0 && in.num_keys == 0));
        CHECK((in.q == nullptr && in.k == nullptr && in.k_scale == nullptr && in.weights == nullptr &&
               in.row_start == nullptr && in.row_end == nullptr));
    }
    dsa_topk_outputs_t outputs_fn, outputs_macro = DSA_TOPK_OUTPUTS_INIT;
    garbage(outputs_fn);
    dsa_topk_outputs_init(&outputs_fn);
    for (const auto& o : {outputs_fn, outputs_macro}) {
        CHECK(o.struct_size == sizeof(dsa_topk_outputs_t));
        CHECK((o.indices == nullptr && o.scores == nullptr));
    }
    dsa_cache_config_t cache_fn, cache_macro = DSA_CACHE_CONFIG_INIT;
    garbage(cache_fn);
    dsa_cache_config_init(&cache_fn);
    for (const auto& c : {cache_fn, cache_macro}) {
        CHECK(c.struct_size == sizeof(dsa_cache_config_t));
        CHECK(c.num_pages == 0);
        CHECK(c.page_size == 64);
        CHECK(c.head_dim == 128);
    }
}

// The size a struct had in 0.1 (the structs that grew since are also accepted at it, dsa_indexer.h).
size_t first_release_size(const std::string& what) {
    if (what.rfind("dsa_context_config_t", 0) == 0) return offsetof(dsa_context_config_t, nccl_unique_id);
    if (what.rfind("dsa_topk_outputs_t", 0) == 0) return offsetof(dsa_topk_outputs_t, memory_device);
    if (what.rfind("dsa_cache_config_t", 0) == 0) return offsetof(dsa_cache_config_t, mode);
    return 0;
}

TEST_CASE("struct_size: the 0.1 size or the current one; smaller is INVALID_ARGUMENT, larger UNSUPPORTED",
          "[cpu][api]") {
    Context ctx;
    PagedCase paged = random_paged(layout_of(32, 32, 1), {10}, 3);
    RaggedCase ragged = random_ragged(32, 10, {{0, 10}}, 4);
    TopkOutput out(1, 4, true);

    // Each call takes the struct_size to put into the struct under test, the others stay valid.
    using SizedCall = std::function<dsa_status_t(size_t)>;
    auto paged_call = [&](int which) {
        return [&, which](size_t size) {
            dsa_topk_params_t params = paged.params(4, 0);
            dsa_paged_inputs_t inputs = paged.inputs();
            dsa_topk_outputs_t outputs = out.outputs();
            (which == 0 ? params.struct_size : which == 1 ? inputs.struct_size : outputs.struct_size) = size;
            return dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr);
        };
    };
    auto ragged_call = [&](int which) {
        return [&, which](size_t size) {
            dsa_topk_params_t params = ragged.params(4, 0);
            dsa_ragged_inputs_t inputs = ragged.inputs();
            dsa_topk_outputs_t outputs = out.outputs();
            (which == 0 ? params.struct_size : which == 1 ? inputs.struct_size : outputs.struct_size) = size;
            return dsa_topk_ragged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr);
        };
    };
    const std::vector<std::tuple<const char*, size_t, SizedCall>> calls = {
        {"dsa_context_config_t in dsa_context_create", sizeof(dsa_context_config_t),
         [](size_t size) {
             dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
             config.struct_size = size;
             dsa_context_t created = nullptr;
             const dsa_status_t status = dsa_context_create(&config, &created);
             if (status == DSA_STATUS_SUCCESS) dsa_context_destroy(created);  // (a success clears the message)
             return status;
         }},
        {"dsa_cache_config_t in dsa_cache_create", sizeof(dsa_cache_config_t),
         [&](size_t size) {
             dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
             config.num_pages = 2;
             config.struct_size = size;
             dsa_cache_t cache = nullptr;
             const dsa_status_t status = dsa_cache_create(ctx.get(), &config, &cache);
             if (status == DSA_STATUS_SUCCESS) dsa_cache_destroy(cache);
             return status;
         }},
        {"dsa_topk_params_t in dsa_topk_paged", sizeof(dsa_topk_params_t), paged_call(0)},
        {"dsa_paged_inputs_t in dsa_topk_paged", sizeof(dsa_paged_inputs_t), paged_call(1)},
        {"dsa_topk_outputs_t in dsa_topk_paged", sizeof(dsa_topk_outputs_t), paged_call(2)},
        {"dsa_topk_params_t in dsa_topk_ragged", sizeof(dsa_topk_params_t), ragged_call(0)},
        {"dsa_ragged_inputs_t in dsa_topk_ragged", sizeof(dsa_ragged_inputs_t), ragged_call(1)},
        {"dsa_topk_outputs_t in dsa_topk_ragged", sizeof(dsa_topk_outputs_t), ragged_call(2)},
        {"dsa_paged_inputs_t in dsa_topk_paged_workspace_size", sizeof(dsa_paged_inputs_t),
         [&](size_t size) {
             dsa_topk_params_t params = paged.params(4, 0);
             dsa_paged_inputs_t inputs = paged.inputs();
             inputs.struct_size = size;
             size_t bytes = 0;
             return dsa_topk_paged_workspace_size(ctx.get(), &params, &inputs, &bytes);
         }},
        {"dsa_ragged_inputs_t in dsa_topk_ragged_workspace_size", sizeof(dsa_ragged_inputs_t),
         [&](size_t size) {
             dsa_topk_params_t params = ragged.params(4, 0);
             dsa_ragged_inputs_t inputs = ragged.inputs();
             inputs.struct_size = size;
             size_t bytes = 0;
             return dsa_topk_ragged_workspace_size(ctx.get(), &params, &inputs, &bytes);
         }},
    };
    for (const auto& [what, size, call] : calls) {
        INFO(what);
        CHECK(call(size) == DSA_STATUS_SUCCESS);
        const size_t first = first_release_size(what);
        if (first) CHECK(call(first) == DSA_STATUS_SUCCESS);  // a 0.1 caller: appended fields take their defaults
        for (size_t smaller : {size_t(0), size - 1, size - 8, size - 12}) {
            if (smaller == first) continue;
            CHECK(call(smaller) == DSA_STATUS_INVALID_ARGUMENT);
            CHECK(message_contains("struct_size"));
        }
        for (size_t larger : {size + 1, size + 8, size + 4096}) {
            CHECK(call(larger) == DSA_STATUS_UNSUPPORTED);
            CHECK(message_contains("struct_size"));
        }
    }
    CHECK(out.guards_intact());
}

// =====================================================================================================
// Contexts

TEST_CASE("CPU contexts: creation, device count, destruction", "[cpu][context]") {
    dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
    dsa_context_t ctx = nullptr;
    REQUIRE(dsa_context_create(&config, &ctx) == DSA_STATUS_SUCCESS);
    REQUIRE(ctx != nullptr);
    int32_t devices = -1;
    CHECK(dsa_context_num_devices(ctx, &devices) == DSA_STATUS_SUCCESS);
    CHECK(devices == 0);
    CHECK(dsa_context_synchronize(ctx) == DSA_STATUS_SUCCESS);
    CHECK(dsa_context_destroy(ctx) == DSA_STATUS_SUCCESS);
    CHECK(dsa_context_destroy(nullptr) == DSA_STATUS_SUCCESS);

    // Failed creations leave *out_context alone.
    auto* const untouched = reinterpret_cast<dsa_context_t>(uintptr_t(0x5A5A5A50));
    auto expect_create_fails = [&](const dsa_context_config_t* cfg, const char* message_part) {
        dsa_context_t out = untouched;
        CHECK(dsa_context_create(cfg, &out) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(out == untouched);
        CHECK(message_contains(message_part));
    };
    expect_create_fails(nullptr, "config");
    dsa_context_config_t bad = DSA_CONTEXT_CONFIG_INIT;
    bad.num_devices = -1;
    expect_create_fails(&bad, "num_devices");
    bad = config;
    bad.num_devices = 1;  // device_ids NULL
    expect_create_fails(&bad, "device_ids");
    bad = config;
    bad.num_cpu_threads = -2;
    expect_create_fails(&bad, "num_cpu_threads");
    CHECK(dsa_context_create(&config, nullptr) == DSA_STATUS_INVALID_ARGUMENT);

    CHECK(dsa_context_num_devices(nullptr, &devices) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(dsa_context_synchronize(nullptr) == DSA_STATUS_INVALID_ARGUMENT);
    for (int32_t threads : {1, 2, 3, 64}) {
        config.num_cpu_threads = threads;
        CHECK(dsa_context_create(&config, &ctx) == DSA_STATUS_SUCCESS);
        CHECK(dsa_context_destroy(ctx) == DSA_STATUS_SUCCESS);
    }
}

TEST_CASE("GPU requests: NO_DEVICE without the GPU, repeated ids rejected, set_devices all or nothing",
          "[cpu][context]") {
    const int32_t device0[] = {0}, missing[] = {9999}, repeated[] = {0, 0};
    dsa_context_config_t gpu_config = DSA_CONTEXT_CONFIG_INIT;
    gpu_config.device_ids = device0;
    gpu_config.num_devices = 1;
    dsa_context_t probe = nullptr;
    const dsa_status_t probe_status = dsa_context_create(&gpu_config, &probe);
    const bool have_gpu = probe_status == DSA_STATUS_SUCCESS;
    if (have_gpu) {
        int32_t devices = 0;
        CHECK(dsa_context_num_devices(probe, &devices) == DSA_STATUS_SUCCESS);
        CHECK(devices == 1);
        CHECK(dsa_context_destroy(probe) == DSA_STATUS_SUCCESS);
        WARN("a usable GPU is present: only a nonexistent device id is checked for DSA_STATUS_NO_DEVICE");
    } else {
        INFO(describe_status(probe_status));
        CHECK(probe_status == DSA_STATUS_NO_DEVICE);  // no hidden fallback to the CPU
        CHECK(probe == nullptr);
        CHECK(std::string(dsa_last_error_message()) != "");
    }
    auto create_status = [](const int32_t* ids, int32_t n) {
        dsa_context_config_t cfg = DSA_CONTEXT_CONFIG_INIT;
        cfg.device_ids = ids;
        cfg.num_devices = n;
        dsa_context_t ctx = nullptr;
        const dsa_status_t status = dsa_context_create(&cfg, &ctx);
        if (status == DSA_STATUS_SUCCESS) dsa_context_destroy(ctx);  // (a success clears the message)
        return status;
    };
    CHECK(create_status(missing, 1) == DSA_STATUS_NO_DEVICE);
    CHECK(create_status(repeated, 2) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(message_contains("repeat"));

    // set_devices validates everything first: a failure leaves a working CPU context.
    Context ctx;
    const PagedCase c = random_paged(layout_of(32, 32, 1), {100, 7}, 5);
    const TopkOutput before = expect_success(ctx.get(), c, 16, kSorted, true);
    const std::vector<std::tuple<const int32_t*, int32_t, dsa_status_t>> failing = {
        {missing, 1, DSA_STATUS_NO_DEVICE},
        {repeated, 2, DSA_STATUS_INVALID_ARGUMENT},
        {nullptr, -1, DSA_STATUS_INVALID_ARGUMENT},
        {nullptr, 1, DSA_STATUS_INVALID_ARGUMENT},
    };
    for (const auto& [ids, n, expected] : failing) {
        INFO("set_devices with " << n << " device(s)");
        CHECK(dsa_context_set_devices(ctx.get(), ids, n) == expected);
        int32_t devices = -1;
        CHECK(dsa_context_num_devices(ctx.get(), &devices) == DSA_STATUS_SUCCESS);
        CHECK(devices == 0);
        CHECK(expect_success(ctx.get(), c, 16, kSorted, true).same_bits(before));
    }
    if (!have_gpu) CHECK(dsa_context_set_devices(ctx.get(), device0, 1) == DSA_STATUS_NO_DEVICE);
    CHECK(dsa_context_set_devices(ctx.get(), nullptr, 0) == DSA_STATUS_SUCCESS);
    CHECK(dsa_context_set_devices(nullptr, nullptr, 0) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(expect_success(ctx.get(), c, 16, kSorted, true).same_bits(before));
}

TEST_CASE("a context with live caches is neither destroyed nor moved to other devices", "[cpu][context][cache]") {
    dsa_context_t ctx = nullptr;
    const dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
    REQUIRE(dsa_context_create(&config, &ctx) == DSA_STATUS_SUCCESS);
    dsa_cache_config_t cache_config = DSA_CACHE_CONFIG_INIT;
    cache_config.num_pages = 4;
    dsa_cache_t cache = nullptr;
    REQUIRE(dsa_cache_create(ctx, &cache_config, &cache) == DSA_STATUS_SUCCESS);

    CHECK(dsa_context_destroy(ctx) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(message_contains("cache"));
    CHECK(dsa_context_set_devices(ctx, nullptr, 0) == DSA_STATUS_INVALID_ARGUMENT);
    // Both still work after the refusals.
    int32_t devices = -1;
    CHECK(dsa_context_num_devices(ctx, &devices) == DSA_STATUS_SUCCESS);
    const int64_t slot = 5;
    std::vector<uint8_t> key(kHeadDim, 0x38);
    const float scale = 2.0f;
    CHECK(dsa_cache_write(cache, &slot, key.data(), &scale, 1, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);

    CHECK(dsa_cache_destroy(cache) == DSA_STATUS_SUCCESS);
    CHECK(dsa_cache_destroy(nullptr) == DSA_STATUS_SUCCESS);
    CHECK(dsa_context_set_devices(ctx, nullptr, 0) == DSA_STATUS_SUCCESS);
    CHECK(dsa_context_destroy(ctx) == DSA_STATUS_SUCCESS);
}

TEST_CASE("one context shared by several threads gives the single-thread results", "[cpu][context]") {
    const PagedCase c = random_paged(layout_of(64, 64, 2), {900, 300, 5}, 21);
    Context ctx;
    const TopkOutput reference = expect_success(ctx.get(), c, 100, kSorted, true);
    std::vector<int> matches(3, 0);
    std::vector<std::thread> threads;
    for (size_t t = 0; t < matches.size(); ++t)
        threads.emplace_back([&, t] {
            for (int i = 0; i < 3; ++i) {
                TopkOutput out(c.rows(), 100, true);
                matches[t] += run_paged(ctx.get(), c, 100, kSorted, out) == DSA_STATUS_SUCCESS && out.same_bits(reference);
            }
        });
    for (auto& t : threads) t.join();
    for (int m : matches) CHECK(m == 3);
}

// =====================================================================================================
// Results against the float64 oracle (SPEC section 5)

TEST_CASE("paged decode agrees with the oracle", "[cpu][paged]") {
    const int heads = GENERATE(32, 64);
    const int page_size = GENERATE(32, 64);
    const int next_n = GENERATE(1, 2, 3, 4);
    PagedLayout layout = layout_of(heads, page_size, next_n);
    // Padded block-table rows and pages for even next_n, tight ones for odd: both for every H and P.
    if (next_n % 2 == 0) {
        layout.table_padding = 5;
        layout.page_padding_bytes = 48;
    }
    CAPTURE(heads, page_size, next_n, layout.table_padding, layout.page_padding_bytes);
    // Lengths 0, 1 and 2 give MTP rows with empty windows; 7, 64 and 2048 equal a k; 97 is not a multiple
    // of P; 2300 is long.
    const PagedCase c = random_paged(layout, {0, 1, 2, 7, 64, 97, 2048, 2300}, seed_of(heads, page_size, next_n));
    expect_oracle_agreement(c, {1, 7, 64, 2048}, {0u, kSorted, kLogical, kSorted | kLogical});
}

TEST_CASE("paged decode with k above every sequence length pads with -1", "[cpu][paged]") {
    const int next_n = GENERATE(1, 4);
    const PagedCase c = random_paged(layout_of(64, 32, next_n), {0, 1, 5, 33, 70}, seed_of(7, 7, next_n));
    expect_oracle_agreement(c, {71, 2048}, {0u, kSorted | kLogical});
}

TEST_CASE("ragged prefill agrees with the oracle", "[cpu][ragged]") {
    const int heads = GENERATE(32, 64);
    // Causal windows of four sequences (one key only, short, long, all keys are queries), then windows
    // that are empty, cross sequences, or cover everything.
    const std::vector<int32_t> key_lens = {1, 300, 2400, 40};
    std::vector<std::pair<int32_t, int32_t>> windows = causal_windows(key_lens, {1, 6, 5, 40});
    const int32_t total = 1 + 300 + 2400 + 40;
    windows.insert(windows.end(), {{0, 0}, {10, 10}, {total, total}, {250, 2700}, {0, total}, {2700, 2701}});
    const RaggedCase c = random_ragged(heads, total, windows, seed_of(heads, 1, 2));
    expect_oracle_agreement(c, {1, 50, 2048}, {0u, kSorted, kAbsolute, kSorted | kAbsolute});
}

TEST_CASE("SPEC section 3 sizes: 4096 rows, and sequences of a million tokens", "[cpu][paged][large]") {
    SECTION("1024 sequences x next_n 4 = 4096 rows") {
        Rng lengths(181);
        std::vector<int32_t> seq_lens(1024);
        for (int32_t& len : seq_lens) len = int32_t(lengths.uniform(0, 90));
        const PagedCase c = random_paged(layout_of(32, 32, 4), seq_lens, 182);
        expect_oracle_agreement(c, {16, 64}, {kSorted, kLogical});
    }
    SECTION("1,048,576 and 1,000,003 tokens, planted scores among exact ties") {
        std::vector<std::vector<double>> exact;
        const PagedCase c = planted_paged(layout_of(32, 64, 2), {1048576, 1000003}, 600, 183, exact);
        // k 2048: the 300 positive planted scores, then the smallest positions among ~1M zeros.
        expect_exact(c, exact, {2048, 300}, {kSorted, kLogical});
    }
}

// =====================================================================================================
// Exact results where no two scores are equal

TEST_CASE("paged decode returns exactly the top k on tie-free integer inputs", "[cpu][paged][exact]") {
    const int heads = GENERATE(32, 64);
    const int page_size = GENERATE(32, 64);
    const int next_n = GENERATE(1, 3);
    CAPTURE(heads, page_size, next_n);
    PagedCase c(layout_of(heads, page_size, next_n), {0, 1, 2, 5, 64, 100, 2048, 3000}, seed_of(heads, page_size, 40 + next_n));
    Rng rng(seed_of(heads, page_size, 50 + next_n));
    fill_tie_free(c, rng);
    expect_exact(c, integer_scores(c), {1, 7, 64, 2048}, {0u, kSorted, kLogical, kSorted | kLogical});
}

TEST_CASE("exact top k with more than 4096 keys per sequence", "[cpu][exact]") {
    SECTION("paged") {
        PagedCase c(layout_of(32, 64, 2), {5000, 4097}, 77);
        Rng rng(78);
        fill_tie_free(c, rng);
        expect_exact(c, integer_scores(c), {100, 2048}, {0u, kSorted});
    }
    SECTION("ragged") {
        RaggedCase c(32, 6000, causal_windows({6000}, {3}));
        Rng rng(79);
        fill_tie_free(c, rng);
        expect_exact(c, integer_scores(c), {100, 2048}, {kAbsolute, kSorted});
    }
}

TEST_CASE("ragged prefill returns exactly the top k on tie-free integer inputs", "[cpu][ragged][exact]") {
    const int heads = GENERATE(32, 64);
    std::vector<std::pair<int32_t, int32_t>> windows = causal_windows({500, 2600, 3}, {4, 4, 3});
    windows.insert(windows.end(), {{7, 7}, {100, 3103}, {0, 3103}});
    RaggedCase c(heads, 3103, windows);
    Rng rng(seed_of(heads, 2, 3));
    fill_tie_free(c, rng);
    expect_exact(c, integer_scores(c), {1, 9, 300, 2048}, {0u, kSorted, kAbsolute, kSorted | kAbsolute});
}

// =====================================================================================================
// Ties, signed zeros, NaN and infinities

namespace {

// Copies the key of position `from` onto the chosen positions of sequence `seq`: equal keys, equal scores.
void copy_key(PagedCase& c, int32_t seq, int64_t from, const std::vector<int64_t>& to) {
    std::vector<uint8_t> key(c.key(int64_t(seq) * c.layout.next_n, from), c.key(int64_t(seq) * c.layout.next_n, from) + kHeadDim);
    for (int64_t p : to) std::memcpy(c.mutable_key(seq, p), key.data(), kHeadDim);
}

// The k that cuts through the middle of the group of positions scoring like `member` in a row.
int cut_inside_group(const std::vector<double>& scores, int64_t member) {
    const double tie = scores[size_t(member)];
    const auto above = std::count_if(scores.begin(), scores.end(), [&](double s) { return s > tie; });
    const auto group = std::count(scores.begin(), scores.end(), tie);
    return int(above + group / 2);
}

}  // namespace

TEST_CASE("equal scores: the smallest positions win", "[cpu][ties]") {
    Context ctx;
    SECTION("paged, a large group of identical keys (positions, not slots, decide)") {
        PagedCase c(layout_of(32, 32, 2), {300, 150, 64}, 91);
        Rng rng(92);
        fill_tie_free(c, rng);
        copy_key(c, 0, 17, random_subset(rng, 300, 180));
        copy_key(c, 1, 3, random_subset(rng, 150, 100));
        const auto exact = integer_scores(c);
        const int cut = cut_inside_group(exact[0], 17);
        CAPTURE(cut);
        expect_exact(c, exact, {1, 30, cut, 299, 2048}, {0u, kSorted, kLogical, kSorted | kLogical});
    }
    SECTION("paged, every score equal: the first k positions") {
        PagedCase c(layout_of(64, 64, 1), {1000, 200}, 93);
        Rng rng(94);
        fill_tie_free(c, rng);
        copy_key(c, 0, 0, random_subset(rng, 1000, 1000));
        copy_key(c, 1, 0, random_subset(rng, 200, 200));
        const auto exact = integer_scores(c);
        expect_exact(c, exact, {1, 100, 999}, {0u, kSorted, kLogical});
        // Spelled out for row 0 in global-slot mode: slots of positions 0..99 in order.
        const TopkOutput out = expect_success(ctx.get(), c, 100, kSorted, false);
        for (int64_t p = 0; p < 100; ++p) CHECK(out.indices()[p] == c.index_of(0, p, 0));
    }
    SECTION("ragged, identical keys across sequences") {
        RaggedCase c(32, 700, causal_windows({400, 300}, {3, 3}));
        Rng rng(95);
        fill_tie_free(c, rng);
        for (int64_t i : random_subset(rng, 700, 400)) std::memcpy(c.mutable_key(i), c.k.data() + 5 * kHeadDim, kHeadDim);
        const auto exact = integer_scores(c);
        const int cut = cut_inside_group(exact[0], 5);
        CAPTURE(cut);
        expect_exact(c, exact, {1, cut, 350, 2048}, {0u, kSorted, kAbsolute, kSorted | kAbsolute});
    }
}

TEST_CASE("-0 and +0 scores rank equal, so positions decide between them", "[cpu][ties]") {
    // Zero keys score exactly 0 for every head; scale -1 makes the score -0.0 and scale +1 makes it +0.0.
    PagedCase c(layout_of(32, 32, 1), {400}, 101);
    Rng rng(102);
    fill_tie_free(c, rng);
    const std::vector<int64_t> zeros = random_subset(rng, 400, 160);
    for (size_t i = 0; i < zeros.size(); ++i) {
        std::memset(c.mutable_key(0, zeros[i]), 0, kHeadDim);
        c.set_scale(0, zeros[i], rng.uniform(0, 1) ? -1.0f : 1.0f);
    }
    const auto exact = integer_scores(c);
    const int cut = cut_inside_group(exact[0], zeros[0]);
    CAPTURE(cut);
    expect_exact(c, exact, {cut - 40, cut, cut + 40}, {0u, kSorted, kSorted | kLogical});
}

TEST_CASE("NaN scores rank last, +inf first, -inf above NaN only", "[cpu][nan]") {
    PagedCase c(layout_of(32, 32, 3), {300, 90}, 111);
    Rng rng(112);
    fill_tie_free(c, rng);
    SECTION("special scales and NaN keys") {
        // Scale +inf: +inf, -inf or NaN (0 * inf) by the sign of the sum; scale -inf likewise; scale NaN
        // and NaN key bytes (0x7F, 0xFF): NaN.
        add_special_scores(c, 0, 100, rng);
        const Oracle oracle = compute_oracle(c);  // exact here: integers, infinities and NaNs only
        std::vector<std::vector<double>> exact;
        for (const RowOracle& row : oracle) exact.push_back(row.score);
        const auto finite = std::count_if(exact[0].begin(), exact[0].end(), [](double s) { return std::isfinite(s); });
        const auto not_nan = std::count_if(exact[0].begin(), exact[0].end(), [](double s) { return !std::isnan(s); });
        REQUIRE(finite < not_nan);  // some infinities
        REQUIRE(not_nan < 298);     // some NaNs
        expect_exact(c, exact, {5, 20, int(not_nan) - 3, int(not_nan) + 5, 2048}, {0u, kSorted, kSorted | kLogical});
    }
    SECTION("infinite weights: inf * relu(0) is NaN, every other score +-inf") {
        // Rows 1 and 4 get weight +inf on head 0 (which reads v > 0 except at the position with v = 0),
        // rows 2 and 5 get -inf: all their scores tie at +-inf except NaNs.
        for (int64_t r : {1, 4}) c.mutable_weights(r)[0] = kInf;
        for (int64_t r : {2, 5}) c.mutable_weights(r)[0] = -kInf;
        const Oracle oracle = compute_oracle(c);
        std::vector<std::vector<double>> exact;
        for (const RowOracle& row : oracle) exact.push_back(row.score);
        expect_exact(c, exact, {1, 50, 2048}, {0u, kSorted, kLogical});
        Context ctx;
        const TopkOutput out = expect_success(ctx.get(), c, 50, kSorted | kLogical, true);
        for (int64_t i = 0; i < 50; ++i) {  // ties at +inf: the first positions (v = 0 is the one NaN)
            CHECK(out.scores()[50 + i] == kInf);
            CHECK(out.indices()[50 + i] == ranked_positions(exact[1], 50)[size_t(i)]);
        }
    }
}

TEST_CASE("any infinite weights still give valid output", "[cpu][nan]") {
    PagedCase c = random_paged(layout_of(64, 64, 2), {700, 65, 3}, 121);
    RaggedCase r = random_ragged(64, 800, causal_windows({500, 300}, {2, 2}), 122);
    Rng rng(123);
    for (float& w : c.weights)
        if (rng.uniform(0, 9) == 0) w = rng.uniform(0, 1) ? kInf : -kInf;
    for (float& w : r.weights)
        if (rng.uniform(0, 9) == 0) w = rng.uniform(0, 1) ? kInf : -kInf;
    std::fill(c.weights.begin(), c.weights.begin() + 64, kInf);  // a row of +inf only
    Context ctx;
    for_each_variant({1, 64, 2048}, {0u, kSorted}, [&](int k, uint32_t flags, bool) {
        INFO("k " << k << ", " << flag_names(flags));
        const TopkOutput paged = expect_success(ctx.get(), c, k, flags, true);
        CHECK(check_valid(c, k, flags, paged.indices(), paged.scores()) == "");
        const TopkOutput ragged = expect_success(ctx.get(), r, k, flags, true);
        CHECK(check_valid(r, k, flags, ragged.indices(), ragged.scores()) == "");
    });
}

// =====================================================================================================
// Rejected input: right status, a message naming the problem, nothing written (SPEC section 4)

namespace {

template <class Call>
struct BadInput {
    const char* what;
    dsa_status_t status;
    const char* message_part;
    std::function<void(Call&)> apply;
};

// The pieces of one valid call, each of which a BadInput breaks. Outputs are poisoned; `arena` is memory
// that a test may use to make outputs overlap a copy of an input.
template <class Case>
struct CallPieces {
    Case c;
    dsa_topk_params_t params;
    TopkOutput out;
    dsa_topk_outputs_t outputs;
    const dsa_topk_params_t* params_arg = &params;
    const dsa_topk_outputs_t* outputs_arg = &outputs;
    dsa_context_t context_override = nullptr;
    bool null_context = false;
    void* stream = nullptr;
    Buffer<uint8_t> arena;

    CallPieces(Case&& made, int k) : c(std::move(made)), params(c.params(k, kSorted)), out(c.rows(), k, true),
                                     outputs(out.outputs()) {}
    CallPieces(const CallPieces&) = delete;

    dsa_context_t context(dsa_context_t ctx) const { return null_context ? nullptr : ctx; }
    int64_t output_bytes() const { return c.rows() * params.topk * 4; }

    // A copy of an input array placed so that it overlaps the last 16 bytes of a new output buffer.
    template <class In, class Out>
    const In* input_overlapping_output(const In* input, size_t count, Out*& output) {
        const size_t offset = size_t(output_bytes()) - 16;
        arena.assign(offset + count * sizeof(In) + 64, kPoisonByte);
        std::memcpy(arena.data() + offset, input, count * sizeof(In));
        output = reinterpret_cast<Out*>(arena.data());
        return reinterpret_cast<const In*>(arena.data() + offset);
    }
};

struct PagedCall : CallPieces<PagedCase> {
    dsa_paged_inputs_t inputs;
    const dsa_paged_inputs_t* inputs_arg = &inputs;

    // Rows: 3 sequences x next_n 2; sequence 0 fills 1.25 pages, sequence 1 part of one, sequence 2 none.
    PagedCall() : CallPieces(random_paged(layout_of(32, 32, 2), {40, 3, 0}, 131), 8), inputs(c.inputs()) {}
    dsa_status_t run(dsa_context_t ctx) {
        return dsa_topk_paged(context(ctx), params_arg, inputs_arg, outputs_arg, nullptr, 0, stream);
    }
    std::vector<uint8_t> snapshot() const {
        std::vector<uint8_t> all;
        for (const auto& part : {bytes_of(c.q), bytes_of(c.k_cache), bytes_of(c.weights), bytes_of(c.seq_lens),
                                 bytes_of(c.block_table), bytes_of(arena)})
            all.insert(all.end(), part.begin(), part.end());
        return all;
    }
    int32_t& table(int32_t seq, int64_t column) { return c.block_table[size_t(seq * c.table_stride + column)]; }
};

struct RaggedCall : CallPieces<RaggedCase> {
    dsa_ragged_inputs_t inputs;
    const dsa_ragged_inputs_t* inputs_arg = &inputs;

    RaggedCall() : CallPieces(make_case(), 8), inputs(c.inputs()) {}
    static RaggedCase make_case() {
        std::vector<std::pair<int32_t, int32_t>> windows = causal_windows({30, 20}, {3, 2});
        windows.emplace_back(5, 5);
        return random_ragged(32, 50, windows, 132);
    }
    dsa_status_t run(dsa_context_t ctx) {
        return dsa_topk_ragged(context(ctx), params_arg, inputs_arg, outputs_arg, nullptr, 0, stream);
    }
    std::vector<uint8_t> snapshot() const {
        std::vector<uint8_t> all;
        for (const auto& part : {bytes_of(c.q), bytes_of(c.k), bytes_of(c.k_scale), bytes_of(c.weights),
                                 bytes_of(c.row_start), bytes_of(c.row_end), bytes_of(arena)})
            all.insert(all.end(), part.begin(), part.end());
        return all;
    }
};

template <class Call>
void expect_all_rejected(const std::vector<BadInput<Call>>& cases) {
    Context ctx;
    {
        Call valid;  // the unbroken call must succeed, or the rejections below prove nothing
        const dsa_status_t status = valid.run(ctx.get());
        INFO(describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
    }
    for (const BadInput<Call>& bad : cases) {
        Call call;
        bad.apply(call);
        const std::vector<uint8_t> before = call.snapshot();
        const dsa_status_t status = call.run(ctx.get());
        INFO(bad.what << " -> " << describe_status(status));
        CHECK(status == bad.status);
        CHECK(message_contains(bad.message_part));
        CHECK(call.out.untouched());
        CHECK(bool(call.snapshot() == before));
    }
}

template <class Call>
std::vector<BadInput<Call>> bad_params_common() {
    auto set = [](auto field, auto value) { return [=](Call& call) { call.params.*field = value; }; };
    using P = dsa_topk_params_t;
    return {
        {"params NULL", DSA_STATUS_INVALID_ARGUMENT, "params", [](Call& call) { call.params_arg = nullptr; }},
        {"outputs NULL", DSA_STATUS_INVALID_ARGUMENT, "outputs", [](Call& call) { call.outputs_arg = nullptr; }},
        {"context NULL", DSA_STATUS_INVALID_ARGUMENT, "context", [](Call& call) { call.null_context = true; }},
        {"num_heads 16", DSA_STATUS_UNSUPPORTED, "num_heads", set(&P::num_heads, 16)},
        {"num_heads 128", DSA_STATUS_UNSUPPORTED, "num_heads", set(&P::num_heads, 128)},
        {"num_heads 0", DSA_STATUS_UNSUPPORTED, "num_heads", set(&P::num_heads, 0)},
        {"head_dim 64", DSA_STATUS_UNSUPPORTED, "head_dim", set(&P::head_dim, 64)},
        {"head_dim 256", DSA_STATUS_UNSUPPORTED, "head_dim", set(&P::head_dim, 256)},
        {"topk 0", DSA_STATUS_UNSUPPORTED, "topk", set(&P::topk, 0)},
        {"topk -3", DSA_STATUS_UNSUPPORTED, "topk", set(&P::topk, -3)},
        {"topk 2049", DSA_STATUS_UNSUPPORTED, "topk", set(&P::topk, 2049)},
        {"flags bit 3", DSA_STATUS_INVALID_ARGUMENT, "flags", set(&P::flags, 0x8u)},
        {"flags bit 31", DSA_STATUS_INVALID_ARGUMENT, "flags", set(&P::flags, 0x80000001u)},
        {"outputs->indices NULL", DSA_STATUS_INVALID_ARGUMENT, "indices",
         [](Call& call) { call.outputs.indices = nullptr; }},
        {"outputs->indices misaligned", DSA_STATUS_INVALID_ARGUMENT, "indices",
         [](Call& call) { call.outputs.indices = reinterpret_cast<int32_t*>(reinterpret_cast<char*>(call.outputs.indices) + 1); }},
        {"outputs->scores misaligned", DSA_STATUS_INVALID_ARGUMENT, "scores",
         [](Call& call) { call.outputs.scores = reinterpret_cast<float*>(reinterpret_cast<char*>(call.outputs.scores) + 2); }},
        {"scores overlap indices", DSA_STATUS_INVALID_ARGUMENT, "overlap",
         [](Call& call) { call.outputs.scores = reinterpret_cast<float*>(call.outputs.indices + 4); }},
        {"scores are indices", DSA_STATUS_INVALID_ARGUMENT, "overlap",
         [](Call& call) { call.outputs.scores = reinterpret_cast<float*>(call.outputs.indices); }},
        {"scores overlap weights", DSA_STATUS_INVALID_ARGUMENT, "weights",
         [](Call& call) { call.outputs.scores = call.c.weights.data(); }},
        {"a stream on a CPU context", DSA_STATUS_INVALID_ARGUMENT, "stream",
         [](Call& call) { call.stream = &call.params; }},
        {"a NaN weight", DSA_STATUS_INVALID_ARGUMENT, "NaN",
         [](Call& call) { call.c.weights[call.c.weights.size() - 3] = kNaN; }},
    };
}

}  // namespace

TEST_CASE("paged calls reject bad input and write nothing", "[cpu][validation][paged]") {
    using C = PagedCall;
    std::vector<BadInput<C>> cases = bad_params_common<C>();
    const int64_t min_stride = 32 * (kHeadDim + 4);
    const std::vector<BadInput<C>> paged_only = {
        {"inputs NULL", DSA_STATUS_INVALID_ARGUMENT, "inputs", [](C& call) { call.inputs_arg = nullptr; }},
        {"page_size 16", DSA_STATUS_UNSUPPORTED, "page_size", [](C& call) { call.params.page_size = 16; }},
        {"page_size 128", DSA_STATUS_UNSUPPORTED, "page_size", [](C& call) { call.params.page_size = 128; }},
        {"page_size 1 (prefill layout only)", DSA_STATUS_UNSUPPORTED, "page_size", [](C& call) { call.params.page_size = 1; }},
        {"next_n 0", DSA_STATUS_UNSUPPORTED, "next_n", [](C& call) { call.params.next_n = 0; }},
        {"next_n 5", DSA_STATUS_UNSUPPORTED, "next_n", [](C& call) { call.params.next_n = 5; }},
        {"ABSOLUTE_INDICES on a paged call", DSA_STATUS_INVALID_ARGUMENT, "ABSOLUTE",
         [](C& call) { call.params.flags |= kAbsolute; }},
        {"batch_size -1", DSA_STATUS_INVALID_ARGUMENT, "batch_size", [](C& call) { call.inputs.batch_size = -1; }},
        {"max_pages -1", DSA_STATUS_INVALID_ARGUMENT, "max_pages", [](C& call) { call.inputs.max_pages = -1; }},
        {"num_pages -1", DSA_STATUS_INVALID_ARGUMENT, "num_pages", [](C& call) { call.inputs.num_pages = -1; }},
        {"block_table_stride below max_pages", DSA_STATUS_INVALID_ARGUMENT, "block_table_stride",
         [](C& call) { call.inputs.block_table_stride = call.inputs.max_pages - 1; }},
        {"max_pages * P beyond int32", DSA_STATUS_UNSUPPORTED, "max_pages", [](C& call) {
             call.inputs.max_pages = std::numeric_limits<int32_t>::max() / 32 + 1;
             call.inputs.block_table_stride = call.inputs.max_pages;
         }},
        {"num_pages * P beyond int32", DSA_STATUS_UNSUPPORTED, "num_pages",
         [](C& call) { call.inputs.num_pages = (int64_t(1) << 31) / 32 + 1; }},
        {"page_stride_bytes below P * (D + 4)", DSA_STATUS_INVALID_ARGUMENT, "page_stride_bytes",
         [=](C& call) { call.inputs.page_stride_bytes = min_stride - 16; }},
        {"page_stride_bytes not a multiple of 16", DSA_STATUS_INVALID_ARGUMENT, "page_stride_bytes",
         [=](C& call) { call.inputs.page_stride_bytes = min_stride + 8; }},
        {"page_stride_bytes 0", DSA_STATUS_INVALID_ARGUMENT, "page_stride_bytes",
         [](C& call) { call.inputs.page_stride_bytes = 0; }},
        {"q NULL", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) { call.inputs.q = nullptr; }},
        {"k_cache NULL", DSA_STATUS_INVALID_ARGUMENT, "k_cache", [](C& call) { call.inputs.k_cache = nullptr; }},
        {"weights NULL", DSA_STATUS_INVALID_ARGUMENT, "weights", [](C& call) { call.inputs.weights = nullptr; }},
        {"seq_lens NULL", DSA_STATUS_INVALID_ARGUMENT, "seq_lens", [](C& call) { call.inputs.seq_lens = nullptr; }},
        {"block_table NULL", DSA_STATUS_INVALID_ARGUMENT, "block_table", [](C& call) { call.inputs.block_table = nullptr; }},
        {"q misaligned", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) { call.inputs.q = call.c.q.data() + 1; }},
        {"q 8-byte aligned only", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) { call.inputs.q = call.c.q.data() + 8; }},
        {"k_cache misaligned", DSA_STATUS_INVALID_ARGUMENT, "k_cache",
         [](C& call) { call.inputs.k_cache = call.c.k_cache.data() + 4; }},
        {"weights misaligned", DSA_STATUS_INVALID_ARGUMENT, "weights", [](C& call) {
             call.inputs.weights = reinterpret_cast<const float*>(reinterpret_cast<const char*>(call.c.weights.data()) + 2);
         }},
        {"seq_lens misaligned", DSA_STATUS_INVALID_ARGUMENT, "seq_lens", [](C& call) {
             call.inputs.seq_lens = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(call.c.seq_lens.data()) + 1);
         }},
        {"block_table misaligned", DSA_STATUS_INVALID_ARGUMENT, "block_table", [](C& call) {
             call.inputs.block_table = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(call.c.block_table.data()) + 2);
         }},
        {"seq_len beyond max_pages * P", DSA_STATUS_INVALID_ARGUMENT, "seq_lens",
         [](C& call) { call.c.seq_lens[1] = call.inputs.max_pages * 32 + 1; }},
        {"seq_len negative", DSA_STATUS_INVALID_ARGUMENT, "seq_lens", [](C& call) { call.c.seq_lens[2] = -1; }},
        {"block-table entry -1 in a visible page", DSA_STATUS_INVALID_ARGUMENT, "block_table",
         [](C& call) { call.table(1, 0) = -1; }},
        {"block-table entry num_pages in a visible page", DSA_STATUS_INVALID_ARGUMENT, "block_table",
         [](C& call) { call.table(0, 0) = int32_t(call.c.num_pages); }},
        {"block-table entry out of range in a partly visible page", DSA_STATUS_INVALID_ARGUMENT, "block_table",
         [](C& call) { call.table(0, 1) = 1 << 30; }},
        {"indices overlap q", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) {
             call.inputs.q = call.input_overlapping_output(call.c.q.data(), call.c.q.size(), call.outputs.indices);
         }},
        {"indices overlap k_cache", DSA_STATUS_INVALID_ARGUMENT, "k_cache", [](C& call) {
             call.inputs.k_cache = call.input_overlapping_output(call.c.k_cache.data(), call.c.k_cache.size(), call.outputs.indices);
         }},
        {"indices overlap weights", DSA_STATUS_INVALID_ARGUMENT, "weights", [](C& call) {
             call.inputs.weights = call.input_overlapping_output(call.c.weights.data(), call.c.weights.size(), call.outputs.indices);
         }},
        {"indices overlap seq_lens", DSA_STATUS_INVALID_ARGUMENT, "seq_lens", [](C& call) {
             call.inputs.seq_lens = call.input_overlapping_output(call.c.seq_lens.data(), call.c.seq_lens.size(), call.outputs.indices);
         }},
        {"indices overlap block_table", DSA_STATUS_INVALID_ARGUMENT, "block_table", [](C& call) {
             call.inputs.block_table =
                 call.input_overlapping_output(call.c.block_table.data(), call.c.block_table.size(), call.outputs.indices);
         }},
        {"scores overlap k_cache", DSA_STATUS_INVALID_ARGUMENT, "k_cache", [](C& call) {
             call.inputs.k_cache = call.input_overlapping_output(call.c.k_cache.data(), call.c.k_cache.size(), call.outputs.scores);
         }},
    };
    cases.insert(cases.end(), paged_only.begin(), paged_only.end());
    expect_all_rejected(cases);
}

TEST_CASE("ragged calls reject bad input and write nothing", "[cpu][validation][ragged]") {
    using C = RaggedCall;
    std::vector<BadInput<C>> cases = bad_params_common<C>();
    auto window = [](int32_t row, int32_t start, int32_t end) {
        return [=](C& call) {
            call.c.row_start[size_t(row)] = start;
            call.c.row_end[size_t(row)] = end;
        };
    };
    const std::vector<BadInput<C>> ragged_only = {
        {"inputs NULL", DSA_STATUS_INVALID_ARGUMENT, "inputs", [](C& call) { call.inputs_arg = nullptr; }},
        {"LOGICAL_INDICES on a ragged call", DSA_STATUS_INVALID_ARGUMENT, "LOGICAL",
         [](C& call) { call.params.flags |= kLogical; }},
        {"num_rows -1", DSA_STATUS_INVALID_ARGUMENT, "num_rows", [](C& call) { call.inputs.num_rows = -1; }},
        {"num_keys -1", DSA_STATUS_INVALID_ARGUMENT, "num_keys", [](C& call) { call.inputs.num_keys = -1; }},
        {"num_keys beyond int32", DSA_STATUS_UNSUPPORTED, "num_keys",
         [](C& call) { call.inputs.num_keys = int64_t(1) << 31; }},
        {"q NULL", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) { call.inputs.q = nullptr; }},
        {"k NULL", DSA_STATUS_INVALID_ARGUMENT, "k", [](C& call) { call.inputs.k = nullptr; }},
        {"k_scale NULL", DSA_STATUS_INVALID_ARGUMENT, "k_scale", [](C& call) { call.inputs.k_scale = nullptr; }},
        {"weights NULL", DSA_STATUS_INVALID_ARGUMENT, "weights", [](C& call) { call.inputs.weights = nullptr; }},
        {"row_start NULL", DSA_STATUS_INVALID_ARGUMENT, "row_start", [](C& call) { call.inputs.row_start = nullptr; }},
        {"row_end NULL", DSA_STATUS_INVALID_ARGUMENT, "row_end", [](C& call) { call.inputs.row_end = nullptr; }},
        {"q misaligned", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) { call.inputs.q = call.c.q.data() + 4; }},
        {"k misaligned", DSA_STATUS_INVALID_ARGUMENT, "k", [](C& call) { call.inputs.k = call.c.k.data() + 8; }},
        {"k_scale misaligned", DSA_STATUS_INVALID_ARGUMENT, "k_scale", [](C& call) {
             call.inputs.k_scale = reinterpret_cast<const float*>(reinterpret_cast<const char*>(call.c.k_scale.data()) + 1);
         }},
        {"row_end misaligned", DSA_STATUS_INVALID_ARGUMENT, "row_end", [](C& call) {
             call.inputs.row_end = reinterpret_cast<const int32_t*>(reinterpret_cast<const char*>(call.c.row_end.data()) + 2);
         }},
        {"window start > end", DSA_STATUS_INVALID_ARGUMENT, "row 2", window(2, 20, 19)},
        {"window end > N", DSA_STATUS_INVALID_ARGUMENT, "row 4", window(4, 30, 51)},
        {"window start < 0", DSA_STATUS_INVALID_ARGUMENT, "row 0", window(0, -1, 3)},
        {"indices overlap k", DSA_STATUS_INVALID_ARGUMENT, "k", [](C& call) {
             call.inputs.k = call.input_overlapping_output(call.c.k.data(), call.c.k.size(), call.outputs.indices);
         }},
        {"indices overlap k_scale", DSA_STATUS_INVALID_ARGUMENT, "k_scale", [](C& call) {
             call.inputs.k_scale = call.input_overlapping_output(call.c.k_scale.data(), call.c.k_scale.size(), call.outputs.indices);
         }},
        {"indices overlap q", DSA_STATUS_INVALID_ARGUMENT, "q", [](C& call) {
             call.inputs.q = call.input_overlapping_output(call.c.q.data(), call.c.q.size(), call.outputs.indices);
         }},
        {"indices overlap row_start", DSA_STATUS_INVALID_ARGUMENT, "row_start", [](C& call) {
             call.inputs.row_start = call.input_overlapping_output(call.c.row_start.data(), call.c.row_start.size(), call.outputs.indices);
         }},
        {"scores overlap row_end", DSA_STATUS_INVALID_ARGUMENT, "row_end", [](C& call) {
             call.inputs.row_end = call.input_overlapping_output(call.c.row_end.data(), call.c.row_end.size(), call.outputs.scores);
         }},
    };
    cases.insert(cases.end(), ragged_only.begin(), ragged_only.end());
    expect_all_rejected(cases);
}

TEST_CASE("edge inputs that must be accepted", "[cpu][validation]") {
    Context ctx;
    SECTION("out-of-range block-table entries in unused columns are never read") {
        PagedCase c = random_paged(layout_of(64, 64, 2), {70, 3, 0}, 141);
        const Oracle oracle = compute_oracle(c);
        c.block_table[size_t(0 * c.table_stride + 2)] = -1;  // sequence 0 uses columns 0 and 1
        c.block_table[size_t(1 * c.table_stride + 1)] = std::numeric_limits<int32_t>::max();
        c.block_table[size_t(1 * c.table_stride + 2)] = int32_t(c.num_pages);
        for (int64_t col = 0; col < c.max_pages; ++col) c.block_table[size_t(2 * c.table_stride + col)] = -7;
        const TopkOutput out = expect_success(ctx.get(), c, 16, kSorted, true);
        CHECK(check_spec5(c, oracle, 16, kSorted, out.indices(), out.scores()) == "");
    }
    SECTION("batch_size 0 is a no-op, with or without pointers") {
        dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
        dsa_paged_inputs_t inputs = DSA_PAGED_INPUTS_INIT;
        inputs.page_stride_bytes = 64 * (kHeadDim + 4);
        TopkOutput out(1, 2048, true);
        dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
        CHECK(dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);
        outputs = out.outputs();
        CHECK(dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);
        CHECK(out.untouched());
    }
    SECTION("num_rows 0 is a no-op; ragged calls ignore page_size and next_n") {
        dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
        dsa_ragged_inputs_t inputs = DSA_RAGGED_INPUTS_INIT;
        dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
        CHECK(dsa_topk_ragged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);

        const RaggedCase c = random_ragged(32, 200, causal_windows({200}, {4}), 142);
        const TopkOutput reference = expect_success(ctx.get(), c, 20, kSorted, true);
        for (auto [page_size, next_n] : {std::pair{7, 0}, std::pair{1, 9}, std::pair{-1, -1}}) {
            INFO("page_size " << page_size << ", next_n " << next_n);
            params = c.params(20, kSorted);
            params.page_size = page_size;
            params.next_n = next_n;
            const dsa_ragged_inputs_t in = c.inputs();
            TopkOutput out(c.rows(), 20, true);
            outputs = out.outputs();
            CHECK(dsa_topk_ragged(ctx.get(), &params, &in, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);
            CHECK(out.same_bits(reference));
        }
    }
    SECTION("empty sequences need no block table nor cache") {
        PagedCase c = random_paged(layout_of(64, 64, 3), {0, 0, 0}, 144);
        dsa_topk_params_t params = c.params(4, kSorted);
        dsa_paged_inputs_t inputs = c.inputs();
        inputs.max_pages = 0;
        inputs.block_table_stride = 0;
        inputs.block_table = nullptr;
        inputs.num_pages = 0;
        inputs.k_cache = nullptr;
        TopkOutput out(c.rows(), 4, true);
        const dsa_topk_outputs_t outputs = out.outputs();
        CHECK(dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);
        CHECK(check_valid(c, 4, kSorted, out.indices(), out.scores()) == "");  // all padding
    }
    SECTION("a ragged batch whose rows are all empty") {
        const RaggedCase c = random_ragged(64, 10, {{0, 0}, {10, 10}, {4, 4}}, 143);
        const TopkOutput out = expect_success(ctx.get(), c, 5, 0, true);
        CHECK(check_valid(c, 5, 0, out.indices(), out.scores()) == "");
    }
}

TEST_CASE("workspace size queries return 0 on the CPU backend", "[cpu][api]") {
    Context ctx;
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    dsa_paged_inputs_t paged = DSA_PAGED_INPUTS_INIT;  // only sizes are read: pointers may be NULL
    paged.batch_size = 4096;
    paged.max_pages = 16384;
    paged.block_table_stride = 16384;
    paged.num_pages = 100000;
    dsa_ragged_inputs_t ragged = DSA_RAGGED_INPUTS_INIT;
    ragged.num_rows = 8192;
    ragged.num_keys = 1 << 20;
    size_t bytes = 12345;
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), &params, &paged, &bytes) == DSA_STATUS_SUCCESS);
    CHECK(bytes == 0);
    bytes = 12345;
    CHECK(dsa_topk_ragged_workspace_size(ctx.get(), &params, &ragged, &bytes) == DSA_STATUS_SUCCESS);
    CHECK(bytes == 0);

    bytes = 777;
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), &params, &paged, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(dsa_topk_paged_workspace_size(nullptr, &params, &paged, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), nullptr, &paged, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), &params, nullptr, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(dsa_topk_ragged_workspace_size(ctx.get(), &params, &ragged, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
    params.topk = 0;
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), &params, &paged, &bytes) == DSA_STATUS_UNSUPPORTED);
    CHECK(dsa_topk_ragged_workspace_size(ctx.get(), &params, &ragged, &bytes) == DSA_STATUS_UNSUPPORTED);
    params.topk = 2048;
    paged.batch_size = -1;
    CHECK(dsa_topk_paged_workspace_size(ctx.get(), &params, &paged, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    ragged.num_keys = -1;
    CHECK(dsa_topk_ragged_workspace_size(ctx.get(), &params, &ragged, &bytes) == DSA_STATUS_INVALID_ARGUMENT);
    CHECK(bytes == 777);  // failed queries leave the result alone
}

// =====================================================================================================
// The owned cache

namespace {

// An owned cache holding exactly the pages of a paged case (slot = physical page * P + offset).
class OwnedCache {
public:
    OwnedCache(dsa_context_t ctx, const PagedCase& c) : page_size_(c.layout.page_size) {
        dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
        config.num_pages = c.num_pages;
        config.page_size = c.layout.page_size;
        const dsa_status_t status = dsa_cache_create(ctx, &config, &cache_);
        INFO(describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
        num_slots_ = c.num_pages * page_size_;
    }
    ~OwnedCache() { dsa_cache_destroy(cache_); }
    dsa_cache_t get() const { return cache_; }
    int64_t num_slots() const { return num_slots_; }

    // Every slot's key and scale, in the order of `slots`.
    void read(const std::vector<int64_t>& slots, std::vector<uint8_t>& keys, std::vector<float>& scales) const {
        keys.assign(slots.size() * kHeadDim, 0xEE);
        scales.assign(slots.size(), -1.0f);
        REQUIRE(dsa_cache_read(cache_, slots.data(), keys.data(), scales.data(), int64_t(slots.size()), DSA_MEMORY_HOST) ==
                DSA_STATUS_SUCCESS);
    }
    std::vector<int64_t> all_slots() const {
        std::vector<int64_t> slots(static_cast<size_t>(num_slots_));
        for (int64_t s = 0; s < num_slots_; ++s) slots[size_t(s)] = s;
        return slots;
    }

private:
    int page_size_;
    int64_t num_slots_ = 0;
    dsa_cache_t cache_ = nullptr;
};

// Keys and scales of the given slots of a paged case's caller-owned cache.
void slots_of_case(const PagedCase& c, const std::vector<int64_t>& slots, std::vector<uint8_t>& keys, std::vector<float>& scales) {
    const int P = c.layout.page_size;
    keys.resize(slots.size() * kHeadDim);
    scales.resize(slots.size());
    for (size_t i = 0; i < slots.size(); ++i) {
        const uint8_t* page = c.k_cache.data() + (slots[i] / P) * c.page_stride;
        std::memcpy(&keys[i * kHeadDim], page + (slots[i] % P) * kHeadDim, kHeadDim);
        std::memcpy(&scales[i], page + int64_t(P) * kHeadDim + (slots[i] % P) * 4, 4);
    }
}

dsa_status_t run_owned(dsa_context_t ctx, dsa_cache_t cache, const dsa_topk_params_t& params,
                       const dsa_paged_inputs_t& inputs, TopkOutput& out) {
    const dsa_topk_outputs_t outputs = out.outputs();
    return dsa_topk(ctx, cache, &params, &inputs, &outputs);
}

dsa_paged_inputs_t owned_inputs(const PagedCase& c) {
    dsa_paged_inputs_t in = c.inputs();
    in.k_cache = nullptr;
    in.num_pages = 0;
    in.page_stride_bytes = 0;
    return in;
}

}  // namespace

TEST_CASE("owned cache: written tokens read back exactly and give the caller-owned results", "[cpu][cache]") {
    const int page_size = GENERATE(32, 64);
    Context ctx;
    PagedLayout layout = layout_of(64, page_size, 2);
    layout.page_padding_bytes = 32;  // the caller-owned copy may be padded; the owned cache is not
    const PagedCase c = random_paged(layout, {100, 37, 0, 260}, seed_of(page_size, 3, 3));
    OwnedCache cache(ctx.get(), c);

    std::vector<uint8_t> keys, read_keys;
    std::vector<float> scales, read_scales;
    const std::vector<int64_t> all = cache.all_slots();
    cache.read(all, read_keys, read_scales);  // fresh: zero keys and scales
    CHECK(std::all_of(read_keys.begin(), read_keys.end(), [](uint8_t b) { return b == 0; }));
    CHECK(std::all_of(read_scales.begin(), read_scales.end(), [](float s) { return s == 0.0f; }));

    // Written in a shuffled order, in two calls.
    std::vector<int64_t> shuffled = all;
    Rng rng(5);
    std::shuffle(shuffled.begin(), shuffled.end(), rng.engine());
    slots_of_case(c, shuffled, keys, scales);
    const int64_t half = int64_t(shuffled.size()) / 2;
    REQUIRE(dsa_cache_write(cache.get(), shuffled.data(), keys.data(), scales.data(), half, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
    REQUIRE(dsa_cache_write(cache.get(), shuffled.data() + half, keys.data() + half * kHeadDim, scales.data() + half,
                            int64_t(shuffled.size()) - half, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
    cache.read(shuffled, read_keys, read_scales);
    CHECK(bool(read_keys == keys));
    CHECK(std::memcmp(read_scales.data(), scales.data(), scales.size() * 4) == 0);

    for_each_variant({1, 64, 2048}, {0u, kSorted | kLogical}, [&](int k, uint32_t flags, bool with_scores) {
        INFO("k " << k << ", " << flag_names(flags));
        const TopkOutput expected = expect_success(ctx.get(), c, k, flags, with_scores);
        TopkOutput out(c.rows(), k, with_scores);
        const dsa_status_t status = run_owned(ctx.get(), cache.get(), c.params(k, flags), owned_inputs(c), out);
        INFO(describe_status(status));
        REQUIRE(status == DSA_STATUS_SUCCESS);
        CHECK(out.same_bits(expected));
        CHECK(out.guards_intact());
    });
}

TEST_CASE("owned cache: a repeated slot takes its last occurrence", "[cpu][cache]") {
    Context ctx;
    const PagedCase c(layout_of(32, 32, 1), {64}, 151);
    OwnedCache cache(ctx.get(), c);
    const std::vector<int64_t> slots = {5, 9, 5, 40, 5};
    std::vector<uint8_t> keys(slots.size() * kHeadDim);
    for (size_t i = 0; i < slots.size(); ++i) std::fill_n(&keys[i * kHeadDim], kHeadDim, uint8_t(0x30 + i));
    const std::vector<float> scales = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f};
    REQUIRE(dsa_cache_write(cache.get(), slots.data(), keys.data(), scales.data(), 5, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
    std::vector<uint8_t> read_keys;
    std::vector<float> read_scales;
    cache.read({5, 9, 40}, read_keys, read_scales);
    CHECK(read_scales == std::vector<float>{5.0f, 2.0f, 4.0f});
    CHECK(read_keys[0] == 0x34);
    CHECK(read_keys[kHeadDim] == 0x31);
    CHECK(read_keys[2 * kHeadDim] == 0x33);
}

TEST_CASE("owned cache: bad input is rejected and changes nothing", "[cpu][cache][validation]") {
    Context ctx;
    const PagedCase c = random_paged(layout_of(32, 32, 1), {50, 20}, 161);
    OwnedCache cache(ctx.get(), c);
    std::vector<uint8_t> keys;
    std::vector<float> scales;
    const std::vector<int64_t> all = cache.all_slots();
    slots_of_case(c, all, keys, scales);
    REQUIRE(dsa_cache_write(cache.get(), all.data(), keys.data(), scales.data(), int64_t(all.size()), DSA_MEMORY_HOST) ==
            DSA_STATUS_SUCCESS);
    auto cache_unchanged = [&] {
        std::vector<uint8_t> now_keys;
        std::vector<float> now_scales;
        cache.read(all, now_keys, now_scales);
        return now_keys == keys && std::memcmp(now_scales.data(), scales.data(), scales.size() * 4) == 0;
    };

    SECTION("writes and reads") {
        std::vector<uint8_t> new_keys(3 * kHeadDim, 0x40);
        const std::vector<float> new_scales = {7.0f, 7.0f, 7.0f};
        const int64_t slots_count = cache.num_slots();
        const std::vector<std::pair<const char*, std::vector<int64_t>>> bad_slots = {
            {"slot num_slots last", {0, 1, slots_count}},
            {"slot -1 first", {-1, 1, 2}},
            {"slot far out", {3, int64_t(1) << 40, 4}},
        };
        for (const auto& [what, slots] : bad_slots) {
            INFO(what);
            CHECK(dsa_cache_write(cache.get(), slots.data(), new_keys.data(), new_scales.data(), 3, DSA_MEMORY_HOST) ==
                  DSA_STATUS_INVALID_ARGUMENT);
            CHECK(message_contains("slots"));
            CHECK(cache_unchanged());
            std::vector<uint8_t> out_keys(3 * kHeadDim, kPoisonByte);
            std::vector<float> out_scales(3, 1.5f);
            CHECK(dsa_cache_read(cache.get(), slots.data(), out_keys.data(), out_scales.data(), 3, DSA_MEMORY_HOST) ==
                  DSA_STATUS_INVALID_ARGUMENT);
            CHECK(std::all_of(out_keys.begin(), out_keys.end(), [](uint8_t b) { return b == kPoisonByte; }));
            CHECK(out_scales == std::vector<float>(3, 1.5f));
        }
        const std::vector<int64_t> good = {1, 2, 3};
        for (int32_t device : {0, 1, -2}) {
            INFO("memory_device " << device);
            CHECK(dsa_cache_write(cache.get(), good.data(), new_keys.data(), new_scales.data(), 3, device) ==
                  DSA_STATUS_INVALID_ARGUMENT);
            CHECK(message_contains("memory_device"));
            std::vector<float> out_scales(3, 1.5f);
            CHECK(dsa_cache_read(cache.get(), good.data(), new_keys.data(), out_scales.data(), 3, device) ==
                  DSA_STATUS_INVALID_ARGUMENT);
            CHECK(out_scales == std::vector<float>(3, 1.5f));
        }
        CHECK(dsa_cache_write(cache.get(), nullptr, new_keys.data(), new_scales.data(), 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(cache.get(), good.data(), nullptr, new_scales.data(), 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(cache.get(), good.data(), new_keys.data(), nullptr, 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(cache.get(), good.data(), new_keys.data(), new_scales.data(), -1, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(nullptr, good.data(), new_keys.data(), new_scales.data(), 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_read(nullptr, good.data(), new_keys.data(), nullptr, 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_read(cache.get(), good.data(), new_keys.data(), nullptr, 3, DSA_MEMORY_HOST) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_write(cache.get(), nullptr, nullptr, nullptr, 0, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
        CHECK(cache_unchanged());
    }
    SECTION("creation") {
        dsa_cache_t out = reinterpret_cast<dsa_cache_t>(uintptr_t(0x5A5A5A50));
        const dsa_cache_t untouched = out;
        auto expect_create = [&](dsa_cache_config_t config, dsa_status_t status, const char* part) {
            CHECK(dsa_cache_create(ctx.get(), &config, &out) == status);
            CHECK(message_contains(part));
            CHECK(out == untouched);
        };
        dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
        expect_create(config, DSA_STATUS_INVALID_ARGUMENT, "num_pages");  // 0 pages
        config.num_pages = -4;
        expect_create(config, DSA_STATUS_INVALID_ARGUMENT, "num_pages");
        config.num_pages = 4;
        config.page_size = 16;
        expect_create(config, DSA_STATUS_UNSUPPORTED, "page_size");
        config.page_size = 64;
        config.head_dim = 64;
        expect_create(config, DSA_STATUS_UNSUPPORTED, "head_dim");
        config.head_dim = 128;
        config.num_pages = (int64_t(1) << 31) / 64 + 1;
        expect_create(config, DSA_STATUS_UNSUPPORTED, "num_pages");
        config.num_pages = 4;
        CHECK(dsa_cache_create(ctx.get(), nullptr, &out) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_create(ctx.get(), &config, nullptr) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(dsa_cache_create(nullptr, &config, &out) == DSA_STATUS_INVALID_ARGUMENT);
        CHECK(out == untouched);
    }
    SECTION("top-k calls") {
        Context other_ctx;
        const dsa_topk_params_t params = c.params(8, 0);
        const dsa_paged_inputs_t inputs = owned_inputs(c);
        const std::vector<std::tuple<const char*, dsa_status_t, std::function<dsa_status_t(TopkOutput&)>>> bad_calls = {
            {"k_cache given", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 dsa_paged_inputs_t in = inputs;
                 in.k_cache = c.k_cache.data();
                 return run_owned(ctx.get(), cache.get(), params, in, out);
             }},
            {"num_pages given", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 dsa_paged_inputs_t in = inputs;
                 in.num_pages = c.num_pages;
                 return run_owned(ctx.get(), cache.get(), params, in, out);
             }},
            {"page_stride_bytes given", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 dsa_paged_inputs_t in = inputs;
                 in.page_stride_bytes = c.page_stride;
                 return run_owned(ctx.get(), cache.get(), params, in, out);
             }},
            {"page_size differs from the cache's", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 dsa_topk_params_t p = params;
                 p.page_size = 64;
                 return run_owned(ctx.get(), cache.get(), p, inputs, out);
             }},
            {"head_dim unsupported", DSA_STATUS_UNSUPPORTED, [&](TopkOutput& out) {
                 dsa_topk_params_t p = params;
                 p.head_dim = 64;
                 return run_owned(ctx.get(), cache.get(), p, inputs, out);
             }},
            {"block-table entry beyond the cache", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 Buffer<int32_t> table = c.block_table;
                 table[0] = int32_t(c.num_pages);
                 dsa_paged_inputs_t in = inputs;
                 in.block_table = table.data();
                 return run_owned(ctx.get(), cache.get(), params, in, out);
             }},
            {"a NaN weight", DSA_STATUS_INVALID_ARGUMENT, [&](TopkOutput& out) {
                 Buffer<float> weights = c.weights;
                 weights[7] = kNaN;
                 dsa_paged_inputs_t in = inputs;
                 in.weights = weights.data();
                 return run_owned(ctx.get(), cache.get(), params, in, out);
             }},
            {"the cache of another context", DSA_STATUS_INVALID_ARGUMENT,
             [&](TopkOutput& out) { return run_owned(other_ctx.get(), cache.get(), params, inputs, out); }},
            {"cache NULL", DSA_STATUS_INVALID_ARGUMENT,
             [&](TopkOutput& out) { return run_owned(ctx.get(), nullptr, params, inputs, out); }},
            {"context NULL", DSA_STATUS_INVALID_ARGUMENT,
             [&](TopkOutput& out) { return run_owned(nullptr, cache.get(), params, inputs, out); }},
        };
        {
            TopkOutput out(c.rows(), 8, true);
            REQUIRE(run_owned(ctx.get(), cache.get(), params, inputs, out) == DSA_STATUS_SUCCESS);
        }
        for (const auto& [what, status, call] : bad_calls) {
            INFO(what);
            TopkOutput out(c.rows(), 8, true);
            CHECK(call(out) == status);
            CHECK(out.untouched());
        }
        CHECK(cache_unchanged());
    }
}

// =====================================================================================================
// Determinism

TEST_CASE("results are bitwise identical across runs and CPU thread counts", "[cpu][determinism]") {
    // Sequences longer than one scoring chunk, so that threads split work inside a sequence.
    const PagedCase paged = random_paged(layout_of(64, 64, 2), {5000, 4100, 300, 0, 2049}, 171);
    const RaggedCase ragged = random_ragged(64, 6000, causal_windows({5000, 1000}, {3, 3}), 172);
    for (auto [k, flags] : {std::pair{2048, kSorted}, std::pair{512, 0u}}) {
        INFO("k " << k << ", " << flag_names(flags));
        Context reference_ctx(1);
        const TopkOutput paged_reference = expect_success(reference_ctx.get(), paged, k, flags, true);
        const TopkOutput ragged_reference = expect_success(reference_ctx.get(), ragged, k, flags | (flags ? kAbsolute : 0), true);
        CHECK(expect_success(reference_ctx.get(), paged, k, flags, true).same_bits(paged_reference));
        for (int32_t threads : {2, 3}) {
            INFO(threads << " threads");
            Context ctx(threads);
            CHECK(expect_success(ctx.get(), paged, k, flags, true).same_bits(paged_reference));
            CHECK(expect_success(ctx.get(), ragged, k, flags | (flags ? kAbsolute : 0), true).same_bits(ragged_reference));
        }
        // A sequence's rows do not depend on the rest of the batch.
        for (auto [first, count] : {std::pair{0, 1}, std::pair{1, 3}, std::pair{4, 1}}) {
            INFO("sequences " << first << " .. " << first + count - 1 << " alone");
            const dsa_topk_params_t params = paged.params(k, flags);
            const dsa_paged_inputs_t inputs = sub_batch(paged.inputs(), paged.heads(), paged.layout.next_n, first, count);
            TopkOutput out(int64_t(count) * paged.layout.next_n, k, true);
            const dsa_topk_outputs_t outputs = out.outputs();
            REQUIRE(dsa_topk_paged(reference_ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr) == DSA_STATUS_SUCCESS);
            const int64_t offset = int64_t(first) * paged.layout.next_n * k, values = out.rows * k;
            CHECK(std::equal(out.indices(), out.indices() + values, paged_reference.indices() + offset));
            CHECK(std::memcmp(out.scores(), paged_reference.scores() + offset, size_t(values) * 4) == 0);
        }
    }
}

// =====================================================================================================
// Resource exhaustion: "no call aborts the process" (dsa_indexer.h)

#if defined(__linux__)
namespace {

int64_t address_space_bytes() {
    std::ifstream status("/proc/self/status");
    for (std::string line; std::getline(status, line);)
        if (line.rfind("VmSize:", 0) == 0) return std::stoll(line.substr(7)) * 1024;
    return -1;
}

// Runs `child` in a forked process whose address space may grow by `headroom` bytes only; "" when it
// exits with 0, else how it ended. The limit stays in the child; Catch's signal handlers are dropped there.
std::string run_in_limited_child(int64_t headroom, const std::function<int()>& child) {
    const int64_t now = address_space_bytes();
    if (now < 0) return "cannot read VmSize";
    std::fflush(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {
        for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE}) signal(sig, SIG_DFL);
        const rlimit limit{rlim_t(now + headroom), rlim_t(now + headroom)};
        setrlimit(RLIMIT_AS, &limit);
        _exit(child());
    }
    int wait_status = 0;
    if (pid < 0 || waitpid(pid, &wait_status, 0) != pid) return "fork/waitpid failed";
    if (WIFSIGNALED(wait_status))
        return "the process was killed by signal " + std::to_string(WTERMSIG(wait_status)) +
               (WTERMSIG(wait_status) == SIGABRT ? " (SIGABRT: std::terminate)" : "");
    return WEXITSTATUS(wait_status) == 0 ? "" : "the child reported exit code " + std::to_string(WEXITSTATUS(wait_status));
}

}  // namespace

TEST_CASE("running out of threads or memory gives a status, never an abort", "[cpu][robustness]") {
    // num_cpu_threads 512 is accepted; with 512 sequences every phase wants 512 workers. Under an address-space
    // limit well below 512 thread stacks, creating a worker fails part-way: the call must return an error
    // status with nothing written (or succeed with a valid result), not take the process down.
    const PagedCase c = random_paged(layout_of(32, 32, 1), std::vector<int32_t>(512, 40), 191);
    dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
    config.num_cpu_threads = 512;
    dsa_context_t ctx = nullptr;
    REQUIRE(dsa_context_create(&config, &ctx) == DSA_STATUS_SUCCESS);
    TopkOutput out(c.rows(), 8, true);
    const std::string outcome = run_in_limited_child(int64_t(256) << 20, [&] {
        const dsa_status_t status = run_paged(ctx, c, 8, 0, out);
        if (status == DSA_STATUS_SUCCESS) return check_valid(c, 8, 0, out.indices(), out.scores()).empty() ? 0 : 10;
        std::fprintf(stderr, "under the limit: %s\n", describe_status(status).c_str());
        return out.untouched() ? 0 : 11;  // a failed call must not have written the outputs
    });
    CHECK(outcome == "");
    CHECK(dsa_context_destroy(ctx) == DSA_STATUS_SUCCESS);
}
#endif
