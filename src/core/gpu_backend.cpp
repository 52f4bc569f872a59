// The GPU backend: one Device per GPU of the context (stream, error flag, scratch memory), the engine path
// on device 0 on the caller's stream, and owned caches replicated on every device.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/backend.hpp"
#include "core/context.hpp"
#include "core/error.hpp"
#include "kernels/topk_kernels.h"

namespace dsa {
namespace {

void check_cuda(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return;
    cudaGetLastError();  // clear a non-sticky error so the next call starts clean
    fail(err == cudaErrorMemoryAllocation ? DSA_STATUS_OUT_OF_MEMORY : DSA_STATUS_CUDA_ERROR, what, " failed: ",
         cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
}

// Makes `device` current for a scope and restores the caller's device afterwards.
class DeviceScope {
public:
    explicit DeviceScope(int device) {
        check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
        if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
    }
    ~DeviceScope() { cudaSetDevice(previous_); }
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;

private:
    int previous_ = 0;
};

// Device memory owned by the library, grown on demand (never during an engine-path call).
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) { other.ptr_ = nullptr; }
    ~DeviceBuffer() {
        if (ptr_) cudaFree(ptr_);
    }
    void* ensure(size_t bytes) {
        if (bytes > bytes_) {
            if (ptr_) cudaFree(ptr_);
            ptr_ = nullptr;
            bytes_ = 0;
            check_cuda(cudaMalloc(&ptr_, bytes), "cudaMalloc");
            bytes_ = bytes;
        }
        return ptr_;
    }
    void* get() const { return ptr_; }

private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

// Set by DSA_INDEXER_KERNEL=portable: forces the CUDA-core scoring path (for verification).
kernels::ScoreKernel score_kernel_choice() {
    const char* env = std::getenv("DSA_INDEXER_KERNEL");
    return (env && std::strcmp(env, "portable") == 0) ? kernels::ScoreKernel::Portable : kernels::ScoreKernel::Auto;
}

struct Device {
    int id = 0;
    kernels::DeviceTraits traits;
    cudaStream_t stream = nullptr;
    int* error_flag = nullptr;  // device int, raised by kernels on bad device-side input
    DeviceBuffer scratch;       // owned-cache path: staged inputs, outputs and workspace

    explicit Device(int device_id) : id(device_id) {
        int count = 0;
        const cudaError_t err = cudaGetDeviceCount(&count);
        if (err != cudaSuccess) {
            cudaGetLastError();
            fail(DSA_STATUS_NO_DEVICE, "no usable CUDA device for GPU ", device_id, ": ", cudaGetErrorString(err));
        }
        require(device_id >= 0 && device_id < count, DSA_STATUS_NO_DEVICE, "GPU ", device_id,
                " does not exist: this machine has ", count, " CUDA device(s)");
        cudaDeviceProp prop;
        check_cuda(cudaGetDeviceProperties(&prop, device_id), "cudaGetDeviceProperties");
        traits.sm_count = prop.multiProcessorCount;
        traits.compute_capability = prop.major * 10 + prop.minor;
        require(traits.compute_capability >= 80, DSA_STATUS_UNSUPPORTED, "GPU ", device_id, " (", prop.name,
                ") has compute capability ", prop.major, ".", prop.minor, ": 8.0 or newer is required");
        DeviceScope scope(id);
        check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
        if (cudaMalloc(reinterpret_cast<void**>(&error_flag), sizeof(int)) != cudaSuccess || cudaMemset(error_flag, 0, sizeof(int)) != cudaSuccess) {
            release();
            check_cuda(cudaErrorMemoryAllocation, "allocating the device error flag");
        }
    }
    ~Device() { release(); }
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    void release() {
        DeviceScope scope(id);
        if (stream) cudaStreamDestroy(stream);
        if (error_flag) cudaFree(error_flag);
        stream = nullptr;
        error_flag = nullptr;
    }

