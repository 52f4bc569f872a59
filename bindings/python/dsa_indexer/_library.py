"""Finding and loading libdsa_indexer, the ctypes mirror of its structs, and its function prototypes.

The structs mirror include/dsa_indexer.h field for field. This package never calls the C initialisers
(dsa_*_init) on them: a newer library's struct may be larger and its initialiser would write past ours.
Instead each struct is built here (new_struct) with the header's *_INIT values and struct_size =
sizeof(our mirror), which is exactly how the C API tells an older caller's struct from a newer one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path
from typing import Any, List, Optional

from ._errors import LibraryNotFoundError, LibraryVersionError, error_for_status

#: The C header version this package was written against (DSA_VERSION_MAJOR/MINOR/PATCH).
HEADER_VERSION = (0, 2, 0)

#: Environment variable naming the library file to load; it wins over every other place.
LIBRARY_ENV_VAR = "DSA_INDEXER_LIBRARY"

_SONAME = "libdsa_indexer.so.%d" % HEADER_VERSION[0]

DSA_MEMORY_HOST = -1
DSA_TOPK_SORTED = 0x1
DSA_TOPK_LOGICAL_INDICES = 0x2
DSA_TOPK_ABSOLUTE_INDICES = 0x4
DSA_CACHE_REPLICATED = 0
DSA_CACHE_SHARDED = 1
DSA_NCCL_UNIQUE_ID_BYTES = 128

dsa_context_t = ctypes.c_void_p
dsa_cache_t = ctypes.c_void_p


class NcclUniqueId(ctypes.Structure):
    """dsa_nccl_unique_id_t: ncclUniqueId's 128 opaque bytes."""

    # char internal[128] in C; unsigned bytes here because a c_char array field reads back cut at its first
    # NUL. bytes(struct) gives all 128.
    _fields_ = [("internal", ctypes.c_uint8 * DSA_NCCL_UNIQUE_ID_BYTES)]


class ContextConfig(ctypes.Structure):
    """dsa_context_config_t (0.2: the nccl_* fields, defaults NULL / rank 0 / world size 1)."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("device_ids", ctypes.POINTER(ctypes.c_int32)),
        ("num_devices", ctypes.c_int32),
        ("num_cpu_threads", ctypes.c_int32),
        # since 0.2
        ("nccl_unique_id", ctypes.POINTER(NcclUniqueId)),
        ("nccl_rank", ctypes.c_int32),
        ("nccl_world_size", ctypes.c_int32),
    ]
    _defaults_ = {"nccl_world_size": 1}


class TopkParams(ctypes.Structure):
    """dsa_topk_params_t (defaults of DSA_TOPK_PARAMS_INIT: H 64, D 128, P 64, k 2048, next_n 1)."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("num_heads", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        ("page_size", ctypes.c_int32),
        ("topk", ctypes.c_int32),
        ("next_n", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
    ]
    _defaults_ = {"num_heads": 64, "head_dim": 128, "page_size": 64, "topk": 2048, "next_n": 1}


class PagedInputs(ctypes.Structure):
    """dsa_paged_inputs_t."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("batch_size", ctypes.c_int32),
        ("max_pages", ctypes.c_int32),
        ("block_table_stride", ctypes.c_int64),
        ("num_pages", ctypes.c_int64),
        ("page_stride_bytes", ctypes.c_int64),
        ("q", ctypes.c_void_p),
        ("k_cache", ctypes.c_void_p),
        ("weights", ctypes.c_void_p),
        ("seq_lens", ctypes.c_void_p),
        ("block_table", ctypes.c_void_p),
    ]


class RaggedInputs(ctypes.Structure):
    """dsa_ragged_inputs_t."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("num_rows", ctypes.c_int32),
        ("num_keys", ctypes.c_int64),
        ("q", ctypes.c_void_p),
        ("k", ctypes.c_void_p),
        ("k_scale", ctypes.c_void_p),
        ("weights", ctypes.c_void_p),
        ("row_start", ctypes.c_void_p),
        ("row_end", ctypes.c_void_p),
    ]


