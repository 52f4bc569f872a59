#include "core/context.hpp"

#include <set>

#include "core/error.hpp"

namespace dsa {
namespace {

std::unique_ptr<Backend> make_backend(const std::vector<int>& devices, int cpu_threads, const ProcessGroup* group) {
    require(std::set<int>(devices.begin(), devices.end()).size() == devices.size(), DSA_STATUS_INVALID_ARGUMENT,
            "device_ids repeats a device");
    if (devices.empty()) return make_host_backend(cpu_threads);
#if DSA_WITH_CUDA
    return make_gpu_backend(devices, group);
#else
    (void)group;
    fail(DSA_STATUS_NO_DEVICE, "this build of libdsa_indexer has no CUDA support, so GPU ", devices.front(),
         " cannot be used; create the context with no devices for the CPU backend");
#endif
}

}  // namespace

Context::Context(const std::vector<int>& devices, int cpu_threads, std::optional<ProcessGroup> group)
    : cpu_threads_(cpu_threads), group_(group), backend_(make_backend(devices, cpu_threads, group_ ? &*group_ : nullptr)) {}

void Context::set_devices(const std::vector<int>& devices) {
    require(!group_, DSA_STATUS_UNSUPPORTED,
            "a context spanning processes keeps its GPU (its NCCL rank is bound to it): create a new context");
    require(live_caches_ == 0, DSA_STATUS_INVALID_ARGUMENT, "the context still has ", live_caches_.load(),
            " cache(s) on its current devices: destroy them before changing devices");
    std::unique_ptr<Backend> replacement = make_backend(devices, cpu_threads_, nullptr);
    backend_->synchronize();
    backend_ = std::move(replacement);
}

#if !DSA_WITH_CUDA
std::array<char, 128> new_nccl_unique_id() {
    fail(DSA_STATUS_NOT_IMPLEMENTED, "this build of libdsa_indexer has no CUDA and no NCCL (no contexts spanning "
         "processes)");
}
#endif

}  // namespace dsa
