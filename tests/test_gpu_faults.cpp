// GPU fault behaviour (issue #5), part of dsa_gpu_tests: device memory exhausted by an owned cache gives a
// clear status, leaves no CUDA error and no cache behind, and the context keeps working. (Device-side input
// errors, too small a workspace and bad cache slots are in test_gpu.cpp.) Not tagged [sanitize]:
// compute-sanitizer reports the failed cudaMalloc itself as an API error.
#include "catch_shim.hpp"

#if DSA_TEST_HAVE_CUDA

#include <cuda_runtime.h>

#include <cstring>
#include <string>
#include <vector>

#include "dsa_indexer.h"
#include "test_util.hpp"

using namespace dsa_test;

namespace {

constexpr int32_t kDevice = 0;

// An owned cache holding every physical page of `c`, on `ctx`.
dsa_cache_t filled_cache(dsa_context_t ctx, const PagedCase& c) {
    const int P = c.layout.page_size;
    dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
    config.num_pages = c.num_pages;
    config.page_size = P;
    dsa_cache_t cache = nullptr;
    REQUIRE(dsa_cache_create(ctx, &config, &cache) == DSA_STATUS_SUCCESS);
    const int64_t slots = c.num_pages * P;
    std::vector<int64_t> slot(static_cast<size_t>(slots));
    std::vector<uint8_t> keys(slot.size() * kHeadDim);
    std::vector<float> scales(slot.size());
    for (int64_t s = 0; s < slots; ++s) {
        slot[size_t(s)] = s;
        const uint8_t* page = c.k_cache.data() + (s / P) * c.page_stride;
        std::memcpy(&keys[size_t(s) * kHeadDim], page + (s % P) * kHeadDim, kHeadDim);
        std::memcpy(&scales[size_t(s)], page + int64_t(P) * kHeadDim + (s % P) * 4, 4);
    }
    REQUIRE(dsa_cache_write(cache, slot.data(), keys.data(), scales.data(), slots, DSA_MEMORY_HOST) == DSA_STATUS_SUCCESS);
    return cache;
}

}  // namespace

TEST_CASE("GPU: an owned cache larger than device memory gives OUT_OF_MEMORY; the context stays usable",
          "[gpu][faults]") {
    dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
    config.device_ids = &kDevice;
    config.num_devices = 1;
    dsa_context_t gpu = nullptr;
    REQUIRE(dsa_context_create(&config, &gpu) == DSA_STATUS_SUCCESS);

    // The largest cache the API accepts: 2^31 slots of page size 32, 2^26 pages of 4224 bytes (283 GB).
    dsa_cache_config_t huge = DSA_CACHE_CONFIG_INIT;
    huge.page_size = 32;
    huge.num_pages = (int64_t(1) << 31) / 32;
    const size_t huge_bytes = size_t(huge.num_pages) * 32 * (kHeadDim + 4);
    size_t free_bytes = 0, total_bytes = 0;
    REQUIRE(cudaMemGetInfo(&free_bytes, &total_bytes) == cudaSuccess);
    if (huge_bytes <= free_bytes) {
        WARN("GPU " << kDevice << " has " << free_bytes << " bytes free, room for the largest cache: nothing to exhaust");
        CHECK(dsa_context_destroy(gpu) == DSA_STATUS_SUCCESS);
        return;
    }
    dsa_cache_t cache = nullptr;
    CHECK(dsa_cache_create(gpu, &huge, &cache) == DSA_STATUS_OUT_OF_MEMORY);
    CHECK(cache == nullptr);
    CHECK(std::string(dsa_last_error_message()).find("cudaMalloc") != std::string::npos);
    CHECK(cudaGetLastError() == cudaSuccess);  // nothing left over for the caller's next CUDA call

    // The context works as before: a cache that fits gives the CPU context's results bit for bit.
    Context cpu;
    PagedCase c(layout_of(64, 64, 2), {700, 64, 0, 129}, 15001);
    Rng rng(15002);
    fill_tie_free(c, rng);
    dsa_cache_t gpu_cache = filled_cache(gpu, c), cpu_cache = filled_cache(cpu.get(), c);
    dsa_paged_inputs_t inputs = c.inputs();
    inputs.k_cache = nullptr;
    inputs.num_pages = 0;
    inputs.page_stride_bytes = 0;
    const dsa_topk_params_t params = c.params(100, DSA_TOPK_SORTED);
    TopkOutput on_gpu(c.rows(), 100, true), on_cpu(c.rows(), 100, true);
    const dsa_topk_outputs_t gpu_out = on_gpu.outputs(), cpu_out = on_cpu.outputs();
    const dsa_status_t status = dsa_topk(gpu, gpu_cache, &params, &inputs, &gpu_out);
    INFO(describe_status(status));
    CHECK(status == DSA_STATUS_SUCCESS);
    REQUIRE(dsa_topk(cpu.get(), cpu_cache, &params, &inputs, &cpu_out) == DSA_STATUS_SUCCESS);
    CHECK(on_gpu.same_bits(on_cpu));
    CHECK(on_gpu.guards_intact());
    CHECK(dsa_context_synchronize(gpu) == DSA_STATUS_SUCCESS);
    CHECK(dsa_cache_destroy(gpu_cache) == DSA_STATUS_SUCCESS);
    CHECK(dsa_cache_destroy(cpu_cache) == DSA_STATUS_SUCCESS);
    // The failed creation left no cache counted against the context, so it can be destroyed.
    CHECK(dsa_context_destroy(gpu) == DSA_STATUS_SUCCESS);
}

#endif  // DSA_TEST_HAVE_CUDA
