// CPU contexts: creation, device counts, GPU requests without a GPU, caches pinning a context, sharing one.
#include <thread>

#include "test_cpu_common.hpp"

using namespace dsa_test;

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
