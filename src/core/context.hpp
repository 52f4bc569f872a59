// A context: its backend, the lock that serialises calls on it, and a count of the caches built on it.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "core/backend.hpp"

namespace dsa {

class Context {
public:
    Context(const std::vector<int>& devices, int cpu_threads);

    // Builds the new backend completely before replacing the old one, so a failure changes nothing.
    void set_devices(const std::vector<int>& devices);

    Backend& backend() { return *backend_; }
    std::mutex& mutex() { return mutex_; }
    std::atomic<int>& live_caches() { return live_caches_; }

private:
    int cpu_threads_;
    std::unique_ptr<Backend> backend_;
    std::mutex mutex_;
    std::atomic<int> live_caches_{0};
};

// The library-owned K cache of dsa_cache_t.
struct Cache {
    Context* context;
    CacheLayout layout;
    std::unique_ptr<CacheStorage> storage;
};

std::unique_ptr<Backend> make_host_backend(int cpu_threads);
#if DSA_WITH_CUDA
std::unique_ptr<Backend> make_gpu_backend(const std::vector<int>& devices);
#endif

}  // namespace dsa
