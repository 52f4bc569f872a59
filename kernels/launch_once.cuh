// Host-side launch settings that depend only on the kernel and the device: each is asked of the driver once
// per device and remembered, so that a launch pays for none of them (an eager caller would, on every call).
#pragma once

#include <atomic>
#include <cstdint>

#include <cuda_runtime_api.h>

namespace dsa::kernels {

// Sets Kernel's attribute Attr (one fixed value per Kernel) on the current device. Attributes are per device,
// so each is set once per device; later calls pay nothing.
template <auto Kernel, cudaFuncAttribute Attr>
cudaError_t set_attribute_once(int value) {
    static std::atomic<uint64_t> set{0};
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess) return err;
    const uint64_t bit = uint64_t(1) << (device & 63);
    if (set.load(std::memory_order_acquire) & bit) return cudaSuccess;
    err = cudaFuncSetAttribute(Kernel, Attr, value);
    if (err == cudaSuccess) set.fetch_or(bit, std::memory_order_acq_rel);
    return err;
}

// Lets Kernel (one fixed size: the largest any of its launches asks) use `bytes` of dynamic shared memory on
// the current device.
template <auto Kernel>
cudaError_t allow_dynamic_smem(int bytes) {
    return set_attribute_once<Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize>(bytes);
}

// Kernel's resident CTAs per SM with `threads` threads and `smem` bytes of dynamic shared memory on the current
// device, where `variant` (in [0, Variants)) names the (threads, smem) pair: asked once per device and variant
// (another variant, or a device past the first 64, is asked every time).
template <auto Kernel, int Variants>
cudaError_t resident_ctas_once(int threads, int smem, int variant, int* resident) {
    constexpr int kDevices = 64;
    static std::atomic<int> known[kDevices][Variants] = {};  // 0: not asked yet
    int device = 0;
    cudaError_t err = cudaGetDevice(&device);
    if (err != cudaSuccess) return err;
    const bool kept = device < kDevices && variant >= 0 && variant < Variants;
    std::atomic<int>* const slot = kept ? &known[device][variant] : nullptr;
    if (slot) {
        const int value = slot->load(std::memory_order_acquire);
        if (value > 0) {
            *resident = value;
            return cudaSuccess;
        }
    }
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(resident, Kernel, threads, smem);
    if (err == cudaSuccess && slot && *resident > 0) slot->store(*resident, std::memory_order_release);
    return err;
}

}  // namespace dsa::kernels
