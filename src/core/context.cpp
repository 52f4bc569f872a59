#include "core/context.hpp"

#include <set>

#include "core/error.hpp"

namespace dsa {

std::unique_ptr<Backend> make_backend(const std::vector<int>& devices, int cpu_threads) {
    require(std::set<int>(devices.begin(), devices.end()).size() == devices.size(), DSA_STATUS_INVALID_ARGUMENT,
            "device_ids repeats a device");
    if (devices.empty()) return make_host_backend(cpu_threads);
#if DSA_WITH_CUDA
    return make_gpu_backend(devices);
#else
    fail(DSA_STATUS_NO_DEVICE, "this build of libdsa_indexer has no CUDA support, so GPU ", devices.front(),
         " cannot be used; create the context with no devices for the CPU backend");
#endif
}

Context::Context(const std::vector<int>& devices, int cpu_threads)
    : cpu_threads_(cpu_threads), backend_(make_backend(devices, cpu_threads)) {}

void Context::set_devices(const std::vector<int>& devices) {
    require(live_caches_ == 0, DSA_STATUS_INVALID_ARGUMENT, "the context still has ", live_caches_.load(),
            " cache(s) on its current devices: destroy them before changing devices");
    std::unique_ptr<Backend> replacement = make_backend(devices, cpu_threads_);
    backend_->synchronize();
    backend_ = std::move(replacement);
}

}  // namespace dsa
