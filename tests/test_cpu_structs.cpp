// The initialisers (functions and macros) and the struct_size rules of every public struct.
#include <cstring>
#include <functional>

#include "test_cpu_common.hpp"

using namespace dsa_test;

TEST_CASE("initialisers give the documented defaults, function and macro alike", "[cpu][api]") {
    auto garbage = [](auto& s) { std::memset(&s, 0xFF, sizeof s); };

    dsa_context_config_t context_fn, context_macro = DSA_CONTEXT_CONFIG_INIT;
    garbage(context_fn);
    dsa_context_config_init(&context_fn);
    for (const auto& c : {context_fn, context_macro}) {
        CHECK(c.struct_size == sizeof(dsa_context_config_t));
        CHECK(c.device_ids == nullptr);
        CHECK(c.num_devices == 0);
        CHECK(c.num_cpu_threads == 0);
    }
    dsa_topk_params_t params_fn, params_macro = DSA_TOPK_PARAMS_INIT;
    garbage(params_fn);
    dsa_topk_params_init(&params_fn);
    for (const auto& p : {params_fn, params_macro}) {
        CHECK(p.struct_size == sizeof(dsa_topk_params_t));
        CHECK(p.num_heads == 64);
        CHECK(p.head_dim == 128);
        CHECK(p.page_size == 64);
        CHECK(p.topk == 2048);
        CHECK(p.next_n == 1);
        CHECK(p.flags == 0u);
    }
    dsa_paged_inputs_t paged_fn, paged_macro = DSA_PAGED_INPUTS_INIT;
    garbage(paged_fn);
    dsa_paged_inputs_init(&paged_fn);
    for (const auto& in : {paged_fn, paged_macro}) {
        CHECK(in.struct_size == sizeof(dsa_paged_inputs_t));
        CHECK((in.batch_size == 0 && in.max_pages == 0 && in.block_table_stride == 0 && in.num_pages == 0 &&
               in.page_stride_bytes == 0));
        CHECK((in.q == nullptr && in.k_cache == nullptr && in.weights == nullptr && in.seq_lens == nullptr &&
               in.block_table == nullptr));
    }
    dsa_ragged_inputs_t ragged_fn, ragged_macro = DSA_RAGGED_INPUTS_INIT;
    garbage(ragged_fn);
    dsa_ragged_inputs_init(&ragged_fn);
    for (const auto& in : {ragged_fn, ragged_macro}) {
        CHECK(in.struct_size == sizeof(dsa_ragged_inputs_t));
        CHECK((in.num_rows == 0 && in.num_keys == 0));
        CHECK((in.q == nullptr && in.k == nullptr && in.k_scale == nullptr && in.weights == nullptr &&
               in.row_start == nullptr && in.row_end == nullptr));
    }
    dsa_topk_outputs_t outputs_fn, outputs_macro = DSA_TOPK_OUTPUTS_INIT;
    garbage(outputs_fn);
    dsa_topk_outputs_init(&outputs_fn);
    for (const auto& o : {outputs_fn, outputs_macro}) {
        CHECK(o.struct_size == sizeof(dsa_topk_outputs_t));
        CHECK((o.indices == nullptr && o.scores == nullptr));
    }
    dsa_cache_config_t cache_fn, cache_macro = DSA_CACHE_CONFIG_INIT;
    garbage(cache_fn);
    dsa_cache_config_init(&cache_fn);
    for (const auto& c : {cache_fn, cache_macro}) {
        CHECK(c.struct_size == sizeof(dsa_cache_config_t));
        CHECK(c.num_pages == 0);
        CHECK(c.page_size == 64);
        CHECK(c.head_dim == 128);
    }
}

// The size a struct had in 0.1 (the structs that grew since are also accepted at it, dsa_indexer.h).
size_t first_release_size(const std::string& what) {
    if (what.rfind("dsa_context_config_t", 0) == 0) return offsetof(dsa_context_config_t, nccl_unique_id);
    if (what.rfind("dsa_topk_outputs_t", 0) == 0) return offsetof(dsa_topk_outputs_t, memory_device);
    if (what.rfind("dsa_cache_config_t", 0) == 0) return offsetof(dsa_cache_config_t, mode);
    return 0;
}

