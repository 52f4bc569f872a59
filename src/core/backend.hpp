// What a context runs on: the Backend interface, its owned-cache storage, and the entry points that build
// one. Implemented by src/cpu (CpuBackend) and src/gpu (GpuBackend); core knows backends only through this
// file. The api layer has validated every problem handed in here; a backend only computes (after the data
// checks its memory allows, core/host_checks.hpp), or throws dsa::Error for what it cannot do.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/constants.hpp"
#include "common/problem.hpp"

namespace dsa {

struct CacheLayout {
    int64_t num_pages = 0;
    int page_size = 64;
    int head_dim = kHeadDim;
    bool sharded = false;  // DSA_CACHE_SHARDED: pages spread over the GPU ranks (gpu/multi/sharding.hpp)
    int64_t page_stride_bytes() const { return int64_t(page_size) * (head_dim + kScaleBytes); }
    int64_t num_slots() const { return num_pages * page_size; }
};

// The pages of one owned cache, in the SPEC layout (keys, then scales, per page), with no padding.
class CacheStorage {
public:
    virtual ~CacheStorage() = default;
    // Both check every slot against the layout before touching anything (all or nothing).
    virtual void write(const int64_t* slots, const uint8_t* keys, const float* scales, int64_t n, int memory_device) = 0;
    virtual void read(const int64_t* slots, uint8_t* keys, float* scales, int64_t n, int memory_device) const = 0;
};

// Not thread-safe: the Context serialises every call.
class Backend {
public:
    virtual ~Backend() = default;
    virtual int num_devices() const = 0;  // GPUs in this process (0: the CPU backend)
    virtual bool has_device(int device_id) const = 0;
    // Engine path: the problem's pointers are in this backend's memory.
    virtual size_t paged_workspace_size(const PagedProblem& problem) const = 0;
    virtual size_t ragged_workspace_size(const RaggedProblem& problem) const = 0;
    virtual void topk_paged(const PagedProblem& problem, void* workspace, size_t workspace_bytes, void* stream) = 0;
    virtual void topk_ragged(const RaggedProblem& problem, void* workspace, size_t workspace_bytes, void* stream) = 0;
    // Waits for outstanding work; throws DSA_STATUS_DEVICE_INPUT_ERROR when a kernel flagged bad input.
    virtual void synchronize() = 0;
    // Owned-cache path: problem inputs are host memory (already data-checked), its outputs where
    // host_problem.output_device says (checked by the caller with has_device); k_cache/num_pages/stride
    // come from `storage`, which this backend created.
    virtual std::unique_ptr<CacheStorage> create_cache(const CacheLayout& layout) = 0;
    virtual void topk_cached(const PagedProblem& host_problem, const CacheStorage& storage) = 0;
};

// A context spanning processes: the NCCL unique id, this process's rank and the world size.
struct ProcessGroup {
    std::array<char, 128> unique_id{};
    int rank = 0;
    int world_size = 1;
};

// The backend factories, each defined by its backend: src/cpu/cpu_backend.cpp, and src/gpu/gpu_backend.cpp
// (src/gpu/no_gpu.cpp in a build without CUDA: NO_DEVICE). cpu_threads 0: all hardware threads. group: set
// for a context spanning processes (exactly one device).
std::unique_ptr<Backend> make_cpu_backend(int cpu_threads);
std::unique_ptr<Backend> make_gpu_backend(const std::vector<int>& devices, const ProcessGroup* group);

// A new NCCL unique id (dsa_nccl_unique_id_create); NOT_IMPLEMENTED in builds without NCCL.
// Defined by src/gpu/multi/communicator.cpp (src/gpu/no_gpu.cpp without CUDA).
std::array<char, 128> new_nccl_unique_id();

}  // namespace dsa
