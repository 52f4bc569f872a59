#include "api/validate.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common/constants.hpp"
#include "common/error.hpp"

namespace dsa::api {
namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// Every public struct starts with its size. A struct that grew since 0.1 is accepted at both sizes: read
// at its 0.1 size, the fields appended since keep their initialiser's values. Any other smaller size was
// not initialised; a larger one comes from a newer header than this library.
template <class T>
struct StructHistory {  // structs unchanged since 0.1
    static constexpr size_t first_size = sizeof(T);
    static T initialised() { return T{}; }
};
template <>
struct StructHistory<dsa_context_config_t> {
    static constexpr size_t first_size = offsetof(dsa_context_config_t, nccl_unique_id);
    static dsa_context_config_t initialised() { return DSA_CONTEXT_CONFIG_INIT; }
};
template <>
struct StructHistory<dsa_topk_outputs_t> {
    static constexpr size_t first_size = offsetof(dsa_topk_outputs_t, memory_device);
    static dsa_topk_outputs_t initialised() { return DSA_TOPK_OUTPUTS_INIT; }
};
template <>
struct StructHistory<dsa_cache_config_t> {
    static constexpr size_t first_size = offsetof(dsa_cache_config_t, mode);
    static dsa_cache_config_t initialised() { return DSA_CACHE_CONFIG_INIT; }
};

template <class T>
T read_struct(const T* in, const char* name, const char* init_call) {
    require(in != nullptr, DSA_STATUS_INVALID_ARGUMENT, name, " is NULL");
    const size_t size = in->struct_size, first = StructHistory<T>::first_size;
    require(size <= sizeof(T), DSA_STATUS_UNSUPPORTED, name, "->struct_size is ", size, ", larger than this library's ",
            sizeof(T), ": the header is newer than the library (version ", DSA_VERSION_MAJOR, ".", DSA_VERSION_MINOR,
            ".", DSA_VERSION_PATCH, ")");
    require(size == sizeof(T) || size == first, DSA_STATUS_INVALID_ARGUMENT, name, "->struct_size is ", size,
            ", expected ", sizeof(T), first != sizeof(T) ? " (or the 0.1 size)" : "", ": initialise it with ",
            init_call, "()");
    T value = StructHistory<T>::initialised();
    std::memcpy(static_cast<void*>(&value), static_cast<const void*>(in), size);
    return value;
}

void require_aligned(const void* p, unsigned alignment, const char* name) {
    require(reinterpret_cast<uintptr_t>(p) % alignment == 0, DSA_STATUS_INVALID_ARGUMENT, name,
            " must be aligned to ", alignment, " bytes");
}

void require_pointer(const void* p, const char* name) {
    require(p != nullptr, DSA_STATUS_INVALID_ARGUMENT, name, " is NULL");
}

struct ByteRange {
    const void* begin;
    int64_t bytes;
    const char* name;
};

bool overlap(const ByteRange& a, const ByteRange& b) {
    if (!a.begin || !b.begin || a.bytes <= 0 || b.bytes <= 0) return false;
    const auto a0 = reinterpret_cast<uintptr_t>(a.begin), b0 = reinterpret_cast<uintptr_t>(b.begin);
    return a0 < b0 + uintptr_t(b.bytes) && b0 < a0 + uintptr_t(a.bytes);
}

// Outputs may alias neither an input nor each other (SPEC section 4).
template <size_t N>
void check_no_alias(const ByteRange (&inputs)[N], const TopkOutputs& out, int64_t rows, int topk) {
    const int64_t out_bytes = rows * topk * 4;
    const ByteRange outputs[2] = {{out.indices, out_bytes, "outputs->indices"},
                                  {out.scores, out_bytes, "outputs->scores"}};
    require(!overlap(outputs[0], outputs[1]), DSA_STATUS_INVALID_ARGUMENT,
            "outputs->indices and outputs->scores overlap");
    for (const ByteRange& o : outputs)
        for (const ByteRange& i : inputs)
            require(!overlap(o, i), DSA_STATUS_INVALID_ARGUMENT, o.name, " overlaps input ", i.name);
}

TopkShape check_params(const dsa_topk_params_t* params_in, bool paged) {
    const dsa_topk_params_t p = read_struct(params_in, "params", "dsa_topk_params_init");
    require(p.num_heads == 32 || p.num_heads == 64, DSA_STATUS_UNSUPPORTED, "params->num_heads is ", p.num_heads,
            ": supported values are 32 and 64");
    require(p.head_dim == kHeadDim, DSA_STATUS_UNSUPPORTED, "params->head_dim is ", p.head_dim,
            ": the supported value is ", kHeadDim);
    require(p.topk >= 1 && p.topk <= kMaxTopk, DSA_STATUS_UNSUPPORTED, "params->topk is ", p.topk,
            ": supported range is [1, ", kMaxTopk, "]");
    const uint32_t known = DSA_TOPK_SORTED | DSA_TOPK_LOGICAL_INDICES | DSA_TOPK_ABSOLUTE_INDICES;
    require((p.flags & ~known) == 0, DSA_STATUS_INVALID_ARGUMENT, "params->flags has unknown bits 0x", std::hex,
            (p.flags & ~known));
    TopkShape shape;
    shape.num_heads = p.num_heads;
    shape.head_dim = p.head_dim;
    shape.topk = p.topk;
    shape.sorted = (p.flags & DSA_TOPK_SORTED) != 0;
    if (paged) {
        require(p.page_size == 32 || p.page_size == 64, DSA_STATUS_UNSUPPORTED, "params->page_size is ",
                p.page_size, ": supported values are 32 and 64");
        require(p.next_n >= 1 && p.next_n <= kMaxNextN, DSA_STATUS_UNSUPPORTED, "params->next_n is ", p.next_n,
                ": supported range is [1, ", kMaxNextN, "]");
        require(!(p.flags & DSA_TOPK_ABSOLUTE_INDICES), DSA_STATUS_INVALID_ARGUMENT,
                "DSA_TOPK_ABSOLUTE_INDICES applies to ragged calls only");
        shape.page_size = p.page_size;
        shape.next_n = p.next_n;
        shape.index_mode = (p.flags & DSA_TOPK_LOGICAL_INDICES) ? IndexMode::PagedLogical : IndexMode::PagedGlobalSlot;
    } else {
        require(!(p.flags & DSA_TOPK_LOGICAL_INDICES), DSA_STATUS_INVALID_ARGUMENT,
                "DSA_TOPK_LOGICAL_INDICES applies to paged calls only");
        shape.page_size = 1;
        shape.next_n = 1;
        shape.index_mode = (p.flags & DSA_TOPK_ABSOLUTE_INDICES) ? IndexMode::RaggedAbsolute : IndexMode::RaggedRelative;
    }
    return shape;
}

TopkOutputs check_outputs(const dsa_topk_outputs_t* outputs_in, int64_t rows, int* memory_device) {
    const dsa_topk_outputs_t o = read_struct(outputs_in, "outputs", "dsa_topk_outputs_init");
    *memory_device = o.memory_device;
    if (rows > 0) require_pointer(o.indices, "outputs->indices");
    require_aligned(o.indices, 4, "outputs->indices");
    require_aligned(o.scores, 4, "outputs->scores");
    return TopkOutputs{o.indices, o.scores};
}


}  // namespace

