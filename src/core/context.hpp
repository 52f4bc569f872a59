// A context: its backend, the lock that serialises every call on it, and the owned caches built on it.
// Every public method takes the lock itself; the api layer only checks arguments and translates errors.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "core/backend.hpp"

namespace dsa {

class Cache;

class Context {
public:
    // devices empty: the CPU backend with cpu_threads threads (0 = all hardware threads). group: set for a
    // context spanning processes (exactly one device).
    Context(const std::vector<int>& devices, int cpu_threads, std::optional<ProcessGroup> group);
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;

    // Builds the new backend completely before replacing the old one, so a failure changes nothing.
    // INVALID_ARGUMENT while caches live on the current devices.
    void set_devices(const std::vector<int>& devices);
    int num_devices();
    void synchronize();

    size_t paged_workspace_size(const PagedProblem& problem);
    size_t ragged_workspace_size(const RaggedProblem& problem);
    // Engine path: INSUFFICIENT_WORKSPACE below the backend's workspace size, then the backend's call.
    void topk_paged(const PagedProblem& problem, void* workspace, size_t workspace_bytes, void* stream);
    void topk_ragged(const RaggedProblem& problem, void* workspace, size_t workspace_bytes, void* stream);

    // Owned caches: create_cache counts the cache until it is destroyed; topk runs `problem` (host inputs,
    // k_cache NULL) against one of this context's caches.
    std::unique_ptr<Cache> create_cache(const CacheLayout& layout);
    void topk(const Cache& cache, PagedProblem problem);

    // Before destruction: INVALID_ARGUMENT while caches live, else waits for outstanding work (a pending
    // device-input error has no one left to report to and is dropped).
    void close();

private:
    friend class Cache;
    int cpu_threads_;
    std::optional<ProcessGroup> group_;
    std::unique_ptr<Backend> backend_;
    std::mutex mutex_;
    std::atomic<int> live_caches_{0};
};

// The library-owned K cache of dsa_cache_t. Its calls take its context's lock.
class Cache {
public:
    Cache(Context& context, const CacheLayout& layout, std::unique_ptr<CacheStorage> storage);
    ~Cache();  // frees the storage under the context's lock, then uncounts the cache
    Cache(const Cache&) = delete;
    Cache& operator=(const Cache&) = delete;

    const Context& context() const { return context_; }
    const CacheLayout& layout() const { return layout_; }
    void write(const int64_t* slots, const uint8_t* keys, const float* scales, int64_t n, int memory_device);
    void read(const int64_t* slots, uint8_t* keys, float* scales, int64_t n, int memory_device) const;

private:
    friend class Context;
    Context& context_;
    CacheLayout layout_;
    std::unique_ptr<CacheStorage> storage_;
};

}  // namespace dsa