TEST_CASE("struct_size: the 0.1 size or the current one; smaller is INVALID_ARGUMENT, larger UNSUPPORTED",
          "[cpu][api]") {
    Context ctx;
    PagedCase paged = random_paged(layout_of(32, 32, 1), {10}, 3);
    RaggedCase ragged = random_ragged(32, 10, {{0, 10}}, 4);
    TopkOutput out(1, 4, true);

    // Each call takes the struct_size to put into the struct under test, the others stay valid.
    using SizedCall = std::function<dsa_status_t(size_t)>;
    auto paged_call = [&](int which) {
        return [&, which](size_t size) {
            dsa_topk_params_t params = paged.params(4, 0);
            dsa_paged_inputs_t inputs = paged.inputs();
            dsa_topk_outputs_t outputs = out.outputs();
            (which == 0 ? params.struct_size : which == 1 ? inputs.struct_size : outputs.struct_size) = size;
            return dsa_topk_paged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr);
        };
    };
    auto ragged_call = [&](int which) {
        return [&, which](size_t size) {
            dsa_topk_params_t params = ragged.params(4, 0);
            dsa_ragged_inputs_t inputs = ragged.inputs();
            dsa_topk_outputs_t outputs = out.outputs();
            (which == 0 ? params.struct_size : which == 1 ? inputs.struct_size : outputs.struct_size) = size;
            return dsa_topk_ragged(ctx.get(), &params, &inputs, &outputs, nullptr, 0, nullptr);
        };
    };
    const std::vector<std::tuple<const char*, size_t, SizedCall>> calls = {
        {"dsa_context_config_t in dsa_context_create", sizeof(dsa_context_config_t),
         [](size_t size) {
             dsa_context_config_t config = DSA_CONTEXT_CONFIG_INIT;
             config.struct_size = size;
             dsa_context_t created = nullptr;
             const dsa_status_t status = dsa_context_create(&config, &created);
             if (status == DSA_STATUS_SUCCESS) dsa_context_destroy(created);  // (a success clears the message)
             return status;
         }},
        {"dsa_cache_config_t in dsa_cache_create", sizeof(dsa_cache_config_t),
         [&](size_t size) {
             dsa_cache_config_t config = DSA_CACHE_CONFIG_INIT;
             config.num_pages = 2;
             config.struct_size = size;
             dsa_cache_t cache = nullptr;
             const dsa_status_t status = dsa_cache_create(ctx.get(), &config, &cache);
             if (status == DSA_STATUS_SUCCESS) dsa_cache_destroy(cache);
             return status;
         }},
        {"dsa_topk_params_t in dsa_topk_paged", sizeof(dsa_topk_params_t), paged_call(0)},
        {"dsa_paged_inputs_t in dsa_topk_paged", sizeof(dsa_paged_inputs_t), paged_call(1)},
        {"dsa_topk_outputs_t in dsa_topk_paged", sizeof(dsa_topk_outputs_t), paged_call(2)},
        {"dsa_topk_params_t in dsa_topk_ragged", sizeof(dsa_topk_params_t), ragged_call(0)},
        {"dsa_ragged_inputs_t in dsa_topk_ragged", sizeof(dsa_ragged_inputs_t), ragged_call(1)},
        {"dsa_topk_outputs_t in dsa_topk_ragged", sizeof(dsa_topk_outputs_t), ragged_call(2)},
        {"dsa_paged_inputs_t in dsa_topk_paged_workspace_size", sizeof(dsa_paged_inputs_t),
         [&](size_t size) {
             dsa_topk_params_t params = paged.params(4, 0);
             dsa_paged_inputs_t inputs = paged.inputs();
             inputs.struct_size = size;
             size_t bytes = 0;
             return dsa_topk_paged_workspace_size(ctx.get(), &params, &inputs, &bytes);
         }},
        {"dsa_ragged_inputs_t in dsa_topk_ragged_workspace_size", sizeof(dsa_ragged_inputs_t),
         [&](size_t size) {
             dsa_topk_params_t params = ragged.params(4, 0);
             dsa_ragged_inputs_t inputs = ragged.inputs();
             inputs.struct_size = size;
             size_t bytes = 0;
             return dsa_topk_ragged_workspace_size(ctx.get(), &params, &inputs, &bytes);
         }},
    };
    for (const auto& [what, size, call] : calls) {
        INFO(what);
        CHECK(call(size) == DSA_STATUS_SUCCESS);
        const size_t first = first_release_size(what);
        if (first) CHECK(call(first) == DSA_STATUS_SUCCESS);  // a 0.1 caller: appended fields take their defaults
        for (size_t smaller : {size_t(0), size - 1, size - 8, size - 12}) {
            if (smaller == first) continue;
            CHECK(call(smaller) == DSA_STATUS_INVALID_ARGUMENT);
            CHECK(message_contains("struct_size"));
        }
        for (size_t larger : {size + 1, size + 8, size + 4096}) {
            CHECK(call(larger) == DSA_STATUS_UNSUPPORTED);
            CHECK(message_contains("struct_size"));
        }
    }
    CHECK(out.guards_intact());
}