    // Waits for everything on this GPU, then reads and clears the input-error flag.
    bool synchronize_and_take_error() {
        DeviceScope scope(id);
        check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
        int flag = 0;
        check_cuda(cudaMemcpy(&flag, error_flag, sizeof flag, cudaMemcpyDeviceToHost), "reading the error flag");
        if (flag) check_cuda(cudaMemset(error_flag, 0, sizeof(int)), "clearing the error flag");
        return flag != 0;
    }
};

// Pointers of an engine-path call must be device memory of the device that runs it.
void require_on_device(const void* p, int device, const char* name) {
    if (!p) return;
    cudaPointerAttributes attr;
    const cudaError_t err = cudaPointerGetAttributes(&attr, p);
    if (err != cudaSuccess) cudaGetLastError();
    const bool ok = err == cudaSuccess &&
                    ((attr.type == cudaMemoryTypeDevice && attr.device == device) || attr.type == cudaMemoryTypeManaged);
    require(ok, DSA_STATUS_INVALID_ARGUMENT, name, " is not device memory of GPU ", device,
            " (the context's first device)");
}

class GpuCacheStorage final : public CacheStorage {
public:
    GpuCacheStorage(std::vector<Device*> devices, const CacheLayout& layout) : devices_(std::move(devices)), layout_(layout) {
        const size_t bytes = size_t(layout.num_pages * layout.page_stride_bytes());
        for (Device* d : devices_) {
            DeviceScope scope(d->id);
            replicas_.emplace_back();
            check_cuda(cudaMemsetAsync(replicas_.back().ensure(bytes), 0, bytes, d->stream), "zeroing the cache");
            check_cuda(cudaStreamSynchronize(d->stream), "cudaStreamSynchronize");
        }
    }

    const uint8_t* replica(size_t i) const { return static_cast<const uint8_t*>(replicas_[i].get()); }