class TopkOutputs(ctypes.Structure):
    """dsa_topk_outputs_t (0.2: memory_device, default DSA_MEMORY_HOST)."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("indices", ctypes.c_void_p),
        ("scores", ctypes.c_void_p),
        # since 0.2
        ("memory_device", ctypes.c_int32),
    ]
    _defaults_ = {"memory_device": DSA_MEMORY_HOST}


class CacheConfig(ctypes.Structure):
    """dsa_cache_config_t (0.2: mode, default DSA_CACHE_REPLICATED)."""

    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("num_pages", ctypes.c_int64),
        ("page_size", ctypes.c_int32),
        ("head_dim", ctypes.c_int32),
        # since 0.2
        ("mode", ctypes.c_int32),
    ]
    _defaults_ = {"page_size": 64, "head_dim": 128, "mode": DSA_CACHE_REPLICATED}


def new_struct(cls: Any, **fields: Any) -> Any:
    """What the C initialiser makes, built here: struct_size = this package's size of the struct, the
    header's *_INIT values (the class's _defaults_, every other field zero / NULL: e.g. memory_device is
    DSA_MEMORY_HOST, not 0 = device 0), then the given fields."""
    value = cls()
    value.struct_size = ctypes.sizeof(cls)
    types = dict(cls._fields_)
    for name, field_value in {**getattr(cls, "_defaults_", {}), **fields}.items():
        limits = _INTEGER_RANGES.get(types[name])
        # ctypes would silently wrap an out-of-range integer (topk=10**12 becomes a negative int32).
        if limits is not None and isinstance(field_value, int) and not limits[0] <= field_value <= limits[1]:
            raise ValueError(f"{name}: {field_value} is outside the range of the C API's {cls.__name__}.{name} "
                             f"([{limits[0]}, {limits[1]}])")
        setattr(value, name, field_value)
    return value


_INTEGER_RANGES = {
    ctypes.c_int32: (-(2 ** 31), 2 ** 31 - 1),
    ctypes.c_int64: (-(2 ** 63), 2 ** 63 - 1),
    ctypes.c_uint32: (0, 2 ** 32 - 1),
    ctypes.c_size_t: (0, 2 ** (8 * ctypes.sizeof(ctypes.c_size_t)) - 1),
}


_P = ctypes.POINTER
_STATUS = ctypes.c_int
# name -> (restype, argtypes). Every exported symbol of abi/symbols.txt appears here.
_PROTOTYPES = {
    "dsa_version": (ctypes.c_int, []),
    "dsa_status_string": (ctypes.c_char_p, [ctypes.c_int]),
    "dsa_last_error_message": (ctypes.c_char_p, []),
    "dsa_nccl_unique_id_create": (_STATUS, [_P(NcclUniqueId)]),
    "dsa_context_config_init": (None, [_P(ContextConfig)]),
    "dsa_context_create": (_STATUS, [_P(ContextConfig), _P(dsa_context_t)]),
    "dsa_context_destroy": (_STATUS, [dsa_context_t]),
    "dsa_context_set_devices": (_STATUS, [dsa_context_t, _P(ctypes.c_int32), ctypes.c_int32]),
    "dsa_context_num_devices": (_STATUS, [dsa_context_t, _P(ctypes.c_int32)]),
    "dsa_context_synchronize": (_STATUS, [dsa_context_t]),
    "dsa_topk_params_init": (None, [_P(TopkParams)]),
    "dsa_paged_inputs_init": (None, [_P(PagedInputs)]),
    "dsa_ragged_inputs_init": (None, [_P(RaggedInputs)]),
    "dsa_topk_outputs_init": (None, [_P(TopkOutputs)]),
    "dsa_topk_paged_workspace_size": (
        _STATUS, [dsa_context_t, _P(TopkParams), _P(PagedInputs), _P(ctypes.c_size_t)]),
    "dsa_topk_paged": (
        _STATUS, [dsa_context_t, _P(TopkParams), _P(PagedInputs), _P(TopkOutputs),
                  ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]),
    "dsa_topk_ragged_workspace_size": (
        _STATUS, [dsa_context_t, _P(TopkParams), _P(RaggedInputs), _P(ctypes.c_size_t)]),
    "dsa_topk_ragged": (
        _STATUS, [dsa_context_t, _P(TopkParams), _P(RaggedInputs), _P(TopkOutputs),
                  ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]),
    "dsa_cache_config_init": (None, [_P(CacheConfig)]),
    "dsa_cache_create": (_STATUS, [dsa_context_t, _P(CacheConfig), _P(dsa_cache_t)]),
    "dsa_cache_destroy": (_STATUS, [dsa_cache_t]),
    "dsa_cache_write": (
        _STATUS, [dsa_cache_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32]),
    "dsa_cache_read": (
        _STATUS, [dsa_cache_t, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32]),
    "dsa_topk": (
        _STATUS, [dsa_context_t, dsa_cache_t, _P(TopkParams), _P(PagedInputs), _P(TopkOutputs)]),
}

_lock = threading.Lock()
_loaded: Optional[ctypes.CDLL] = None
_loaded_path: Optional[str] = None


def _candidates() -> List[str]:
    """Where to look, in order: the environment variable, next to this package, the system paths."""
    from_env = os.environ.get(LIBRARY_ENV_VAR)
    if from_env:
        return [from_env]  # explicit: nothing else is tried, so a wrong value is an error, not a fallback
    here = Path(__file__).resolve().parent
    found = [str(p) for name in (_SONAME, "libdsa_indexer.so") for p in [here / name] if p.exists()]
    found.append(_SONAME)  # the dynamic loader's own search (LD_LIBRARY_PATH, ld.so.cache, rpath)
    system = ctypes.util.find_library("dsa_indexer")
    if system:
        found.append(system)
    return found


def check_version(number: int) -> None:
    """Raises LibraryVersionError unless a library of DSA_VERSION_NUMBER `number` serves this package:
    the same major version (the ABI) and at least the minor version whose structs we mirror."""
    major, minor = number // 10000, number // 100 % 100
    if major != HEADER_VERSION[0] or minor < HEADER_VERSION[1]:
        raise LibraryVersionError(
            f"libdsa_indexer version {major}.{minor}.{number % 100} does not match this package, which "
            f"needs {HEADER_VERSION[0]}.x with x >= {HEADER_VERSION[1]}"
        )


def load_library(path: Optional[str] = None) -> ctypes.CDLL:
    """Loads (once) and returns libdsa_indexer, checking its version.

    Args:
        path: the library file to load. When None: the file named by $DSA_INDEXER_LIBRARY if set, else
            libdsa_indexer.so.N next to this package, else the dynamic loader's search path.
    Raises:
        LibraryNotFoundError: no candidate could be loaded.
        LibraryVersionError: the library's major version differs, or its minor version is older.
    """
    global _loaded, _loaded_path
    with _lock:
        if _loaded is not None and path is None:
            return _loaded
        errors = []
        for candidate in [path] if path else _candidates():
            try:
                lib = ctypes.CDLL(candidate)
            except OSError as e:
                errors.append(f"{candidate}: {e}")
                continue
            missing = [name for name in _PROTOTYPES if not hasattr(lib, name)]
            if missing:
                errors.append(f"{candidate}: not libdsa_indexer (missing {', '.join(missing)})")
                continue
            for name, (restype, argtypes) in _PROTOTYPES.items():
                function = getattr(lib, name)
                function.restype = restype
                function.argtypes = argtypes
            check_version(lib.dsa_version())
            _loaded, _loaded_path = lib, candidate
            return lib
        raise LibraryNotFoundError(
            "cannot load libdsa_indexer; set %s to the library file or install it on the loader's path. "
            "Tried: %s" % (LIBRARY_ENV_VAR, "; ".join(errors))
        )


def library_path() -> str:
    """The path (or loader name) the library was loaded from; loads it if needed."""
    load_library()
    assert _loaded_path is not None
    return _loaded_path


def last_error_message() -> str:
    """dsa_last_error_message(): the calling thread's message of its last failed call ("" if none)."""
    raw = load_library().dsa_last_error_message()
    return raw.decode("utf-8", "replace") if raw else ""


def status_string(status: int) -> str:
    """dsa_status_string(): the name of a status, e.g. "DSA_STATUS_UNSUPPORTED"."""
    raw: bytes = load_library().dsa_status_string(int(status))
    return raw.decode("ascii", "replace")


def call(name: str, *args: Any) -> None:
    """Calls a status-returning entry point; raises the DsaError subclass of a failure with its message.
    The message is read at once, on this thread: it is thread-local and the next call replaces it."""
    status = getattr(load_library(), name)(*args)
    if status != 0:
        raise error_for_status(status, last_error_message(), name)
