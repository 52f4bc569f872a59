"""The ctypes structs against the C header: sizes and offsets on x86-64, a probe compiled against the header
itself (every field's offset and size, the structs' sizes, the constants and the *_INIT defaults), the
header's field lists, the sizes the library itself reports through its initialisers, and the initialisers'
defaults."""

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dsa_indexer import _library as lib

HEADER = Path(__file__).resolve().parents[3] / "include" / "dsa_indexer.h"

# From include/dsa_indexer.h (0.2) on LP64 (x86-64, aarch64): size_t and pointers 8 bytes, int64 8-aligned.
LAYOUT = {
    lib.ContextConfig: (40, {"device_ids": 8, "num_devices": 16, "num_cpu_threads": 20, "nccl_unique_id": 24,
                             "nccl_rank": 32, "nccl_world_size": 36}),
    lib.TopkParams: (32, {"num_heads": 8, "head_dim": 12, "page_size": 16, "topk": 20, "next_n": 24, "flags": 28}),
    lib.PagedInputs: (80, {"batch_size": 8, "max_pages": 12, "block_table_stride": 16, "num_pages": 24,
                           "page_stride_bytes": 32, "q": 40, "k_cache": 48, "weights": 56, "seq_lens": 64,
                           "block_table": 72}),
    lib.RaggedInputs: (72, {"num_rows": 8, "num_keys": 16, "q": 24, "k": 32, "k_scale": 40, "weights": 48,
                            "row_start": 56, "row_end": 64}),
    lib.TopkOutputs: (32, {"indices": 8, "scores": 16, "memory_device": 24}),
    lib.CacheConfig: (32, {"num_pages": 8, "page_size": 16, "head_dim": 20, "mode": 24}),
    lib.NcclUniqueId: (128, {"internal": 0}),
}
INITIALISERS = {
    lib.ContextConfig: "dsa_context_config_init", lib.TopkParams: "dsa_topk_params_init",
    lib.PagedInputs: "dsa_paged_inputs_init", lib.RaggedInputs: "dsa_ragged_inputs_init",
    lib.TopkOutputs: "dsa_topk_outputs_init", lib.CacheConfig: "dsa_cache_config_init",
}
# ctypes mirror -> (C type, its *_INIT macro or None)
C_NAMES = {
    lib.ContextConfig: ("dsa_context_config_t", "DSA_CONTEXT_CONFIG_INIT"),
    lib.TopkParams: ("dsa_topk_params_t", "DSA_TOPK_PARAMS_INIT"),
    lib.PagedInputs: ("dsa_paged_inputs_t", "DSA_PAGED_INPUTS_INIT"),
    lib.RaggedInputs: ("dsa_ragged_inputs_t", "DSA_RAGGED_INPUTS_INIT"),
    lib.TopkOutputs: ("dsa_topk_outputs_t", "DSA_TOPK_OUTPUTS_INIT"),
    lib.CacheConfig: ("dsa_cache_config_t", "DSA_CACHE_CONFIG_INIT"),
    lib.NcclUniqueId: ("dsa_nccl_unique_id_t", None),
}
# new_struct() stands for the initialisers: every field the binding does not set holds the header's value.
DEFAULTED = list(INITIALISERS)
CONSTANTS = {
    "DSA_VERSION_MAJOR": lib.HEADER_VERSION[0], "DSA_VERSION_MINOR": lib.HEADER_VERSION[1],
    "DSA_VERSION_PATCH": lib.HEADER_VERSION[2], "DSA_MEMORY_HOST": lib.DSA_MEMORY_HOST,
    "DSA_NCCL_UNIQUE_ID_BYTES": lib.DSA_NCCL_UNIQUE_ID_BYTES, "DSA_CACHE_REPLICATED": lib.DSA_CACHE_REPLICATED,
    "DSA_CACHE_SHARDED": lib.DSA_CACHE_SHARDED, "DSA_TOPK_SORTED": lib.DSA_TOPK_SORTED,
    "DSA_TOPK_LOGICAL_INDICES": lib.DSA_TOPK_LOGICAL_INDICES,
    "DSA_TOPK_ABSOLUTE_INDICES": lib.DSA_TOPK_ABSOLUTE_INDICES,
}


def field_names(struct):
    return [name for name, *_ in struct._fields_]


def is_pointer(struct, name):
    field_type = dict((n, t) for n, t, *_ in struct._fields_)[name]
    return field_type is ctypes.c_void_p or issubclass(field_type, ctypes._Pointer)


def scalar_fields(struct):
    """Fields with one integer value (no arrays); pointers read as 0 / 1 (NULL or not)."""
    return [(name, is_pointer(struct, name)) for name, field_type, *_ in struct._fields_
            if not issubclass(field_type, ctypes.Array)]


@pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="layout table is for 64-bit targets")
@pytest.mark.parametrize("struct", list(LAYOUT), ids=lambda s: s.__name__)
def test_layout_matches_the_header(struct):
    size, offsets = LAYOUT[struct]
    assert ctypes.sizeof(struct) == size
    for name, offset in offsets.items():
        assert getattr(struct, name).offset == offset, name
    assert set(offsets) == set(field_names(struct)) - {"struct_size"}  # the table names every field


def header_fields():
    """{C type name: [field names in order]} of every struct typedef in the header, comments removed."""
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(), flags=re.DOTALL)
    return {typedef: re.findall(r"(\w+)\s*(?:\[[^\]]*\])?\s*;", body)
            for body, typedef in re.findall(r"typedef\s+struct\s+\w+\s*\{(.*?)\}\s*(\w+)\s*;", text, re.DOTALL)}