PagedProblem check_paged_shape(const dsa_topk_params_t* params, const dsa_paged_inputs_t* inputs_in) {
    PagedProblem pb;
    pb.shape = check_params(params, /*paged=*/true);
    const dsa_paged_inputs_t in = read_struct(inputs_in, "inputs", "dsa_paged_inputs_init");
    const int P = pb.shape.page_size;
    require(in.batch_size >= 0, DSA_STATUS_INVALID_ARGUMENT, "inputs->batch_size is negative (", in.batch_size, ")");
    require(in.max_pages >= 0, DSA_STATUS_INVALID_ARGUMENT, "inputs->max_pages is negative (", in.max_pages, ")");
    require(in.num_pages >= 0, DSA_STATUS_INVALID_ARGUMENT, "inputs->num_pages is negative (", in.num_pages, ")");
    require(int64_t(in.max_pages) * P <= kInt32Max, DSA_STATUS_UNSUPPORTED, "inputs->max_pages * page_size (",
            int64_t(in.max_pages) * P, ") exceeds the int32 position range");
    // The message names both factors: their product may not fit in int64 (num_pages is caller input).
    require(in.num_pages <= (kInt32Max + 1) / P, DSA_STATUS_UNSUPPORTED, "inputs->num_pages (", in.num_pages,
            ") * page_size (", P, ") exceeds the int32 slot range");
    pb.batch_size = in.batch_size;
    pb.max_pages = in.max_pages;
    pb.block_table_stride = in.block_table_stride;
    pb.num_pages = in.num_pages;
    pb.page_stride_bytes = in.page_stride_bytes;
    pb.q = static_cast<const uint8_t*>(in.q);
    pb.k_cache = static_cast<const uint8_t*>(in.k_cache);
    pb.weights = in.weights;
    pb.seq_lens = in.seq_lens;
    pb.block_table = in.block_table;
    return pb;
}