    void write(const int64_t* slots, const uint8_t* keys, const float* scales, int64_t n, int memory_device) override {
        const std::vector<int64_t> host_slots = slots_on_host(slots, n, memory_device);
        check_slots(host_slots.data(), n, layout_);
        // Last occurrence of each slot wins: keep (slot, source index) pairs of last occurrences only.
        std::unordered_map<int64_t, int64_t> last;
        for (int64_t i = 0; i < n; ++i) last[host_slots[size_t(i)]] = i;
        std::vector<int64_t> staged;  // [slots..., source indices...]
        staged.reserve(2 * last.size());
        for (const auto& kv : last) staged.push_back(kv.first);
        for (const auto& kv : last) staged.push_back(kv.second);
        const int64_t count = int64_t(last.size());
        for (size_t i = 0; i < devices_.size(); ++i) {
            Device& d = *devices_[i];
            DeviceScope scope(d.id);
            const size_t index_bytes = staged.size() * 8, key_bytes = size_t(n) * 128, scale_bytes = size_t(n) * 4;
            auto* base = static_cast<uint8_t*>(d.scratch.ensure(index_bytes + key_bytes + scale_bytes));
            check_cuda(cudaMemcpyAsync(base, staged.data(), index_bytes, cudaMemcpyHostToDevice, d.stream), "copy slots");
            check_cuda(cudaMemcpyAsync(base + index_bytes, keys, key_bytes, cudaMemcpyDefault, d.stream), "copy keys");
            check_cuda(cudaMemcpyAsync(base + index_bytes + key_bytes, scales, scale_bytes, cudaMemcpyDefault, d.stream),
                       "copy scales");
            auto* dev_slots = reinterpret_cast<const int64_t*>(base);
            check_cuda(kernels::scatter_tokens(static_cast<uint8_t*>(replicas_[i].get()), layout_.page_stride_bytes(),
                                               layout_.page_size, dev_slots, dev_slots + count, count,
                                               base + index_bytes, reinterpret_cast<const float*>(base + index_bytes + key_bytes),
                                               d.stream),
                       "scatter_tokens");
            check_cuda(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize");
        }
    }

    void read(const int64_t* slots, uint8_t* keys, float* scales, int64_t n, int memory_device) const override {
        const std::vector<int64_t> host_slots = slots_on_host(slots, n, memory_device);
        check_slots(host_slots.data(), n, layout_);
        Device& d = *devices_[0];
        DeviceScope scope(d.id);
        const size_t index_bytes = size_t(n) * 8, key_bytes = size_t(n) * 128, scale_bytes = size_t(n) * 4;
        auto* base = static_cast<uint8_t*>(d.scratch.ensure(index_bytes + key_bytes + scale_bytes));
        check_cuda(cudaMemcpyAsync(base, host_slots.data(), index_bytes, cudaMemcpyHostToDevice, d.stream), "copy slots");
        check_cuda(kernels::gather_tokens(replica(0), layout_.page_stride_bytes(), layout_.page_size,
                                          reinterpret_cast<const int64_t*>(base), n, base + index_bytes,
                                          reinterpret_cast<float*>(base + index_bytes + key_bytes), d.stream),
                   "gather_tokens");
        check_cuda(cudaMemcpyAsync(keys, base + index_bytes, key_bytes, cudaMemcpyDefault, d.stream), "copy keys");
        check_cuda(cudaMemcpyAsync(scales, base + index_bytes + key_bytes, scale_bytes, cudaMemcpyDefault, d.stream),
                   "copy scales");
        check_cuda(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize");
    }

private:
    std::vector<int64_t> slots_on_host(const int64_t* slots, int64_t n, int memory_device) const {
        const bool known = memory_device == DSA_MEMORY_HOST ||
                           std::any_of(devices_.begin(), devices_.end(), [&](Device* d) { return d->id == memory_device; });
        require(known, DSA_STATUS_INVALID_ARGUMENT, "memory_device ", memory_device,
                " is neither DSA_MEMORY_HOST nor a device of the context");
        std::vector<int64_t> host(static_cast<size_t>(n));
        if (memory_device == DSA_MEMORY_HOST) {
            std::copy(slots, slots + n, host.begin());
        } else {
            DeviceScope scope(memory_device);
            check_cuda(cudaMemcpy(host.data(), slots, size_t(n) * 8, cudaMemcpyDefault), "copy slots to host");
        }
        return host;
    }

    std::vector<Device*> devices_;
    CacheLayout layout_;
    std::vector<DeviceBuffer> replicas_;
};

class GpuBackend final : public Backend {
public:
    explicit GpuBackend(const std::vector<int>& ids) : kernel_(score_kernel_choice()) {
        for (int id : ids) devices_.push_back(std::make_unique<Device>(id));
    }

    ~GpuBackend() override {
        for (auto& d : devices_) {
            DeviceScope scope(d->id);
            cudaDeviceSynchronize();
        }
    }

    int num_devices() const override { return int(devices_.size()); }

    size_t paged_workspace_size(const PagedProblem& pb) const override { return kernels::paged_workspace_bytes(pb); }
    size_t ragged_workspace_size(const RaggedProblem& pb) const override { return kernels::ragged_workspace_bytes(pb); }

    void topk_paged(const PagedProblem& pb, void* workspace, size_t, void* stream) override {
        if (pb.rows() == 0) return;
        Device& d = *devices_[0];
        DeviceScope scope(d.id);
        for (auto [p, name] : {std::pair<const void*, const char*>{pb.q, "inputs->q"},
                               {pb.k_cache, "inputs->k_cache"}, {pb.weights, "inputs->weights"},
                               {pb.seq_lens, "inputs->seq_lens"}, {pb.block_table, "inputs->block_table"},
                               {pb.out.indices, "outputs->indices"}, {pb.out.scores, "outputs->scores"},
                               {workspace, "workspace"}})
            require_on_device(p, d.id, name);
        check_cuda(kernels::topk_paged(pb, d.traits, kernel_, workspace, d.error_flag, static_cast<cudaStream_t>(stream)),
                   "launching the paged top-k kernels");
    }

    void topk_ragged(const RaggedProblem& pb, void* workspace, size_t, void* stream) override {
        if (pb.rows() == 0) return;
        Device& d = *devices_[0];
        DeviceScope scope(d.id);
        for (auto [p, name] : {std::pair<const void*, const char*>{pb.q, "inputs->q"}, {pb.k, "inputs->k"},
                               {pb.k_scale, "inputs->k_scale"}, {pb.weights, "inputs->weights"},
                               {pb.row_start, "inputs->row_start"}, {pb.row_end, "inputs->row_end"},
                               {pb.out.indices, "outputs->indices"}, {pb.out.scores, "outputs->scores"},
                               {workspace, "workspace"}})
            require_on_device(p, d.id, name);
        check_cuda(kernels::topk_ragged(pb, d.traits, kernel_, workspace, d.error_flag, static_cast<cudaStream_t>(stream)),
                   "launching the ragged top-k kernels");
    }

    void synchronize() override {
        bool flagged = false;
        for (auto& d : devices_) flagged |= d->synchronize_and_take_error();
        require(!flagged, DSA_STATUS_DEVICE_INPUT_ERROR,
                "a GPU call met a block-table entry outside [0, num_pages), a seq_len outside [0, max_pages * page_size] "
                "or a ragged window outside [0, num_keys]; those rows were written as padding (-1)");
    }

    std::unique_ptr<CacheStorage> create_cache(const CacheLayout& layout) override {
        std::vector<Device*> devices;
        for (auto& d : devices_) devices.push_back(d.get());
        return std::make_unique<GpuCacheStorage>(std::move(devices), layout);
    }

    // Host inputs: staged once into device 0's scratch, computed there, results copied back.
    void topk_cached(const PagedProblem& host, const CacheStorage& storage) override {
        if (host.rows() == 0) return;
        Device& d = *devices_[0];
        DeviceScope scope(d.id);
        const int64_t rows = host.rows(), H = host.shape.num_heads, k = host.shape.topk;
        const int64_t table_elems = (host.batch_size - 1) * host.block_table_stride + host.max_pages;
        PagedProblem pb = host;
        pb.k_cache = static_cast<const GpuCacheStorage&>(storage).replica(0);
        const size_t sizes[] = {size_t(rows * H * 128), size_t(rows * H * 4), size_t(host.batch_size) * 4,
                                size_t(table_elems) * 4, size_t(rows * k * 4), size_t(rows * k * 4),
                                kernels::paged_workspace_bytes(pb)};
        size_t offsets[7], total = 0;
        for (int i = 0; i < 7; ++i) {
            offsets[i] = total;
            total += (sizes[i] + 255) / 256 * 256;
        }
        auto* base = static_cast<uint8_t*>(d.scratch.ensure(total));
        const void* sources[] = {host.q, host.weights, host.seq_lens, host.block_table};
        for (int i = 0; i < 4; ++i)
            if (sizes[i])
                check_cuda(cudaMemcpyAsync(base + offsets[i], sources[i], sizes[i], cudaMemcpyHostToDevice, d.stream),
                           "copying inputs to the device");
        pb.q = base + offsets[0];
        pb.weights = reinterpret_cast<const float*>(base + offsets[1]);
        pb.seq_lens = reinterpret_cast<const int32_t*>(base + offsets[2]);
        pb.block_table = reinterpret_cast<const int32_t*>(base + offsets[3]);
        pb.out.indices = reinterpret_cast<int32_t*>(base + offsets[4]);
        pb.out.scores = host.out.scores ? reinterpret_cast<float*>(base + offsets[5]) : nullptr;
        check_cuda(kernels::topk_paged(pb, d.traits, kernel_, base + offsets[6], d.error_flag, d.stream),
                   "launching the paged top-k kernels");
        check_cuda(cudaMemcpyAsync(host.out.indices, pb.out.indices, sizes[4], cudaMemcpyDeviceToHost, d.stream),
                   "copying indices back");
        if (host.out.scores)
            check_cuda(cudaMemcpyAsync(host.out.scores, pb.out.scores, sizes[5], cudaMemcpyDeviceToHost, d.stream),
                       "copying scores back");
        check_cuda(cudaStreamSynchronize(d.stream), "cudaStreamSynchronize");
    }

private:
    kernels::ScoreKernel kernel_;
    std::vector<std::unique_ptr<Device>> devices_;
};

}  // namespace

std::unique_ptr<Backend> make_gpu_backend(const std::vector<int>& devices) {
    return std::make_unique<GpuBackend>(devices);
}

}  // namespace dsa
