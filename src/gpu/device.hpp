// One GPU of a context: its stream, its device-input error flag and the library's scratch memory on it,
// plus the small RAII helpers every file of src/gpu uses. CUDA runtime types stay inside src/gpu.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "kernels/launch.h"

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

// Memory owned by the library, grown on demand (never during an engine-path call): device memory (the
// caller makes the owning device current), or page-locked host memory, portable to every GPU, through
// which the owned-cache calls pass host inputs and outputs, so that copies to and from several GPUs run
// as parallel DMA instead of the driver's serialised staging of pageable memory.
class OwnedBuffer {
public:
    enum class Kind { Device, PinnedHost };
    explicit OwnedBuffer(Kind kind = Kind::Device) : kind_(kind) {}
    OwnedBuffer(const OwnedBuffer&) = delete;
    OwnedBuffer& operator=(const OwnedBuffer&) = delete;
    OwnedBuffer(OwnedBuffer&& other) noexcept : kind_(other.kind_), ptr_(other.ptr_), bytes_(other.bytes_) {
        other.ptr_ = nullptr;
    }
    ~OwnedBuffer() { release(); }
    uint8_t* ensure(size_t bytes);
    uint8_t* get() const { return static_cast<uint8_t*>(ptr_); }

private:
    void release();
    Kind kind_;
    void* ptr_ = nullptr;
    size_t bytes_ = 0;
};

struct Device {
    int id = 0;
    kernels::DeviceTraits traits;
    cudaStream_t stream = nullptr;
    int* error_flag = nullptr;  // device int, raised by kernels on bad device-side input
    OwnedBuffer scratch;        // owned-cache path: staged inputs, outputs and workspace

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
