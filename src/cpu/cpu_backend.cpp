// The CPU backend: the Backend interface over host memory, synchronous; the computation is cpu_topk.cpp.
// Its inputs are host memory, so it runs the host data checks itself before computing.
#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

#include "common/error.hpp"
#include "core/backend.hpp"
#include "core/host_checks.hpp"
#include "cpu/cpu_topk.hpp"

namespace dsa {
namespace {

void require_host(int memory_device) {
    require(memory_device == DSA_MEMORY_HOST, DSA_STATUS_INVALID_ARGUMENT, "memory_device is ", memory_device,
            ": a CPU context only has host memory (DSA_MEMORY_HOST)");
}

class CpuCacheStorage final : public CacheStorage {
public:
    explicit CpuCacheStorage(const CacheLayout& layout)
        : layout_(layout), bytes_(size_t(layout.num_pages * layout.page_stride_bytes()), 0) {}

    void write(const int64_t* slots, const uint8_t* keys, const float* scales, int64_t n, int memory_device) override {
        require_host(memory_device);
        check_slots(slots, n, layout_);
        for (int64_t i = 0; i < n; ++i) {
            std::memcpy(key_at(slots[i]), keys + i * layout_.head_dim, size_t(layout_.head_dim));
            std::memcpy(scale_at(slots[i]), &scales[i], sizeof(float));
        }
    }

    void read(const int64_t* slots, uint8_t* keys, float* scales, int64_t n, int memory_device) const override {
        require_host(memory_device);
        check_slots(slots, n, layout_);
        for (int64_t i = 0; i < n; ++i) {
            std::memcpy(keys + i * layout_.head_dim, key_at(slots[i]), size_t(layout_.head_dim));
            std::memcpy(&scales[i], scale_at(slots[i]), sizeof(float));
        }
    }

    const uint8_t* data() const { return bytes_.data(); }

private:
    uint8_t* page(int64_t slot) const {
        return const_cast<uint8_t*>(bytes_.data()) + (slot / layout_.page_size) * layout_.page_stride_bytes();
    }
    uint8_t* key_at(int64_t slot) const { return page(slot) + (slot % layout_.page_size) * layout_.head_dim; }
    uint8_t* scale_at(int64_t slot) const {
        return page(slot) + int64_t(layout_.page_size) * layout_.head_dim + (slot % layout_.page_size) * kScaleBytes;
    }

    CacheLayout layout_;
    std::vector<uint8_t> bytes_;
};

class CpuBackend final : public Backend {
public:
    explicit CpuBackend(int threads)
        : threads_(threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()))) {}

    int num_devices() const override { return 0; }
    bool has_device(int) const override { return false; }
    size_t paged_workspace_size(const PagedProblem&) const override { return 0; }
    size_t ragged_workspace_size(const RaggedProblem&) const override { return 0; }

    void topk_paged(const PagedProblem& problem, void*, size_t, void* stream) override {
        check_paged_host_data(problem);
        require_no_stream(stream);
        cpu::topk_paged(problem, threads_);
    }

    void topk_ragged(const RaggedProblem& problem, void*, size_t, void* stream) override {
        check_ragged_host_data(problem);
        require_no_stream(stream);
        cpu::topk_ragged(problem, threads_);
    }

    void synchronize() override {}

    std::unique_ptr<CacheStorage> create_cache(const CacheLayout& layout) override {
        return std::make_unique<CpuCacheStorage>(layout);
    }

    void topk_cached(const PagedProblem& host_problem, const CacheStorage& storage) override {
        PagedProblem problem = host_problem;  // num_pages and page_stride_bytes already describe the cache
        problem.k_cache = static_cast<const CpuCacheStorage&>(storage).data();
        cpu::topk_paged(problem, threads_);
    }

private:
    static void require_no_stream(void* stream) {
        require(stream == nullptr, DSA_STATUS_INVALID_ARGUMENT, "stream must be NULL on a CPU context");
    }

    int threads_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int cpu_threads) { return std::make_unique<CpuBackend>(cpu_threads); }

}  // namespace dsa
