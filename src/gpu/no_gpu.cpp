// The GPU entry points of core/backend.hpp in a build without CUDA (linked instead of src/gpu/*): no GPU
// backend and no NCCL.
#include "common/error.hpp"
#include "core/backend.hpp"

namespace dsa {

std::unique_ptr<Backend> make_gpu_backend(const std::vector<int>& devices, const ProcessGroup*) {
    fail(DSA_STATUS_NO_DEVICE, "this build of libdsa_indexer has no CUDA support, so GPU ", devices.front(),
         " cannot be used; create the context with no devices for the CPU backend");
}

std::array<char, 128> new_nccl_unique_id() {
    fail(DSA_STATUS_NOT_IMPLEMENTED, "this build of libdsa_indexer has no CUDA and no NCCL (no contexts spanning "
         "processes)");
}

}  // namespace dsa
