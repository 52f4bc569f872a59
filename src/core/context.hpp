// A context: its backend, the lock that serialises calls on it, and a count of the caches built on it.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "core/backend.hpp"

namespace dsa {

// A context spanning processes: the NCCL unique id, this process's rank and the world size.
struct ProcessGroup {
    std::array<char, 128> unique_id{};
    int rank = 0;
    int world_size = 1;
};

class Context {
public:
    // devices empty: the CPU backend with cpu_threads threads (0 = all hardware threads). group: set for a
    // context spanning processes (exactly one device).
    Context(const std::vector<int>& devices, int cpu_threads, std::optional<ProcessGroup> group);

    // Builds the new backend completely before replacing the old one, so a failure changes nothing.
    void set_devices(const std::vector<int>& devices);

    Backend& backend() { return *backend_; }
    std::mutex& mutex() { return mutex_; }
    std::atomic<int>& live_caches() { return live_caches_; }

private:
    int cpu_threads_;
    std::optional<ProcessGroup> group_;
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
std::unique_ptr<Backend> make_gpu_backend(const std::vector<int>& devices, const ProcessGroup* group);
#endif

// A new NCCL unique id (dsa_nccl_unique_id_create); NOT_IMPLEMENTED in builds without NCCL.
std::array<char, 128> new_nccl_unique_id();

}  // namespace dsa
