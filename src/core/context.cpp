#include "core/context.hpp"

#include <set>

#include "common/error.hpp"
#include "core/host_checks.hpp"

namespace dsa {
namespace {

std::unique_ptr<Backend> make_backend(const std::vector<int>& devices, int cpu_threads, const ProcessGroup* group) {
    require(std::set<int>(devices.begin(), devices.end()).size() == devices.size(), DSA_STATUS_INVALID_ARGUMENT,
            "device_ids repeats a device");
    if (devices.empty()) return make_cpu_backend(cpu_threads);
    return make_gpu_backend(devices, group);
}

void require_workspace(size_t needed, void* workspace, size_t workspace_bytes, const char* size_query) {
    require(workspace_bytes >= needed && (needed == 0 || workspace != nullptr), DSA_STATUS_INSUFFICIENT_WORKSPACE,
            "workspace of ", workspace_bytes, " bytes at ", workspace, ": this call needs ", needed, " bytes (",
            size_query, ")");
}

}  // namespace

Context::Context(const std::vector<int>& devices, int cpu_threads, std::optional<ProcessGroup> group)
    : cpu_threads_(cpu_threads), group_(group), backend_(make_backend(devices, cpu_threads, group_ ? &*group_ : nullptr)) {}

void Context::set_devices(const std::vector<int>& devices) {
    std::lock_guard<std::mutex> lock(mutex_);
    require(!group_, DSA_STATUS_UNSUPPORTED,
            "a context spanning processes keeps its GPU (its NCCL rank is bound to it): create a new context");
    require(live_caches_ == 0, DSA_STATUS_INVALID_ARGUMENT, "the context still has ", live_caches_.load(),
            " cache(s) on its current devices: destroy them before changing devices");
    std::unique_ptr<Backend> replacement = make_backend(devices, cpu_threads_, nullptr);
    backend_->synchronize();
    backend_ = std::move(replacement);
}

int Context::num_devices() {
    std::lock_guard<std::mutex> lock(mutex_);
    return backend_->num_devices();
}

void Context::synchronize() {
    std::lock_guard<std::mutex> lock(mutex_);
    backend_->synchronize();
}

size_t Context::paged_workspace_size(const PagedProblem& problem) {
    std::lock_guard<std::mutex> lock(mutex_);
    return backend_->paged_workspace_size(problem);
}

size_t Context::ragged_workspace_size(const RaggedProblem& problem) {
    std::lock_guard<std::mutex> lock(mutex_);
    return backend_->ragged_workspace_size(problem);
}

void Context::topk_paged(const PagedProblem& problem, void* workspace, size_t workspace_bytes, void* stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    require_workspace(backend_->paged_workspace_size(problem), workspace, workspace_bytes,
                      "dsa_topk_paged_workspace_size");
    backend_->topk_paged(problem, workspace, workspace_bytes, stream);
}

void Context::topk_ragged(const RaggedProblem& problem, void* workspace, size_t workspace_bytes, void* stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    require_workspace(backend_->ragged_workspace_size(problem), workspace, workspace_bytes,
                      "dsa_topk_ragged_workspace_size");
    backend_->topk_ragged(problem, workspace, workspace_bytes, stream);
}

std::unique_ptr<Cache> Context::create_cache(const CacheLayout& layout) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto cache = std::make_unique<Cache>(*this, layout, backend_->create_cache(layout));
    ++live_caches_;
    return cache;
}

void Context::topk(const Cache& cache, PagedProblem problem) {
    const CacheLayout& layout = cache.layout();
    require(problem.shape.page_size == layout.page_size && problem.shape.head_dim == layout.head_dim,
            DSA_STATUS_INVALID_ARGUMENT, "params page_size ", problem.shape.page_size, " / head_dim ",
            problem.shape.head_dim, " differ from the cache's ", layout.page_size, " / ", layout.head_dim);
    problem.num_pages = layout.num_pages;
    problem.page_stride_bytes = layout.page_stride_bytes();
    check_paged_host_data(problem);
    std::lock_guard<std::mutex> lock(mutex_);
    require(problem.output_device == DSA_MEMORY_HOST || backend_->has_device(problem.output_device),
            DSA_STATUS_INVALID_ARGUMENT, "outputs->memory_device ", problem.output_device,
            " is neither DSA_MEMORY_HOST nor a GPU of the context in this process");
    backend_->topk_cached(problem, *cache.storage_);
}

void Context::close() {
    const int caches = live_caches_;
    require(caches == 0, DSA_STATUS_INVALID_ARGUMENT, "the context still has ", caches, " cache(s): destroy them first");
    std::lock_guard<std::mutex> lock(mutex_);
    try {
        backend_->synchronize();
    } catch (const Error&) {
        // a pending device-input flag has no one left to report to; the context goes anyway
    }
}

Cache::Cache(Context& context, const CacheLayout& layout, std::unique_ptr<CacheStorage> storage)
    : context_(context), layout_(layout), storage_(std::move(storage)) {}

Cache::~Cache() {
    {
        std::lock_guard<std::mutex> lock(context_.mutex_);
        storage_.reset();
    }
    --context_.live_caches_;
}

void Cache::write(const int64_t* slots, const uint8_t* keys, const float* scales, int64_t n, int memory_device) {
    std::lock_guard<std::mutex> lock(context_.mutex_);
    storage_->write(slots, keys, scales, n, memory_device);
}

void Cache::read(const int64_t* slots, uint8_t* keys, float* scales, int64_t n, int memory_device) const {
    std::lock_guard<std::mutex> lock(context_.mutex_);
    storage_->read(slots, keys, scales, n, memory_device);
}

}  // namespace dsa
