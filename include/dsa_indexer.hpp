/*
 * dsa_indexer.hpp - an optional, header-only C++17 wrapper of dsa_indexer.h.
 *
 * RAII handles (dsa::Context, dsa::Cache: move-only, destroyed with their scope) and exceptions
 * (dsa::Error, carrying the status and the library's message) over the C API. Everything is inline and
 * calls only the C functions, so the ABI stays the C one: mixing this header with direct C calls is fine
 * (get() gives the raw handle), and no C++ type crosses the library boundary.
 *
 *   dsa::Context context;                                  // CPU; dsa::Context::on_devices({0}): GPU 0
 *   dsa_topk_params_t params = dsa::topk_params();         // H 64, D 128, P 64, k 2048, next_n 1
 *   ...
 *   context.topk_paged(params, inputs, outputs);           // throws dsa::Error on failure
 *
 * Destroy caches before their context: declaring the Cache after the Context it was created from does
 * that, since C++ destroys in reverse order (a context that still has caches cannot be destroyed; the
 * destructor would then leave it allocated rather than throw).
 */
#ifndef DSA_INDEXER_HPP
#define DSA_INDEXER_HPP

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dsa_indexer.h"

namespace dsa {

/** A failed call: status() is the dsa_status_t, message() the library's dsa_last_error_message(). */
class Error : public std::runtime_error {
public:
    Error(dsa_status_t status, const std::string& message)
        : std::runtime_error(std::string(dsa_status_string(status)) + ": " + message),
          status_(status),
          message_(message) {}

    dsa_status_t status() const noexcept { return status_; }
    const std::string& message() const noexcept { return message_; }

private:
    dsa_status_t status_;
    std::string message_;
};

/** Throws dsa::Error for any status but success. Reads the thread's message at once, before another call
 *  can replace it. */
inline void check(dsa_status_t status) {
    if (status != DSA_STATUS_SUCCESS) throw Error(status, dsa_last_error_message());
}

/** True when the loaded library serves this header: same major version, and not older. */
inline bool library_matches_header() noexcept {
    const int loaded = dsa_version();
    return loaded / 10000 == DSA_VERSION_MAJOR && loaded >= DSA_VERSION_NUMBER;
}

/** Initialised structs (struct_size set, the header's defaults), to fill field by field. */
inline dsa_topk_params_t topk_params() noexcept {
    dsa_topk_params_t params = DSA_TOPK_PARAMS_INIT;
    return params;
}
inline dsa_paged_inputs_t paged_inputs() noexcept {
    dsa_paged_inputs_t inputs = DSA_PAGED_INPUTS_INIT;
    return inputs;
}
inline dsa_ragged_inputs_t ragged_inputs() noexcept {
    dsa_ragged_inputs_t inputs = DSA_RAGGED_INPUTS_INIT;
    return inputs;
}
inline dsa_topk_outputs_t topk_outputs(int32_t* indices, float* scores = nullptr) noexcept {
    dsa_topk_outputs_t outputs = DSA_TOPK_OUTPUTS_INIT;
    outputs.indices = indices;
    outputs.scores = scores;
    return outputs;
}

class Cache;

/** A dsa_context_t: the CPU backend or a list of GPUs. */
class Context {
public:
    /** The CPU backend, one thread per hardware thread. */
    Context() : Context(nullptr, 0, 0) {}

    /** The CPU backend with num_cpu_threads threads (0 = one per hardware thread). */
    static Context cpu(int32_t num_cpu_threads) { return Context(nullptr, 0, num_cpu_threads); }

    /** The GPUs of device_ids (empty = CPU backend). Throws dsa::Error (DSA_STATUS_NO_DEVICE, ...). */
    static Context on_devices(const std::vector<int32_t>& device_ids) {
        return Context(device_ids.empty() ? nullptr : device_ids.data(), static_cast<int32_t>(device_ids.size()), 0);
    }