PagedProblem check_paged(const dsa_topk_params_t* params, const dsa_paged_inputs_t* inputs,
                         const dsa_topk_outputs_t* outputs, bool owned_cache) {
    PagedProblem pb = check_paged_shape(params, inputs);
    const int P = pb.shape.page_size, H = pb.shape.num_heads;
    const int64_t min_stride = int64_t(P) * kTokenBytes;
    if (owned_cache) {
        require(pb.k_cache == nullptr && pb.num_pages == 0 && pb.page_stride_bytes == 0, DSA_STATUS_INVALID_ARGUMENT,
                "inputs->k_cache, num_pages and page_stride_bytes must be NULL/0 with an owned cache");
    } else {
        require(pb.page_stride_bytes >= min_stride && pb.page_stride_bytes % 16 == 0, DSA_STATUS_INVALID_ARGUMENT,
                "inputs->page_stride_bytes is ", pb.page_stride_bytes, ": it must be >= page_size * (head_dim + 4) = ",
                min_stride, " and a multiple of 16");
        if (pb.num_pages > 0) require_pointer(pb.k_cache, "inputs->k_cache");
        require_aligned(pb.k_cache, 16, "inputs->k_cache");
        // No caller buffer spans more than int64 bytes, and page * page_stride_bytes must not overflow.
        require(pb.num_pages == 0 || pb.page_stride_bytes <= kInt64Max / pb.num_pages, DSA_STATUS_INVALID_ARGUMENT,
                "inputs->page_stride_bytes (", pb.page_stride_bytes, ") * num_pages (", pb.num_pages,
                ") exceeds the int64 byte range");
    }
    // Checked here, not in check_paged_shape: the workspace-size query reads no stride (dsa_indexer.h).
    require(pb.block_table_stride >= pb.max_pages, DSA_STATUS_INVALID_ARGUMENT, "inputs->block_table_stride (",
            pb.block_table_stride, ") is below max_pages (", pb.max_pages, ")");
    // The block table's bytes, (batch_size - 1) * stride + max_pages entries, must fit in int64 too.
    require(pb.batch_size <= 1 || pb.block_table_stride <= (kInt64Max / 4 - pb.max_pages) / (pb.batch_size - 1),
            DSA_STATUS_INVALID_ARGUMENT, "inputs->block_table_stride (", pb.block_table_stride, ") with batch_size ",
            pb.batch_size, " exceeds the int64 byte range");
    const int64_t rows = pb.rows();
    if (pb.batch_size > 0) {
        require_pointer(pb.q, "inputs->q");
        require_pointer(pb.weights, "inputs->weights");
        require_pointer(pb.seq_lens, "inputs->seq_lens");
        if (pb.max_pages > 0) require_pointer(pb.block_table, "inputs->block_table");
    }
    require_aligned(pb.q, 16, "inputs->q");
    require_aligned(pb.weights, 4, "inputs->weights");
    require_aligned(pb.seq_lens, 4, "inputs->seq_lens");
    require_aligned(pb.block_table, 4, "inputs->block_table");
    pb.out = check_outputs(outputs, rows, &pb.output_device);
    if (!owned_cache) pb.output_device = -1;  // the engine path ignores the field (dsa_indexer.h)
    const int64_t table_elems = pb.batch_size > 0 ? (pb.batch_size - 1) * pb.block_table_stride + pb.max_pages : 0;
    const ByteRange in_ranges[] = {{pb.q, rows * H * kHeadDim, "q"},
                                   {pb.k_cache, pb.num_pages * pb.page_stride_bytes, "k_cache"},
                                   {pb.weights, rows * H * 4, "weights"},
                                   {pb.seq_lens, int64_t(pb.batch_size) * 4, "seq_lens"},
                                   {pb.block_table, table_elems * 4, "block_table"}};
    check_no_alias(in_ranges, pb.out, rows, pb.shape.topk);
    return pb;
}

RaggedProblem check_ragged_shape(const dsa_topk_params_t* params, const dsa_ragged_inputs_t* inputs_in) {
    RaggedProblem pb;
    pb.shape = check_params(params, /*paged=*/false);
    const dsa_ragged_inputs_t in = read_struct(inputs_in, "inputs", "dsa_ragged_inputs_init");
    require(in.num_rows >= 0, DSA_STATUS_INVALID_ARGUMENT, "inputs->num_rows is negative (", in.num_rows, ")");
    require(in.num_keys >= 0, DSA_STATUS_INVALID_ARGUMENT, "inputs->num_keys is negative (", in.num_keys, ")");
    require(in.num_keys <= kInt32Max, DSA_STATUS_UNSUPPORTED, "inputs->num_keys (", in.num_keys,
            ") exceeds the int32 index range");
    pb.num_rows = in.num_rows;
    pb.num_keys = in.num_keys;
    pb.q = static_cast<const uint8_t*>(in.q);
    pb.k = static_cast<const uint8_t*>(in.k);
    pb.k_scale = in.k_scale;
    pb.weights = in.weights;
    pb.row_start = in.row_start;
    pb.row_end = in.row_end;
    return pb;
}

