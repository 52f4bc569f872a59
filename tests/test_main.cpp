// main() of dsa_cpu_tests, dsa_gpu_tests and dsa_multi_gpu_tests. The GPU builds (DSA_GPU_TEST_MAIN) first
// ask the library for a usable CUDA device and exit with 77, which ctest reports as "Skipped", when there is
// none. The multi-GPU build (DSA_MULTI_GPU_TEST_MAIN as well) also exits with 77 below 2 visible GPUs.
#define CATCH_CONFIG_RUNNER
#include "catch_shim.hpp"

#include <cstdio>

#include "dsa_indexer.h"

#if defined(DSA_MULTI_GPU_TEST_MAIN) && DSA_TEST_HAVE_CUDA
#include <cuda_runtime.h>
#endif

#if defined(DSA_GPU_TEST_MAIN)
namespace {

constexpr int kSkipExitCode = 77;

// 0: a GPU context on device 0 works; kSkipExitCode: no device; 1: something else went wrong.
int probe_cuda_device() {
    const int32_t device = 0;
    dsa_context_config_t config;
    dsa_context_config_init(&config);
    config.device_ids = &device;
    config.num_devices = 1;
    dsa_context_t context = nullptr;
    const dsa_status_t status = dsa_context_create(&config, &context);
    if (status == DSA_STATUS_SUCCESS) {
        dsa_context_destroy(context);
#if !DSA_TEST_HAVE_CUDA
        std::printf("SKIPPED: no CUDA device (the tests were built without CUDA)\n");
        return kSkipExitCode;
#else
        return 0;
#endif
    }
    if (status == DSA_STATUS_NO_DEVICE) {
        std::printf("SKIPPED: no CUDA device (%s)\n", dsa_last_error_message());
        return kSkipExitCode;
    }
    std::printf("dsa_gpu_tests: creating a context on device 0 failed: %s: %s\n", dsa_status_string(status),
                dsa_last_error_message());
    return 1;
}

#if defined(DSA_MULTI_GPU_TEST_MAIN) && DSA_TEST_HAVE_CUDA
// 0 when at least 2 GPUs are visible (CUDA_VISIBLE_DEVICES applies), else kSkipExitCode.
int probe_multi_gpu() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
    if (count >= 2) return 0;
    std::printf("SKIPPED: the multi-GPU tests need at least 2 GPUs, %d visible\n", count);
    return kSkipExitCode;
}
#endif

}  // namespace
#endif

int main(int argc, char** argv) {
#if defined(DSA_GPU_TEST_MAIN)
    if (const int probe = probe_cuda_device(); probe != 0) return probe;
#endif
#if defined(DSA_MULTI_GPU_TEST_MAIN) && DSA_TEST_HAVE_CUDA
    if (const int probe = probe_multi_gpu(); probe != 0) return probe;
#endif
    return Catch::Session().run(argc, argv);
}
