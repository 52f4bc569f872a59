// The extern "C" boundary. Each entry point is one call to translate(): argument checks, then one call into
// the context or cache (which serialise themselves), every exception turned into a status plus this
// thread's error message. Nothing here computes, locks or counts.
#include <array>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "api/validate.hpp"
#include "common/error.hpp"
#include "core/context.hpp"
#include "dsa_indexer.h"

struct dsa_context_s {
    dsa::Context context;
};

struct dsa_cache_s {
    std::unique_ptr<dsa::Cache> cache;
};

namespace {

thread_local std::string t_last_error;

void set_last_error(const char* message) noexcept {
    try {
        t_last_error = message;
    } catch (...) {
        t_last_error.clear();  // no memory for the message: the status still says what happened
    }
}

template <class Fn>
dsa_status_t translate(Fn&& fn) noexcept {
    t_last_error.clear();
    try {
        fn();
        return DSA_STATUS_SUCCESS;
    } catch (const dsa::Error& e) {
        set_last_error(e.what());
        return e.status();
    } catch (const std::bad_alloc&) {
        set_last_error("out of host memory");
        return DSA_STATUS_OUT_OF_MEMORY;
    } catch (const std::exception& e) {
        set_last_error(e.what());
        return DSA_STATUS_INTERNAL_ERROR;
    } catch (...) {
        set_last_error("unknown internal error");
        return DSA_STATUS_INTERNAL_ERROR;
    }
}

dsa::Context& context_of(dsa_context_t context) {
    dsa::require(context != nullptr, DSA_STATUS_INVALID_ARGUMENT, "context is NULL");
    return context->context;
}

dsa::Cache& cache_of(dsa_cache_t cache) {
    dsa::require(cache != nullptr, DSA_STATUS_INVALID_ARGUMENT, "cache is NULL");
    return *cache->cache;
}

template <class T>
T& out_param(T* out, const char* name) {
    dsa::require(out != nullptr, DSA_STATUS_INVALID_ARGUMENT, name, " is NULL");
    return *out;
}

std::vector<int> device_list(const int32_t* ids, int32_t n) {
    dsa::require(n >= 0, DSA_STATUS_INVALID_ARGUMENT, "num_devices is negative (", n, ")");
    dsa::require(n == 0 || ids != nullptr, DSA_STATUS_INVALID_ARGUMENT, "device_ids is NULL");
    return std::vector<int>(ids, ids + n);
}

// Shared by dsa_cache_write and dsa_cache_read: the pointer rules of both.
void check_cache_transfer(const void* slots, const void* keys, const void* scales, int64_t n) {
    dsa::require(n >= 0, DSA_STATUS_INVALID_ARGUMENT, "n is negative (", n, ")");
    if (n == 0) return;
    dsa::require(slots && keys && scales, DSA_STATUS_INVALID_ARGUMENT, "slots, keys and scales must not be NULL");
}

}  // namespace

