// What a context runs on: the CPU (HostBackend) or its GPUs (GpuBackend). The api layer has validated
// every problem handed in here; a backend only computes, or throws dsa::Error for what it cannot do.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/problem.hpp"

namespace dsa {

struct CacheLayout {
    int64_t num_pages = 0;
    int page_size = 64;
    int head_dim = 128;
    bool sharded = false;  // DSA_CACHE_SHARDED: pages spread over the GPU ranks (core/sharding.hpp)
    int64_t page_stride_bytes() const { return int64_t(page_size) * (head_dim + 4); }
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
    // Owned-cache path: problem inputs are host memory, its outputs where host_problem.output_device says
    // (checked by the caller with has_device); k_cache/num_pages/stride come from `storage`.
    virtual std::unique_ptr<CacheStorage> create_cache(const CacheLayout& layout) = 0;
    virtual void topk_cached(const PagedProblem& host_problem, const CacheStorage& storage) = 0;
};


// Throws DSA_STATUS_INVALID_ARGUMENT naming the first slot outside [0, layout.num_slots()).
void check_slots(const int64_t* slots, int64_t n, const CacheLayout& layout);

}  // namespace dsa
