// What the parts of dsa_bench share: medians, status and CUDA checks, device buffers, JSON strings.
#pragma once

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#if DSA_BENCH_CUDA
#include <cuda_runtime_api.h>
#endif

#include "dsa_indexer.h"
#include "test_util.hpp"

namespace dsa_bench {

// Bytes of one cached token (SPEC section 1): its fp8 key and its fp32 scale.
constexpr double kTokenBytes = dsa_test::kHeadDim + 4;

// Calls item(text) for each comma-separated item of `text` (empty items included, for the caller to reject)
// until one returns false.
inline bool for_each_item(const std::string& text, const std::function<bool(const std::string&)>& item) {
    size_t start = 0;
    while (start <= text.size()) {
        const size_t comma = std::min(text.find(',', start), text.size());
        if (!item(text.substr(start, comma - start))) return false;
        start = comma + 1;
    }
    return true;
}

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

inline void require_ok(dsa_status_t status, const char* what) {
    if (status != DSA_STATUS_SUCCESS)
        throw std::runtime_error(std::string(what) + ": " + dsa_status_string(status) + ": " + dsa_last_error_message());
}

inline std::string json_escape(const std::string& s) {
    std::string out;
    for (char ch : s) {
        if (ch == '"' || ch == '\\') out += '\\';
        out += (ch == '\n') ? ' ' : ch;
    }
    return out;
}

#if DSA_BENCH_CUDA
inline void cuda_ok(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

struct DeviceMemory {
    void* ptr = nullptr;
    explicit DeviceMemory(size_t bytes) { cuda_ok(cudaMalloc(&ptr, std::max<size_t>(bytes, 16)), "cudaMalloc"); }
    ~DeviceMemory() { cudaFree(ptr); }
    DeviceMemory(const DeviceMemory&) = delete;
    DeviceMemory& operator=(const DeviceMemory&) = delete;
    template <class T>
    T* as() const { return static_cast<T*>(ptr); }
};

template <class T, class A>
std::unique_ptr<DeviceMemory> upload(const std::vector<T, A>& host) {
    auto mem = std::make_unique<DeviceMemory>(host.size() * sizeof(T));
    cuda_ok(cudaMemcpy(mem->ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
    return mem;
}
#endif

}  // namespace dsa_bench