    ~Context() { dsa_context_destroy(handle_); }
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    Context(Context&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Context& operator=(Context&& other) noexcept {
        if (this != &other) {
            dsa_context_destroy(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }

    /** The raw handle, still owned by this object. */
    dsa_context_t get() const noexcept { return handle_; }
    /** Gives up ownership: the caller destroys the returned handle. */
    dsa_context_t release() noexcept { return std::exchange(handle_, nullptr); }

    int32_t num_devices() const {
        int32_t count = 0;
        check(dsa_context_num_devices(handle_, &count));
        return count;
    }

    /** Replaces the devices (empty = CPU backend); fails while caches of this context exist. */
    void set_devices(const std::vector<int32_t>& device_ids) {
        check(dsa_context_set_devices(handle_, device_ids.empty() ? nullptr : device_ids.data(),
                                      static_cast<int32_t>(device_ids.size())));
    }

    /** Waits for the context's work; throws DSA_STATUS_DEVICE_INPUT_ERROR for bad device-side input. */
    void synchronize() const { check(dsa_context_synchronize(handle_)); }

    std::size_t topk_paged_workspace_size(const dsa_topk_params_t& params, const dsa_paged_inputs_t& inputs) const {
        std::size_t bytes = 0;
        check(dsa_topk_paged_workspace_size(handle_, &params, &inputs, &bytes));
        return bytes;
    }

    /** dsa_topk_paged: on a GPU context, pointers are device memory and the call is asynchronous on
     *  stream (a cudaStream_t passed as void*). */
    void topk_paged(const dsa_topk_params_t& params, const dsa_paged_inputs_t& inputs,
                    const dsa_topk_outputs_t& outputs, void* workspace = nullptr, std::size_t workspace_bytes = 0,
                    void* stream = nullptr) const {
        check(dsa_topk_paged(handle_, &params, &inputs, &outputs, workspace, workspace_bytes, stream));
    }

    std::size_t topk_ragged_workspace_size(const dsa_topk_params_t& params, const dsa_ragged_inputs_t& inputs) const {
        std::size_t bytes = 0;
        check(dsa_topk_ragged_workspace_size(handle_, &params, &inputs, &bytes));
        return bytes;
    }

    void topk_ragged(const dsa_topk_params_t& params, const dsa_ragged_inputs_t& inputs,
                     const dsa_topk_outputs_t& outputs, void* workspace = nullptr, std::size_t workspace_bytes = 0,
                     void* stream = nullptr) const {
        check(dsa_topk_ragged(handle_, &params, &inputs, &outputs, workspace, workspace_bytes, stream));
    }

    /** dsa_topk over an owned cache (host memory everywhere; synchronous). */
    inline void topk(const Cache& cache, const dsa_topk_params_t& params, const dsa_paged_inputs_t& inputs,
                     const dsa_topk_outputs_t& outputs) const;

private:
    Context(const int32_t* device_ids, int32_t num_devices, int32_t num_cpu_threads) {
        dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
        config.device_ids = device_ids;
        config.num_devices = num_devices;
        config.num_cpu_threads = num_cpu_threads;
        check(dsa_context_create(&config, &handle_));
    }

    dsa_context_t handle_ = nullptr;
};

/** A dsa_cache_t: a paged K cache owned by the library, on its context's backend. */
class Cache {
public:
    Cache(const Context& context, int64_t num_pages, int32_t page_size = 64, int32_t head_dim = 128) {
        dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
        config.num_pages = num_pages;
        config.page_size = page_size;
        config.head_dim = head_dim;
        check(dsa_cache_create(context.get(), &config, &handle_));
    }

    ~Cache() { dsa_cache_destroy(handle_); }
    Cache(const Cache&) = delete;
    Cache& operator=(const Cache&) = delete;
    Cache(Cache&& other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Cache& operator=(Cache&& other) noexcept {
        if (this != &other) {
            dsa_cache_destroy(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }

    dsa_cache_t get() const noexcept { return handle_; }
    dsa_cache_t release() noexcept { return std::exchange(handle_, nullptr); }

    /** Token i to slot slots[i]: key keys[i * D ..] (fp8), scale scales[i]; all in memory_device's memory. */
    void write(const int64_t* slots, const void* keys, const float* scales, int64_t n,
               int32_t memory_device = DSA_MEMORY_HOST) {
        check(dsa_cache_write(handle_, slots, keys, scales, n, memory_device));
    }

    void read(const int64_t* slots, void* keys_out, float* scales_out, int64_t n,
              int32_t memory_device = DSA_MEMORY_HOST) const {
        check(dsa_cache_read(handle_, slots, keys_out, scales_out, n, memory_device));
    }

private:
    dsa_cache_t handle_ = nullptr;
};

inline void Context::topk(const Cache& cache, const dsa_topk_params_t& params, const dsa_paged_inputs_t& inputs,
                          const dsa_topk_outputs_t& outputs) const {
    check(dsa_topk(handle_, cache.get(), &params, &inputs, &outputs));
}

}  // namespace dsa

#endif  // DSA_INDEXER_HPP