def test_every_header_struct_is_mirrored_field_for_field():
    in_header = header_fields()
    assert set(in_header) == {c_name for c_name, _ in C_NAMES.values()}
    for struct, (c_name, _) in C_NAMES.items():
        assert field_names(struct) == in_header[c_name], c_name


def probe_source():
    """A C99 program printing, per line, a key and a number: sizeof / offsetof / field sizes of every
    mirrored struct, the header's constants, and the scalar fields of each *_INIT."""
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "dsa_indexer.h"', "int main(void) {"]
    for struct, (c_name, init) in C_NAMES.items():
        key = struct.__name__
        lines.append(f'    printf("{key} %zu\\n", sizeof({c_name}));')
        for name in field_names(struct):
            lines.append(f'    printf("{key}.{name}.offset %zu\\n", offsetof({c_name}, {name}));')
            lines.append(f'    printf("{key}.{name}.size %zu\\n", sizeof((({c_name}*)0)->{name}));')
        if init:
            lines.append(f"    {{ {c_name} v = {init};")
            for name, pointer in scalar_fields(struct):
                value = f"(v.{name} != NULL)" if pointer else f"v.{name}"
                lines.append(f'      printf("{key}.{name}.init %lld\\n", (long long){value});')
            lines.append("    }")
    for name in CONSTANTS:
        lines.append(f'    printf("{name} %lld\\n", (long long)({name}));')
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """{key: number} printed by the probe compiled against include/dsa_indexer.h with this machine's C
    compiler ($CC, else cc / gcc / clang), for the ABI Python runs on."""
    compiler = os.environ.get("CC") or next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if not compiler:
        pytest.skip("no C compiler to build the header probe ($CC, cc, gcc or clang)")
    work = tmp_path_factory.mktemp("probe")
    (work / "probe.c").write_text(probe_source())
    build = subprocess.run([compiler, "-std=c99", "-Wall", "-Werror", "-I", str(HEADER.parent), "probe.c", "-o",
                            "probe"], cwd=work, capture_output=True, text=True)
    assert build.returncode == 0, "the probe does not compile against the header (a field the ctypes " \
                                  "mirror names is missing?):\n" + build.stderr
    output = subprocess.run([str(work / "probe")], capture_output=True, text=True, check=True).stdout
    return {key: int(value) for key, value in (line.split() for line in output.splitlines())}


@pytest.mark.parametrize("struct", list(C_NAMES), ids=lambda s: s.__name__)
def test_compiled_probe_sizes_and_offsets(probe, struct):
    key = struct.__name__
    assert ctypes.sizeof(struct) == probe[key], f"sizeof({C_NAMES[struct][0]})"
    for name in field_names(struct):
        field = getattr(struct, name)
        assert (field.offset, field.size) == (probe[f"{key}.{name}.offset"], probe[f"{key}.{name}.size"]), name


def test_compiled_probe_constants(probe):
    assert {name: probe[name] for name in CONSTANTS} == CONSTANTS


@pytest.mark.parametrize("struct", DEFAULTED, ids=lambda s: s.__name__)
def test_new_struct_defaults_are_the_header_init(probe, struct):
    """What the binding leaves unset goes to the library as the header's initialiser would set it (e.g.
    memory_device DSA_MEMORY_HOST, not 0 = device 0; nccl_world_size 1)."""
    ours = lib.new_struct(struct)
    for name, pointer in scalar_fields(struct):
        value = getattr(ours, name)
        assert (bool(value) if pointer else value) == probe[f"{struct.__name__}.{name}.init"], name


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
    assert (config.num_pages, config.page_size, config.head_dim, config.mode) == (0, 64, 128, lib.DSA_CACHE_REPLICATED)
    context = initialised(lib.ContextConfig)
    assert (context.num_devices, context.num_cpu_threads, bool(context.device_ids)) == (0, 0, False)
    assert (bool(context.nccl_unique_id), context.nccl_rank, context.nccl_world_size) == (False, 0, 1)
    outputs = initialised(lib.TopkOutputs)
    assert (bool(outputs.indices), bool(outputs.scores), outputs.memory_device) == (False, False, lib.DSA_MEMORY_HOST)


@pytest.mark.parametrize("struct", DEFAULTED, ids=lambda s: s.__name__)
def test_new_struct_equals_the_library_initialiser(struct):
    ours, theirs = lib.new_struct(struct), initialised(struct)
    for name, pointer in scalar_fields(struct):
        assert getattr(ours, name) == getattr(theirs, name) or (pointer and not getattr(ours, name)
                                                                  and not getattr(theirs, name)), name


def test_new_struct_sets_our_size():
    params = lib.new_struct(lib.TopkParams, topk=7)
    assert params.struct_size == ctypes.sizeof(lib.TopkParams) and params.topk == 7
    outputs = lib.new_struct(lib.TopkOutputs, memory_device=3)
    assert outputs.struct_size == ctypes.sizeof(lib.TopkOutputs) and outputs.memory_device == 3  # given wins


def test_the_unique_id_keeps_all_its_bytes():
    raw = bytes(range(64)) + bytes(64)  # NULs inside and at the end: a c_char field would cut them
    unique_id = lib.NcclUniqueId.from_buffer_copy(raw)
    assert bytes(unique_id) == raw and len(bytes(unique_id.internal)) == 128
