#include "gpu/device.hpp"

#include "common/error.hpp"

namespace dsa {

void check_cuda(cudaError_t err, const char* what) {
    if (err == cudaSuccess) return;
    cudaGetLastError();  // clear a non-sticky error so the next call starts clean
    fail(err == cudaErrorMemoryAllocation ? DSA_STATUS_OUT_OF_MEMORY : DSA_STATUS_CUDA_ERROR, what, " failed: ",
         cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
}

DeviceScope::DeviceScope(int device) {
    check_cuda(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
}

DeviceScope::~DeviceScope() { cudaSetDevice(previous_); }

void OwnedBuffer::release() {
    if (ptr_) kind_ == Kind::Device ? cudaFree(ptr_) : cudaFreeHost(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
}

uint8_t* OwnedBuffer::ensure(size_t bytes) {
    if (bytes > bytes_) {
        release();
        if (kind_ == Kind::Device) check_cuda(cudaMalloc(&ptr_, bytes), "cudaMalloc");
        else check_cuda(cudaHostAlloc(&ptr_, bytes, cudaHostAllocPortable), "cudaHostAlloc");  // pinned for every GPU
        bytes_ = bytes;
    }
    return get();
}

Device::Device(int device_id) : id(device_id) {
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
    if (cudaMalloc(reinterpret_cast<void**>(&error_flag), sizeof(int)) != cudaSuccess ||
        cudaMemset(error_flag, 0, sizeof(int)) != cudaSuccess) {
        release();
        check_cuda(cudaErrorMemoryAllocation, "allocating the device error flag");
    }
}

Device::~Device() { release(); }

void Device::release() {
    int previous = 0;
    if (cudaGetDevice(&previous) != cudaSuccess) return;
    cudaSetDevice(id);
    if (stream) cudaStreamDestroy(stream);
    if (error_flag) cudaFree(error_flag);
    stream = nullptr;
    error_flag = nullptr;
    cudaSetDevice(previous);
}

bool Device::synchronize_and_take_error() {
    DeviceScope scope(id);
    check_cuda(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
    int flag = 0;
    check_cuda(cudaMemcpy(&flag, error_flag, sizeof flag, cudaMemcpyDeviceToHost), "reading the error flag");
    if (flag) check_cuda(cudaMemset(error_flag, 0, sizeof(int)), "clearing the error flag");
    return flag != 0;
}

}  // namespace dsa