RaggedProblem check_ragged(const dsa_topk_params_t* params, const dsa_ragged_inputs_t* inputs,
                           const dsa_topk_outputs_t* outputs) {
    RaggedProblem pb = check_ragged_shape(params, inputs);
    const int H = pb.shape.num_heads;
    const int64_t rows = pb.rows();
    if (rows > 0) {
        require_pointer(pb.q, "inputs->q");
        require_pointer(pb.weights, "inputs->weights");
        require_pointer(pb.row_start, "inputs->row_start");
        require_pointer(pb.row_end, "inputs->row_end");
    }
    if (pb.num_keys > 0) {
        require_pointer(pb.k, "inputs->k");
        require_pointer(pb.k_scale, "inputs->k_scale");
    }
    require_aligned(pb.q, 16, "inputs->q");
    require_aligned(pb.k, 16, "inputs->k");
    require_aligned(pb.k_scale, 4, "inputs->k_scale");
    require_aligned(pb.weights, 4, "inputs->weights");
    require_aligned(pb.row_start, 4, "inputs->row_start");
    require_aligned(pb.row_end, 4, "inputs->row_end");
    int ignored_device = 0;  // the engine path ignores outputs->memory_device (dsa_indexer.h)
    pb.out = check_outputs(outputs, rows, &ignored_device);
    const ByteRange in_ranges[] = {{pb.q, rows * H * kHeadDim, "q"},
                                   {pb.k, pb.num_keys * kHeadDim, "k"},
                                   {pb.k_scale, pb.num_keys * 4, "k_scale"},
                                   {pb.weights, rows * H * 4, "weights"},
                                   {pb.row_start, rows * 4, "row_start"},
                                   {pb.row_end, rows * 4, "row_end"}};
    check_no_alias(in_ranges, pb.out, rows, pb.shape.topk);
    return pb;
}

dsa_context_config_t read_context_config(const dsa_context_config_t* config) {
    const dsa_context_config_t c = read_struct(config, "config", "dsa_context_config_init");
    require(c.num_devices >= 0, DSA_STATUS_INVALID_ARGUMENT, "config->num_devices is negative (", c.num_devices, ")");
    if (c.num_devices > 0) require_pointer(c.device_ids, "config->device_ids");
    require(c.num_cpu_threads >= 0, DSA_STATUS_INVALID_ARGUMENT, "config->num_cpu_threads is negative (",
            c.num_cpu_threads, ")");
    if (c.nccl_unique_id) {
        require(c.nccl_world_size >= 1 && c.nccl_rank >= 0 && c.nccl_rank < c.nccl_world_size,
                DSA_STATUS_INVALID_ARGUMENT, "config->nccl_rank ", c.nccl_rank, " is outside [0, nccl_world_size = ",
                c.nccl_world_size, ")");
        require(c.num_devices == 1, DSA_STATUS_INVALID_ARGUMENT, "a context spanning processes has exactly one GPU "
                "per process: config->num_devices is ", c.num_devices);
    }
    return c;
}

dsa_cache_config_t read_cache_config(const dsa_cache_config_t* config) {
    const dsa_cache_config_t c = read_struct(config, "config", "dsa_cache_config_init");
    require(c.num_pages >= 1, DSA_STATUS_INVALID_ARGUMENT, "config->num_pages is ", c.num_pages, ": it must be >= 1");
    require(c.page_size == 32 || c.page_size == 64, DSA_STATUS_UNSUPPORTED, "config->page_size is ", c.page_size,
            ": supported values are 32 and 64");
    require(c.head_dim == kHeadDim, DSA_STATUS_UNSUPPORTED, "config->head_dim is ", c.head_dim,
            ": the supported value is ", kHeadDim);
    require(c.num_pages <= (kInt32Max + 1) / c.page_size, DSA_STATUS_UNSUPPORTED, "config->num_pages (", c.num_pages,
            ") * page_size (", c.page_size, ") exceeds the int32 slot range");
    require(c.mode == DSA_CACHE_REPLICATED || c.mode == DSA_CACHE_SHARDED, DSA_STATUS_INVALID_ARGUMENT,
            "config->mode is ", c.mode, ": use DSA_CACHE_REPLICATED or DSA_CACHE_SHARDED");
    return c;
}

}  // namespace dsa::api
