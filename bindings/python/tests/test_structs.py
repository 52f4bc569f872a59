"""The ctypes structs against the C header: sizes and offsets on x86-64, the sizes the library itself
reports through its initialisers, and the initialisers' defaults."""

import ctypes

import pytest

from dsa_indexer import _library as lib

# From include/dsa_indexer.h on LP64 (x86-64, aarch64): size_t and pointers 8 bytes, int64 8-aligned.
LAYOUT = {
    lib.ContextConfig: (24, {"device_ids": 8, "num_devices": 16, "num_cpu_threads": 20}),
    lib.TopkParams: (32, {"num_heads": 8, "head_dim": 12, "page_size": 16, "topk": 20, "next_n": 24, "flags": 28}),
    lib.PagedInputs: (80, {"batch_size": 8, "max_pages": 12, "block_table_stride": 16, "num_pages": 24,
                           "page_stride_bytes": 32, "q": 40, "k_cache": 48, "weights": 56, "seq_lens": 64,
                           "block_table": 72}),
    lib.RaggedInputs: (72, {"num_rows": 8, "num_keys": 16, "q": 24, "k": 32, "k_scale": 40, "weights": 48,
                            "row_start": 56, "row_end": 64}),
    lib.TopkOutputs: (24, {"indices": 8, "scores": 16}),
    lib.CacheConfig: (24, {"num_pages": 8, "page_size": 16, "head_dim": 20}),
}
INITIALISERS = {
    lib.ContextConfig: "dsa_context_config_init", lib.TopkParams: "dsa_topk_params_init",
    lib.PagedInputs: "dsa_paged_inputs_init", lib.RaggedInputs: "dsa_ragged_inputs_init",
    lib.TopkOutputs: "dsa_topk_outputs_init", lib.CacheConfig: "dsa_cache_config_init",
}


@pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="layout table is for 64-bit targets")
@pytest.mark.parametrize("struct", list(LAYOUT), ids=lambda s: s.__name__)
def test_layout_matches_the_header(struct):
    size, offsets = LAYOUT[struct]
    assert ctypes.sizeof(struct) == size
    for name, offset in offsets.items():
        assert getattr(struct, name).offset == offset, name


@pytest.mark.parametrize("struct", list(INITIALISERS), ids=lambda s: s.__name__)
def test_library_reports_the_same_size(struct):
    # The initialiser writes sizeof(C struct) bytes, so give it room to spare, then read its struct_size.
    buffer = (ctypes.c_uint8 * 1024)()
    getattr(lib.load_library(), INITIALISERS[struct])(ctypes.cast(buffer, ctypes.POINTER(struct)))
    assert struct.from_buffer(buffer).struct_size == ctypes.sizeof(struct)


def initialised(struct):
    buffer = (ctypes.c_uint8 * 1024)()
    getattr(lib.load_library(), INITIALISERS[struct])(ctypes.cast(buffer, ctypes.POINTER(struct)))
    return struct.from_buffer_copy(buffer)


def test_initialiser_defaults():
    params = initialised(lib.TopkParams)
    assert (params.num_heads, params.head_dim, params.page_size, params.topk, params.next_n, params.flags) == \
        (64, 128, 64, 2048, 1, 0)
    config = initialised(lib.CacheConfig)
    assert (config.num_pages, config.page_size, config.head_dim) == (0, 64, 128)
    context = initialised(lib.ContextConfig)
    assert (context.num_devices, context.num_cpu_threads, bool(context.device_ids)) == (0, 0, False)


def test_new_struct_sets_our_size():
    params = lib.new_struct(lib.TopkParams, topk=7)
    assert params.struct_size == ctypes.sizeof(lib.TopkParams) and params.topk == 7
