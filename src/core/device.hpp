// One GPU of a context: its stream, its device-input error flag and the library's scratch memory on it,
// plus the small RAII helpers every GPU file of src/core uses. CUDA runtime types stay inside src/core.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/topk_kernels.h"

namespace dsa {

// Throws dsa::Error for a failed CUDA call: OUT_OF_MEMORY for allocation failures, else CUDA_ERROR with
// the runtime's text. `what` names the operation.
void check_cuda(cudaError_t err, const char* what);

// Makes `device` current for a scope and restores the caller's device afterwards.
class DeviceScope {
public:
    explicit DeviceScope(int device);
    ~DeviceScope();
    DeviceScope(const DeviceScope&) = delete;
    DeviceScope& operator=(const DeviceScope&) = delete;

private:
    int previous_ = 0;
};

// Device memory owned by the library, grown on demand (never during an engine-path call). The caller makes
// the owning device current.
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& other) noexcept : ptr_(other.ptr_), bytes_(other.bytes_) { other.ptr_ = nullptr; }
    ~DeviceBuffer();
    void* ensure(size_t bytes);
    void* get() const { return ptr_; }

private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

// Page-locked host memory owned by the library, grown on demand: host inputs and outputs of the
// owned-cache calls pass through it, so that copies to and from several GPUs run as parallel DMA instead
// of the driver's serialised staging of pageable memory.
class PinnedBuffer {
public:
    PinnedBuffer() = default;
    PinnedBuffer(const PinnedBuffer&) = delete;
    PinnedBuffer& operator=(const PinnedBuffer&) = delete;
    ~PinnedBuffer();
    uint8_t* ensure(size_t bytes);

private:
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

struct Device {
    int id = 0;
    kernels::DeviceTraits traits;
    cudaStream_t stream = nullptr;
    int* error_flag = nullptr;  // device int, raised by kernels on bad device-side input
    DeviceBuffer scratch;       // owned-cache path: staged inputs, outputs and workspace

    // Checks that the GPU exists and is new enough (sm_80+), then makes its stream and flag.
    explicit Device(int device_id);
    ~Device();
    Device(const Device&) = delete;
    Device& operator=(const Device&) = delete;

    // Waits for everything on this GPU, then reads and clears the input-error flag.
    bool synchronize_and_take_error();

private:
    void release();
};

// Splits one scratch allocation into 256-byte aligned parts: offsets[i] for sizes[i].
struct ScratchPlan {
    size_t total = 0;
    size_t add(size_t bytes) {
        const size_t offset = total;
        total += (bytes + 255) / 256 * 256;
        return offset;
    }
};

}  // namespace dsa
