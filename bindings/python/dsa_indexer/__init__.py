"""dsa_indexer: the DeepSeek Sparse Attention lightning-indexer top-k of libdsa_indexer, from Python.

Pure ctypes over the library's C API (no compiled extension). Arrays are passed without copies: numpy
arrays to a CPU context; PyTorch / CuPy CUDA tensors (DLPack or ``__cuda_array_interface__``) to a GPU
context, on the tensors' current stream. Failed calls raise a DsaError subclass carrying the status and
the library's message.

    import numpy as np, dsa_indexer as dsa
    with dsa.Context() as ctx:                       # CPU backend; Context([0]) for GPU 0
        indices = ctx.topk_paged(q, k_cache, weights, seq_lens, block_table, topk=2048)

Across processes (one GPU each): one rank makes ``uid = dsa.nccl_unique_id()`` (128 bytes) and hands it to
the others; each then joins with ``dsa.Context.from_nccl_unique_id(uid, rank, world_size, device)``.

The library is found through $DSA_INDEXER_LIBRARY, next to this package, or the system loader path
(see load_library); its major version must be this package's and its minor version at least ours.
"""

from ._api import (
    Cache, Context, nccl_unique_id, topk, topk_paged, topk_paged_workspace_size, topk_ragged,
    topk_ragged_workspace_size, version,
)
from ._errors import (
    CudaError, DeviceInputError, DsaError, InsufficientWorkspaceError, InternalError, InvalidArgumentError,
    LibraryNotFoundError, LibraryVersionError, NcclError, NoDeviceError, NotImplementedByLibraryError,
    OutOfMemoryError, Status, UnsupportedError,
)
from ._library import (
    DSA_CACHE_REPLICATED, DSA_CACHE_SHARDED, DSA_MEMORY_HOST, DSA_NCCL_UNIQUE_ID_BYTES, DSA_TOPK_ABSOLUTE_INDICES,
    DSA_TOPK_LOGICAL_INDICES, DSA_TOPK_SORTED, HEADER_VERSION, LIBRARY_ENV_VAR, last_error_message, library_path,
    load_library, status_string,
)

__version__ = "%d.%d.%d" % HEADER_VERSION

__all__ = [
    "Cache", "Context", "CudaError", "DSA_CACHE_REPLICATED", "DSA_CACHE_SHARDED", "DSA_MEMORY_HOST",
    "DSA_NCCL_UNIQUE_ID_BYTES", "DSA_TOPK_ABSOLUTE_INDICES", "DSA_TOPK_LOGICAL_INDICES", "DSA_TOPK_SORTED",
    "DeviceInputError", "DsaError", "HEADER_VERSION", "InsufficientWorkspaceError", "InternalError",
    "InvalidArgumentError", "LIBRARY_ENV_VAR", "LibraryNotFoundError", "LibraryVersionError", "NcclError",
    "NoDeviceError", "NotImplementedByLibraryError", "OutOfMemoryError", "Status", "UnsupportedError",
    "last_error_message", "library_path", "load_library", "nccl_unique_id", "status_string", "topk", "topk_paged",
    "topk_paged_workspace_size", "topk_ragged", "topk_ragged_workspace_size", "version",
]