extern "C" {

DSA_API int dsa_version(void) { return DSA_VERSION_NUMBER; }

DSA_API const char* dsa_status_string(dsa_status_t status) {
    switch (status) {
        case DSA_STATUS_SUCCESS: return "DSA_STATUS_SUCCESS";
        case DSA_STATUS_INVALID_ARGUMENT: return "DSA_STATUS_INVALID_ARGUMENT";
        case DSA_STATUS_UNSUPPORTED: return "DSA_STATUS_UNSUPPORTED";
        case DSA_STATUS_OUT_OF_MEMORY: return "DSA_STATUS_OUT_OF_MEMORY";
        case DSA_STATUS_NO_DEVICE: return "DSA_STATUS_NO_DEVICE";
        case DSA_STATUS_CUDA_ERROR: return "DSA_STATUS_CUDA_ERROR";
        case DSA_STATUS_NCCL_ERROR: return "DSA_STATUS_NCCL_ERROR";
        case DSA_STATUS_INSUFFICIENT_WORKSPACE: return "DSA_STATUS_INSUFFICIENT_WORKSPACE";
        case DSA_STATUS_DEVICE_INPUT_ERROR: return "DSA_STATUS_DEVICE_INPUT_ERROR";
        case DSA_STATUS_NOT_IMPLEMENTED: return "DSA_STATUS_NOT_IMPLEMENTED";
        case DSA_STATUS_INTERNAL_ERROR: return "DSA_STATUS_INTERNAL_ERROR";
    }
    return "DSA_STATUS_UNKNOWN";
}

DSA_API const char* dsa_last_error_message(void) { return t_last_error.c_str(); }

DSA_API void dsa_context_config_init(dsa_context_config_t* config) {
    if (config) *config = dsa_context_config_t DSA_CONTEXT_CONFIG_INIT;
}

DSA_API void dsa_topk_params_init(dsa_topk_params_t* params) {
    if (params) *params = dsa_topk_params_t DSA_TOPK_PARAMS_INIT;
}

DSA_API void dsa_paged_inputs_init(dsa_paged_inputs_t* inputs) {
    if (inputs) *inputs = dsa_paged_inputs_t DSA_PAGED_INPUTS_INIT;
}

DSA_API void dsa_ragged_inputs_init(dsa_ragged_inputs_t* inputs) {
    if (inputs) *inputs = dsa_ragged_inputs_t DSA_RAGGED_INPUTS_INIT;
}

DSA_API void dsa_topk_outputs_init(dsa_topk_outputs_t* outputs) {
    if (outputs) *outputs = dsa_topk_outputs_t DSA_TOPK_OUTPUTS_INIT;
}

DSA_API void dsa_cache_config_init(dsa_cache_config_t* config) {
    if (config) *config = dsa_cache_config_t DSA_CACHE_CONFIG_INIT;
}

DSA_API dsa_status_t dsa_context_create(const dsa_context_config_t* config, dsa_context_t* out_context) {
    return translate([&] {
        dsa_context_t& out = out_param(out_context, "out_context");
        const dsa_context_config_t c = dsa::api::read_context_config(config);
        std::optional<dsa::ProcessGroup> group;
        if (c.nccl_unique_id) {
            group.emplace();
            std::memcpy(group->unique_id.data(), c.nccl_unique_id->internal, group->unique_id.size());
            group->rank = c.nccl_rank;
            group->world_size = c.nccl_world_size;
        }
        out = new dsa_context_s{dsa::Context(device_list(c.device_ids, c.num_devices), c.num_cpu_threads, group)};
    });
}

DSA_API dsa_status_t dsa_nccl_unique_id_create(dsa_nccl_unique_id_t* out_id) {
    return translate([&] {
        dsa_nccl_unique_id_t& out = out_param(out_id, "out_id");
        const std::array<char, 128> id = dsa::new_nccl_unique_id();
        std::memcpy(out.internal, id.data(), id.size());
    });
}

DSA_API dsa_status_t dsa_context_destroy(dsa_context_t context) {
    return translate([&] {
        if (!context) return;
        context->context.close();
        delete context;
    });
}

DSA_API dsa_status_t dsa_context_set_devices(dsa_context_t context, const int32_t* device_ids, int32_t num_devices) {
    return translate([&] {
        dsa::Context& ctx = context_of(context);
        ctx.set_devices(device_list(device_ids, num_devices));
    });
}

DSA_API dsa_status_t dsa_context_num_devices(dsa_context_t context, int32_t* out_num_devices) {
    return translate([&] {
        dsa::Context& ctx = context_of(context);
        int32_t& out = out_param(out_num_devices, "out_num_devices");
        out = ctx.num_devices();
    });
}

DSA_API dsa_status_t dsa_context_synchronize(dsa_context_t context) {
    return translate([&] {
        context_of(context).synchronize();
    });
}

DSA_API dsa_status_t dsa_topk_paged_workspace_size(dsa_context_t context, const dsa_topk_params_t* params,
                                                   const dsa_paged_inputs_t* inputs, size_t* out_bytes) {
    return translate([&] {
        dsa::Context& ctx = context_of(context);
        size_t& out = out_param(out_bytes, "out_bytes");
        out = ctx.paged_workspace_size(dsa::api::check_paged_shape(params, inputs));
    });
}

DSA_API dsa_status_t dsa_topk_paged(dsa_context_t context, const dsa_topk_params_t* params,
                                    const dsa_paged_inputs_t* inputs, const dsa_topk_outputs_t* outputs,
                                    void* workspace, size_t workspace_bytes, void* stream) {
    return translate([&] {
        dsa::Context& ctx = context_of(context);
        const dsa::PagedProblem problem = dsa::api::check_paged(params, inputs, outputs, /*owned_cache=*/false);
        ctx.topk_paged(problem, workspace, workspace_bytes, stream);
    });
}

DSA_API dsa_status_t dsa_topk_ragged_workspace_size(dsa_context_t context, const dsa_topk_params_t* params,
                                                    const dsa_ragged_inputs_t* inputs, size_t* out_bytes) {
    return translate([&] {
        dsa::Context& ctx = context_of(context);
        size_t& out = out_param(out_bytes, "out_bytes");
        out = ctx.ragged_workspace_size(dsa::api::check_ragged_shape(params, inputs));
    });
}

DSA_API dsa_status_t dsa_topk_ragged(dsa_context_t context, const dsa_topk_params_t* params,
                                     const dsa_ragged_inputs_t* inputs, const dsa_topk_outputs_t* outputs,
                                     void* workspace, size_t workspace_bytes, void* stream) {
    return translate([&] {
        dsa::Context& ctx = context_of(context);
        const dsa::RaggedProblem problem = dsa::api::check_ragged(params, inputs, outputs);
        ctx.topk_ragged(problem, workspace, workspace_bytes, stream);
    });
}

DSA_API dsa_status_t dsa_cache_create(dsa_context_t context, const dsa_cache_config_t* config, dsa_cache_t* out_cache) {
    return translate([&] {
        dsa::Context& ctx = context_of(context);
        dsa_cache_t& out = out_param(out_cache, "out_cache");
        const dsa_cache_config_t c = dsa::api::read_cache_config(config);
        dsa::CacheLayout layout;
        layout.num_pages = c.num_pages;
        layout.page_size = c.page_size;
        layout.head_dim = c.head_dim;
        layout.sharded = c.mode == DSA_CACHE_SHARDED;
        out = new dsa_cache_s{ctx.create_cache(layout)};
    });
}

DSA_API dsa_status_t dsa_cache_destroy(dsa_cache_t cache) {
    return translate([&] {
        delete cache;
    });
}

DSA_API dsa_status_t dsa_cache_write(dsa_cache_t cache, const int64_t* slots, const void* keys, const float* scales,
                                     int64_t n, int32_t memory_device) {
    return translate([&] {
        dsa::Cache& c = cache_of(cache);
        check_cache_transfer(slots, keys, scales, n);
        c.write(slots, static_cast<const uint8_t*>(keys), scales, n, memory_device);
    });
}

DSA_API dsa_status_t dsa_cache_read(dsa_cache_t cache, const int64_t* slots, void* keys_out, float* scales_out,
                                    int64_t n, int32_t memory_device) {
    return translate([&] {
        dsa::Cache& c = cache_of(cache);
        check_cache_transfer(slots, keys_out, scales_out, n);
        c.read(slots, static_cast<uint8_t*>(keys_out), scales_out, n, memory_device);
    });
}

DSA_API dsa_status_t dsa_topk(dsa_context_t context, dsa_cache_t cache, const dsa_topk_params_t* params,
                              const dsa_paged_inputs_t* inputs, const dsa_topk_outputs_t* outputs) {
    return translate([&] {
        dsa::Context& ctx = context_of(context);
        dsa::Cache& c = cache_of(cache);
        dsa::require(&c.context() == &ctx, DSA_STATUS_INVALID_ARGUMENT, "cache belongs to another context");
        ctx.topk(c, dsa::api::check_paged(params, inputs, outputs, /*owned_cache=*/true));
    });
}

}  // extern "C"
