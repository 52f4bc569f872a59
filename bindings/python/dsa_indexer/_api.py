"""Context, Cache and the top-k calls: argument checks in Python, then one call into the C library.

Every array is checked (dtype, shape, strides, device) before the C call, so that a mistake made from
Python surfaces as a TypeError / ValueError naming the argument, and only what the library alone can
judge (supported ranges, seq_lens against the block table, ...) comes back as a DsaError.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable, ClassVar, List, Optional, Sequence, Tuple, TypeVar, Union

from . import _arrays
from ._arrays import ArrayView
from ._errors import DsaError, error_for_status
from ._library import (
    DSA_CACHE_REPLICATED, DSA_CACHE_SHARDED, DSA_MEMORY_HOST, DSA_NCCL_UNIQUE_ID_BYTES, DSA_TOPK_ABSOLUTE_INDICES,
    DSA_TOPK_LOGICAL_INDICES, DSA_TOPK_SORTED, CacheConfig, ContextConfig, NcclUniqueId, PagedInputs, RaggedInputs,
    TopkOutputs, TopkParams, call, dsa_cache_t, dsa_context_t, load_library, new_struct,
)

FP8_DTYPES = ("uint8", "float8_e4m3fn")
ArrayLike = Any  # a numpy array, a torch / cupy tensor, or anything with DLPack or an array interface
TopkResult = Union[Any, Tuple[Any, Any]]
CacheMode = Union[str, int]  # "replicated" / "sharded", or DSA_CACHE_REPLICATED / DSA_CACHE_SHARDED

_CACHE_MODES = {"replicated": DSA_CACHE_REPLICATED, "sharded": DSA_CACHE_SHARDED}


def version() -> Tuple[int, int, int]:
    """(major, minor, patch) of the loaded library (dsa_version())."""
    number = load_library().dsa_version()
    return number // 10000, number // 100 % 100, number % 100


def nccl_unique_id() -> bytes:
    """dsa_nccl_unique_id_create(): a new NCCL unique id, DSA_NCCL_UNIQUE_ID_BYTES (128) opaque bytes.

    For a context spanning processes: make it on one process, hand it to the others yourself (MPI, a
    socket, a file, ...), then every rank calls Context.from_nccl_unique_id(unique_id, rank, world_size,
    device).
    Raises:
        NotImplementedByLibraryError: the library was built without NCCL.
        NcclError: NCCL failed (its message attached).
    """
    unique_id = NcclUniqueId()
    call("dsa_nccl_unique_id_create", ctypes.byref(unique_id))
    return bytes(unique_id)


# ---- argument checks -------------------------------------------------------------------------------------

def _check_dtype(view: ArrayView, allowed: Sequence[str]) -> None:
    if view.dtype not in allowed:
        raise TypeError(f"{view.name}: dtype must be {' or '.join(allowed)}, got {view.dtype}")


def _check_shape(view: ArrayView, expected: Tuple[int, ...], meaning: str) -> None:
    if view.shape != expected:
        raise ValueError(f"{view.name}: shape must be {meaning} = {expected}, got {view.shape}")


def _check_contiguous(view: ArrayView) -> None:
    if not view.is_c_contiguous():
        raise ValueError(f"{view.name}: must be C-contiguous (row-major without gaps); strides in elements "
                         f"are {view.strides} for shape {view.shape}")


def _check_writable(view: ArrayView) -> None:
    if view.readonly:
        raise ValueError(f"{view.name}: is read-only, and the library writes to it")


def _check_alignment(view: ArrayView, alignment: int) -> None:
    if view.ptr % alignment:
        raise ValueError(f"{view.name}: must be {alignment}-byte aligned, its address is {view.ptr:#x}")


def _flags(sorted: bool, logical_indices: bool = False, absolute_indices: bool = False) -> int:
    return ((DSA_TOPK_SORTED if sorted else 0) | (DSA_TOPK_LOGICAL_INDICES if logical_indices else 0)
            | (DSA_TOPK_ABSOLUTE_INDICES if absolute_indices else 0))


def _int32_array(values: Sequence[int]) -> Any:
    return (ctypes.c_int32 * len(values))(*values) if values else None


def _memory_name(device: Optional[int]) -> str:
    return "host memory" if device is None else f"CUDA device {device}"


def _check_context_device(context: "Context", device: Optional[int], name: str, what: str) -> None:
    """An owned-cache call's memory_device must be host memory or a GPU of the context in this process."""
    if device is None or device in context.devices:
        return
    if not context.devices:
        raise ValueError(f"{name}: is in CUDA device {device}, which is not a device of the context: the "
                         f"context is the CPU backend, so {what} must be in host memory")
    raise ValueError(f"{name}: is in CUDA device {device}, which is not a device of the context in this "
                     f"process {list(context.devices)}")


def _cache_mode(mode: CacheMode) -> int:
    """DSA_CACHE_REPLICATED / DSA_CACHE_SHARDED from a mode name or one of those constants."""
    if isinstance(mode, str):
        if mode.lower() in _CACHE_MODES:
            return _CACHE_MODES[mode.lower()]
    elif isinstance(mode, int) and not isinstance(mode, bool):
        if mode in _CACHE_MODES.values():
            return int(mode)
    else:
        raise TypeError(f"mode: must be a str or an int, got {type(mode).__name__}")
    raise ValueError(f"mode: must be 'replicated' or 'sharded' (DSA_CACHE_REPLICATED = {DSA_CACHE_REPLICATED} or "
                     f"DSA_CACHE_SHARDED = {DSA_CACHE_SHARDED}), got {mode!r}")


def _nccl_config(unique_id: Any, rank: int, world_size: int, num_devices: int) -> Optional[NcclUniqueId]:
    """Checks the arguments of a context spanning processes; returns the id struct (None: one process)."""
    if unique_id is None:
        if rank != 0 or world_size != 1:
            raise ValueError(f"nccl_rank={rank} / nccl_world_size={world_size}: a context spanning processes "
                             "needs nccl_unique_id (see nccl_unique_id())")
        return None
    if not isinstance(unique_id, (bytes, bytearray, memoryview)):
        raise TypeError(f"nccl_unique_id: must be the bytes nccl_unique_id() returned, got "
                        f"{type(unique_id).__name__}")
    raw = bytes(unique_id)
    if len(raw) != DSA_NCCL_UNIQUE_ID_BYTES:
        raise ValueError(f"nccl_unique_id: must be {DSA_NCCL_UNIQUE_ID_BYTES} bytes, got {len(raw)}")
    if world_size < 1:
        raise ValueError(f"nccl_world_size: must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"nccl_rank: must be in [0, {world_size}) for nccl_world_size {world_size}, got {rank}")
    if num_devices != 1:
        raise ValueError(f"devices: a context spanning processes has exactly one GPU per process, got {num_devices}")
    return NcclUniqueId.from_buffer_copy(raw)


class _Call:
    """The arrays of one call: converted once, checked to live where the context computes."""

    def __init__(self, context: "Context", template: ArrayLike, template_name: str, stream: Any,
                 host_only: bool = False) -> None:
        self.context = context
        device = _arrays.device_of(template)
        self.device = device
        self.template = template
        self.views: List[ArrayView] = []
        if host_only:
            self.expected_device: Optional[int] = None
            where = "host memory (the owned-cache call reads host arrays)"
        elif context.devices:
            self.expected_device = context.devices[0]
            where = f"CUDA device {self.expected_device} (the context's first device)"
        else:
            self.expected_device = None
            where = "host memory (the context is the CPU backend)"
        self.where = where
        if device != self.expected_device:
            raise ValueError(f"{template_name}: is in {_memory_name(device)}, but must be in {where}")
        # Where the outputs are, and what new ones are made like: the inputs' memory unless outputs_in says.
        self.output_device, self.output_where, self.output_template = self.expected_device, where, template
        if self.expected_device is None:
            if stream not in (None, 0):
                raise ValueError("stream: must be None for host arrays (the CPU backend is synchronous)")
            self.stream: Optional[int] = None
        else:
            self.stream = _arrays.resolve_stream(stream, template, device)

    def outputs_in(self, device: Optional[int], template: ArrayLike, template_name: str) -> None:
        """The owned-cache call's outputs are in `device` memory (its memory_device; None: host), where
        `template` (an output given) is; outputs not given are made like it."""
        self.output_device, self.output_template = device, template
        self.output_where = f"{_memory_name(device)}, where {template_name} is (both outputs in one memory)"

    def array(self, obj: ArrayLike, name: str, output: bool = False) -> ArrayView:
        view = _arrays.as_array(obj, name, self.stream)
        device, where = (self.output_device, self.output_where) if output else (self.expected_device, self.where)
        if view.device != device:
            raise ValueError(f"{name}: is in {view.where()}, but must be in {where}")
        if view.itemsize > 1:
            _check_alignment(view, view.itemsize)  # numpy can make unaligned views; C cannot read them
        self.views.append(view)
        return view

    def output(self, given: Optional[ArrayLike], name: str, shape: Tuple[int, ...],
               dtype: str) -> Tuple[Any, ArrayView]:
        array = given
        if array is None:
            array = _arrays.empty(self.output_template, self.output_device, shape, dtype, self.stream)
        view = self.array(array, name, output=True)
        _check_dtype(view, [dtype])
        _check_shape(view, shape, "(rows, topk)" if len(shape) == 2 else "the size it needs")
        _check_contiguous(view)
        _check_writable(view)
        return array, view

    def workspace(self, given: Optional[ArrayLike], required: int) -> Tuple[int, int]:
        """(pointer, bytes) of the workspace: the one given, else a new one from the inputs' framework."""
        if self.expected_device is None and given is None:
            return 0, 0
        if given is None:
            if required == 0:
                return 0, 0
            given = _arrays.empty(self.template, self.device, (required,), "uint8", self.stream)
        view = self.array(given, "workspace")
        _check_contiguous(view)
        _check_writable(view)
        if view.itemsize == 0:
            raise TypeError(f"workspace: unsupported dtype {view.dtype}")
        return view.ptr, view.nbytes


def _paged_rows(call_: _Call, q: ArrayLike, weights: ArrayLike, seq_lens: ArrayLike, block_table: ArrayLike,
                next_n: Optional[int]) -> Tuple[PagedInputs, int, int, int, int]:
    """Checks the row inputs shared by topk_paged and Cache.topk; returns (inputs, rows, H, D, next_n)."""
    q_view = call_.array(q, "q")
    seq_view = call_.array(seq_lens, "seq_lens")
    weights_view = call_.array(weights, "weights")
    table_view = call_.array(block_table, "block_table")

    _check_dtype(seq_view, ["int32"])
    if len(seq_view.shape) != 1:
        raise ValueError(f"seq_lens: must be 1-D [batch_size], got shape {seq_view.shape}")
    _check_contiguous(seq_view)
    batch = seq_view.shape[0]

    _check_dtype(q_view, FP8_DTYPES)
    _check_contiguous(q_view)
    _check_alignment(q_view, 16)  # the header's rule: q and the keys 16-byte aligned, the rest 4-byte
    if len(q_view.shape) == 4:
        if next_n is not None and next_n != q_view.shape[1]:
            raise ValueError(f"next_n={next_n} disagrees with q of shape {q_view.shape} [B, next_n, H, D]")
        next_n = q_view.shape[1]
        if q_view.shape[0] != batch:
            raise ValueError(f"q: shape {q_view.shape} [B, next_n, H, D] has B = {q_view.shape[0]}, but seq_lens "
                             f"has {batch} sequences")
    elif len(q_view.shape) == 3:
        next_n = 1 if next_n is None else next_n
        if q_view.shape[0] != batch * next_n:
            raise ValueError(f"q: shape {q_view.shape} [B * next_n, H, D] needs {batch * next_n} rows for "
                             f"{batch} sequences with next_n {next_n}")
    else:
        raise ValueError(f"q: must be [B, next_n, H, D] or [B * next_n, H, D], got shape {q_view.shape}")
    heads, dim = q_view.shape[-2], q_view.shape[-1]
    rows = batch * next_n

    _check_dtype(weights_view, ["float32"])
    if weights_view.shape not in ((rows, heads), (batch, next_n, heads)):
        raise ValueError(f"weights: shape must be (B * next_n, H) = {(rows, heads)}, got {weights_view.shape}")
    _check_contiguous(weights_view)

    _check_dtype(table_view, ["int32"])
    if len(table_view.shape) != 2 or table_view.shape[0] != batch:
        raise ValueError(f"block_table: shape must be (B, max_pages) with B = {batch}, got {table_view.shape}")
    max_pages = table_view.shape[1]
    row_stride = table_view.strides[0] if batch > 1 else max_pages  # a lone row's stride is meaningless
    if max_pages > 1 and table_view.strides[1] != 1:
        raise ValueError(f"block_table: columns must be contiguous (element stride 1), got strides "
                         f"{table_view.strides}")
    if row_stride < max_pages:
        raise ValueError(f"block_table: row stride {row_stride} is below max_pages {max_pages}")

    inputs = new_struct(PagedInputs, batch_size=batch, max_pages=max_pages, block_table_stride=row_stride,
                        q=q_view.ptr, weights=weights_view.ptr, seq_lens=seq_view.ptr, block_table=table_view.ptr)
    return inputs, rows, heads, dim, next_n


def _outputs(call_: _Call, rows: int, topk: int, indices: Optional[ArrayLike], scores: Optional[ArrayLike],
             return_scores: bool, before_allocating: Callable[[], None],
             memory_device: int = DSA_MEMORY_HOST) -> Tuple[TopkOutputs, TopkResult]:
    """The outputs struct and what the Python call returns: indices, or (indices, scores). memory_device
    is read by dsa_topk only (the engine-path calls ignore it).

    Outputs given are checked first (in Python); then before_allocating() runs (the library's check of the
    parameters and sizes, which raises for a call it would refuse), and only then are the missing outputs
    allocated: a bad topk is a clear error, never a huge or negative allocation."""
    want_scores = return_scores or scores is not None
    index_view = score_view = None
    if indices is not None:
        indices, index_view = call_.output(indices, "indices", (rows, topk), "int32")
    if scores is not None:
        scores, score_view = call_.output(scores, "scores", (rows, topk), "float32")
    before_allocating()
    if index_view is None:
        indices, index_view = call_.output(None, "indices", (rows, topk), "int32")
    if want_scores and score_view is None:
        scores, score_view = call_.output(None, "scores", (rows, topk), "float32")
    if not want_scores:
        return new_struct(TopkOutputs, indices=index_view.ptr, memory_device=memory_device), indices
    assert score_view is not None
    return (new_struct(TopkOutputs, indices=index_view.ptr, scores=score_view.ptr, memory_device=memory_device),
            (indices, scores))


class _Required:
    """The workspace bytes of one call, from the library's size query: that query checks the parameters and
    sizes exactly as the call will (SPEC section 3's ranges) and reads no array, so it runs before any
    output is allocated."""

    bytes = 0

    def query(self, context: "Context", function: str, params: TopkParams, inputs: Any) -> None:
        size = ctypes.c_size_t()
        try:
            call(function + "_workspace_size", context.handle, ctypes.byref(params), ctypes.byref(inputs),
                 ctypes.byref(size))
        except DsaError as e:  # named after the call the user made
            raise error_for_status(int(e.status), e.message, function) from None
        self.bytes = size.value


# ---- handles ---------------------------------------------------------------------------------------------

_H = TypeVar("_H", bound="_Handle")


class _Handle:
    """The lifetime both handle classes share: close() (also on leaving a `with` block, and as a finaliser)
    destroys the library handle once; using it afterwards raises ValueError."""

    _kind: ClassVar[str]     # "context" / "cache", for messages
    _destroy: ClassVar[str]  # the dsa_*_destroy entry point
    _handle: Optional[ctypes.c_void_p] = None

    @property
    def handle(self) -> ctypes.c_void_p:
        """The raw dsa_context_t / dsa_cache_t, for passing to other ctypes code."""
        if self._handle is None:
            raise ValueError(f"the {self._kind} is closed")
        return self._handle

    def close(self) -> None:
        """dsa_context_destroy() / dsa_cache_destroy(): frees the handle (a context first waits for its
        work, and cannot be closed while caches created from it are open). Closing twice is a no-op."""
        if self._handle is not None:
            call(self._destroy, self._handle)
            self._handle = None

    def __enter__(self: _H) -> _H:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if self._handle is not None:
            try:
                self.close()
            except Exception:
                pass  # caches still alive or interpreter shutdown: nothing useful to do in a finaliser


# ---- context ---------------------------------------------------------------------------------------------

class Context(_Handle):
    """A dsa_context_t: the CPU backend (no devices) or a list of GPUs, possibly one GPU in each of several
    processes (see from_nccl_unique_id).

    Use as a context manager, or call close(); a context that still has caches cannot be closed.

    Args:
        devices: CUDA device ordinals; None or [] selects the CPU backend.
        num_cpu_threads: threads of the CPU backend; 0 = one per hardware thread.
        nccl_unique_id, nccl_rank, nccl_world_size: join a context spanning nccl_world_size processes as
            rank nccl_rank, with exactly one device; see from_nccl_unique_id. None / 0 / 1: this process only.
    Raises:
        NoDeviceError: a requested GPU does not exist, or the library was built without CUDA.
        TypeError / ValueError: a malformed unique id, rank or world size (checked before the library).
    """

    _kind = "context"
    _destroy = "dsa_context_destroy"

    def __init__(self, devices: Optional[Sequence[int]] = None, *, num_cpu_threads: int = 0,
                 nccl_unique_id: Optional[bytes] = None, nccl_rank: int = 0, nccl_world_size: int = 1) -> None:
        ids = [int(d) for d in (devices or [])]
        nccl_rank, nccl_world_size = int(nccl_rank), int(nccl_world_size)
        unique_id = _nccl_config(nccl_unique_id, nccl_rank, nccl_world_size, len(ids))
        id_array = _int32_array(ids)
        config = new_struct(ContextConfig, num_devices=len(ids), num_cpu_threads=num_cpu_threads)
        if id_array is not None:
            config.device_ids = id_array
        if unique_id is not None:
            config.nccl_unique_id = ctypes.pointer(unique_id)
            config.nccl_rank, config.nccl_world_size = nccl_rank, nccl_world_size
        handle = dsa_context_t()
        call("dsa_context_create", ctypes.byref(config), ctypes.byref(handle))
        self._handle = handle
        self._devices: Tuple[int, ...] = tuple(ids)
        self._nccl = (nccl_rank, nccl_world_size) if unique_id is not None else None

    @classmethod
    def from_nccl_unique_id(cls, unique_id: bytes, rank: int, world_size: int, device: int) -> "Context":
        """This process's part of a context spanning world_size processes, one GPU (device) each.

        Every process passes the same unique_id (the bytes of nccl_unique_id(), made on one of them) and
        its own rank in [0, world_size). Creating the context is collective: it returns once every rank
        has joined. So is every call that moves data between ranks (Cache create / write / read / close
        and Cache.topk): all ranks make it, in the same order, with the same arguments; each rank receives
        the whole top-k result. Close caches explicitly (or by `with`) at the same point on every rank:
        left to the garbage collector, their collective destroy would run at different times. set_devices
        is refused on such a context.
        Raises:
            TypeError / ValueError: unique_id is not 128 bytes, or rank / world_size are out of range.
            NcclError, NoDeviceError, NotImplementedByLibraryError: what the library reports.
        """
        if unique_id is None:  # None would make a context of this process only
            raise TypeError("nccl_unique_id: must be the bytes nccl_unique_id() returned, got None")
        return cls([device], nccl_unique_id=unique_id, nccl_rank=rank, nccl_world_size=world_size)

    def __repr__(self) -> str:
        backend = f"devices={list(self._devices)}" if self._devices else "cpu"
        if self._nccl is not None:
            backend += f" rank={self._nccl[0]}/{self._nccl[1]}"
        return f"<dsa_indexer.Context {backend}{' closed' if self._handle is None else ''}>"

    # -- devices --
    @property
    def devices(self) -> Tuple[int, ...]:
        """The context's CUDA device ordinals in this process; () for the CPU backend."""
        return self._devices

    @property
    def nccl_rank(self) -> int:
        """This process's rank in a context spanning processes; 0 otherwise."""
        return 0 if self._nccl is None else self._nccl[0]

    @property
    def nccl_world_size(self) -> int:
        """The number of processes of a context spanning processes; 1 otherwise."""
        return 1 if self._nccl is None else self._nccl[1]

    @property
    def num_devices(self) -> int:
        """dsa_context_num_devices(): the number of GPUs in this process (0 for the CPU backend)."""
        count = ctypes.c_int32()
        call("dsa_context_num_devices", self.handle, ctypes.byref(count))
        return count.value

    def set_devices(self, devices: Optional[Sequence[int]]) -> None:
        """dsa_context_set_devices(): replaces the devices ([] or None = CPU). Fails while caches exist."""
        ids = [int(d) for d in (devices or [])]
        call("dsa_context_set_devices", self.handle, _int32_array(ids), len(ids))
        self._devices = tuple(ids)

    def synchronize(self) -> None:
        """dsa_context_synchronize(): waits for all the context's work (caller streams included) and raises
        DeviceInputError when a GPU kernel met a bad block-table entry or seq_len since the last check."""
        call("dsa_context_synchronize", self.handle)

    # -- workspace sizes --
    def topk_paged_workspace_size(self, batch_size: int, max_pages: int, num_pages: int, *, num_heads: int = 64,
                                  head_dim: int = 128, page_size: int = 64, topk: int = 2048, next_n: int = 1,
                                  sorted: bool = False, logical_indices: bool = False) -> int:
        """dsa_topk_paged_workspace_size(): bytes of workspace topk_paged needs (0 on the CPU backend).
        Size it once for the largest batch and max_pages you will use (e.g. before capturing CUDA graphs)."""
        params = new_struct(TopkParams, num_heads=num_heads, head_dim=head_dim, page_size=page_size, topk=topk,
                            next_n=next_n, flags=_flags(sorted, logical_indices))
        # Only the sizes are read, but they are checked as a call's would be: a compact table and pages.
        inputs = new_struct(PagedInputs, batch_size=batch_size, max_pages=max_pages, block_table_stride=max_pages,
                            num_pages=num_pages, page_stride_bytes=page_size * (head_dim + 4))
        size = ctypes.c_size_t()
        call("dsa_topk_paged_workspace_size", self.handle, ctypes.byref(params), ctypes.byref(inputs),
             ctypes.byref(size))
        return size.value

    def topk_ragged_workspace_size(self, num_rows: int, num_keys: int, *, num_heads: int = 64, head_dim: int = 128,
                                   topk: int = 2048, sorted: bool = False, absolute_indices: bool = False) -> int:
        """dsa_topk_ragged_workspace_size(): bytes of workspace topk_ragged needs (0 on the CPU backend)."""
        params = new_struct(TopkParams, num_heads=num_heads, head_dim=head_dim, page_size=64, topk=topk, next_n=1,
                            flags=_flags(sorted, absolute_indices=absolute_indices))
        inputs = new_struct(RaggedInputs, num_rows=num_rows, num_keys=num_keys)
        size = ctypes.c_size_t()
        call("dsa_topk_ragged_workspace_size", self.handle, ctypes.byref(params), ctypes.byref(inputs),
             ctypes.byref(size))
        return size.value

    # -- engine path --
    def topk_paged(self, q: ArrayLike, k_cache: ArrayLike, weights: ArrayLike, seq_lens: ArrayLike,
                   block_table: ArrayLike, *, page_size: int = 64, topk: int = 2048, next_n: Optional[int] = None,
                   sorted: bool = False, logical_indices: bool = False, return_scores: bool = False,
                   indices: Optional[ArrayLike] = None, scores: Optional[ArrayLike] = None,
                   workspace: Optional[ArrayLike] = None, stream: Any = None) -> TopkResult:
        """dsa_topk_paged(): paged decode top-k (SPEC section 1) on the caller's arrays, without copies.

        Args:
            q: [B, next_n, H, D] or [B * next_n, H, D] fp8 e4m3 (uint8 or float8_e4m3fn), contiguous.
            k_cache: [num_pages, ...] uint8, each page P keys of D bytes then P fp32 scales; the bytes of a
                page contiguous (e.g. [num_pages, P * (D + 4)] or [num_pages, P, D + 4]); pages may be
                further apart than their size (the page stride is taken from the array's strides).
            weights: [B * next_n, H] float32 (already scaled), contiguous.
            seq_lens: [B] int32, tokens of each sequence including its next_n new ones.
            block_table: [B, max_pages] int32; rows may be further apart (a slice of a wider table).
            page_size: P (32 or 64). topk: k (1..2048).
            next_n: query tokens per sequence (1..4); taken from q when q is 4-D, else 1 by default.
            sorted: order each row by descending score (ties by ascending position).
            logical_indices: report positions p instead of global slots block_table[b][p // P] * P + p % P.
            return_scores: also return the [rows, k] float32 scores (-inf for padding).
            indices, scores: output arrays to fill ([rows, k] int32 / float32); allocated when None.
            workspace: GPU only: device memory of at least topk_paged_workspace_size() bytes; allocated
                from the inputs' framework when None (pass one for CUDA graphs and hot loops).
            stream: GPU only: a cudaStream_t as int, a torch.cuda.Stream or a cupy Stream; default: the
                current stream of q's framework on q's device. The call is asynchronous on it.
        Returns:
            indices, or (indices, scores) when return_scores is true or scores is given. Rows with fewer
            than k visible positions end with -1.
        Raises:
            TypeError / ValueError: an argument has the wrong type, dtype, shape, strides or device.
            DsaError subclasses: the library rejected the call (status and message attached).
        """
        call_ = _Call(self, q, "q", stream)
        inputs, rows, heads, dim, next_n = _paged_rows(call_, q, weights, seq_lens, block_table, next_n)
        cache_view = call_.array(k_cache, "k_cache")
        _check_dtype(cache_view, ["uint8"])
        if len(cache_view.shape) < 2 or not cache_view.is_c_contiguous(from_dim=1):
            raise ValueError(f"k_cache: must be [num_pages, ...] with each page's bytes contiguous, got shape "
                             f"{cache_view.shape} and strides {cache_view.strides}")
        page_bytes = 1
        for extent in cache_view.shape[1:]:
            page_bytes *= extent
        needed = page_size * (dim + 4)
        if page_bytes < needed:
            raise ValueError(f"k_cache: a page holds {page_bytes} bytes, but page_size {page_size} with head_dim "
                             f"{dim} needs {page_size} * ({dim} + 4) = {needed}")
        _check_alignment(cache_view, 16)
        inputs.num_pages = cache_view.shape[0]
        inputs.page_stride_bytes = cache_view.strides[0] if cache_view.shape[0] > 1 else page_bytes
        inputs.k_cache = cache_view.ptr

        params = new_struct(TopkParams, num_heads=heads, head_dim=dim, page_size=page_size, topk=topk,
                            next_n=next_n, flags=_flags(sorted, logical_indices))
        required = _Required()
        outputs, result = _outputs(call_, rows, topk, indices, scores, return_scores,
                                   lambda: required.query(self, "dsa_topk_paged", params, inputs))
        self._launch("dsa_topk_paged", call_, params, inputs, outputs, workspace, required.bytes)
        return result

    def topk_ragged(self, q: ArrayLike, k: ArrayLike, k_scale: ArrayLike, weights: ArrayLike, row_start: ArrayLike,
                    row_end: ArrayLike, *, topk: int = 2048, sorted: bool = False, absolute_indices: bool = False,
                    return_scores: bool = False, indices: Optional[ArrayLike] = None,
                    scores: Optional[ArrayLike] = None, workspace: Optional[ArrayLike] = None,
                    stream: Any = None) -> TopkResult:
        """dsa_topk_ragged(): prefill top-k over a contiguous K (SPEC section 2).

        Args:
            q: [S, H, D] fp8 e4m3 (uint8 or float8_e4m3fn), contiguous.
            k: [N, D] fp8 e4m3, contiguous; k_scale: [N] float32.
            weights: [S, H] float32. row_start, row_end: [S] int32; row r sees keys [row_start[r], row_end[r]).
            absolute_indices: report key numbers instead of numbers relative to row_start[r].
            Other arguments as for topk_paged.
        Returns:
            indices [S, k] int32, or (indices, scores) when return_scores is true or scores is given.
        """
        call_ = _Call(self, q, "q", stream)
        q_view, k_view = call_.array(q, "q"), call_.array(k, "k")
        scale_view, weights_view = call_.array(k_scale, "k_scale"), call_.array(weights, "weights")
        start_view, end_view = call_.array(row_start, "row_start"), call_.array(row_end, "row_end")
        _check_dtype(q_view, FP8_DTYPES)
        if len(q_view.shape) != 3:
            raise ValueError(f"q: must be [S, H, D], got shape {q_view.shape}")
        rows, heads, dim = q_view.shape
        _check_dtype(k_view, FP8_DTYPES)
        if len(k_view.shape) != 2 or k_view.shape[1] != dim:
            raise ValueError(f"k: shape must be (N, D) with D = {dim}, got {k_view.shape}")
        num_keys = k_view.shape[0]
        _check_dtype(scale_view, ["float32"])
        _check_shape(scale_view, (num_keys,), "(N,)")
        _check_dtype(weights_view, ["float32"])
        _check_shape(weights_view, (rows, heads), "(S, H)")
        for view in (start_view, end_view):
            _check_dtype(view, ["int32"])
            _check_shape(view, (rows,), "(S,)")
        for view in (q_view, k_view, scale_view, weights_view, start_view, end_view):
            _check_contiguous(view)
        _check_alignment(q_view, 16)
        _check_alignment(k_view, 16)

        params = new_struct(TopkParams, num_heads=heads, head_dim=dim, page_size=64, topk=topk, next_n=1,
                            flags=_flags(sorted, absolute_indices=absolute_indices))
        inputs = new_struct(RaggedInputs, num_rows=rows, num_keys=num_keys, q=q_view.ptr, k=k_view.ptr,
                            k_scale=scale_view.ptr, weights=weights_view.ptr, row_start=start_view.ptr,
                            row_end=end_view.ptr)
        required = _Required()
        outputs, result = _outputs(call_, rows, topk, indices, scores, return_scores,
                                   lambda: required.query(self, "dsa_topk_ragged", params, inputs))
        self._launch("dsa_topk_ragged", call_, params, inputs, outputs, workspace, required.bytes)
        return result

    def _launch(self, function: str, call_: _Call, params: TopkParams, inputs: Any, outputs: TopkOutputs,
                workspace: Optional[ArrayLike], required: int) -> None:
        """The engine-path call, with the workspace given or (GPU) a new one of the `required` bytes the
        library asked for. `workspace` may also be a callable(bytes) returning one (dsa_indexer.torch's cached
        workspaces); it is called on a GPU context when the call needs any."""
        if callable(workspace):
            workspace = workspace(required) if self._devices and required else None
        elif not self._devices or workspace is not None:  # a given workspace is checked by the library
            required = 0
        workspace_ptr, workspace_bytes = call_.workspace(workspace, required)
        call(function, self.handle, ctypes.byref(params), ctypes.byref(inputs), ctypes.byref(outputs),
             workspace_ptr or None, workspace_bytes, call_.stream or None)

    # -- owned-cache path --
    def create_cache(self, num_pages: int, *, page_size: int = 64, head_dim: int = 128,
                     mode: CacheMode = "replicated") -> "Cache":
        """dsa_cache_create(): a library-owned paged K cache on this context's backend; see Cache."""
        return Cache(self, num_pages, page_size=page_size, head_dim=head_dim, mode=mode)

    def topk(self, cache: "Cache", q: ArrayLike, weights: ArrayLike, seq_lens: ArrayLike, block_table: ArrayLike,
             **options: Any) -> TopkResult:
        """dsa_topk(): paged decode top-k over an owned cache; see Cache.topk."""
        if cache.context is not self:
            raise ValueError("cache: was created from another context")
        return cache.topk(q, weights, seq_lens, block_table, **options)


class Cache(_Handle):
    """A dsa_cache_t: a paged K cache owned by the library (every key and scale zero until written).

    Close it (or leave its `with` block) before closing its context.

    Args:
        context: the context whose backend holds the cache.
        num_pages: physical pages (>= 1). page_size: P (32 or 64). head_dim: D (128).
        mode: how a context of several GPUs holds the pages: "replicated" (DSA_CACHE_REPLICATED, the
            default: every GPU holds every page and topk splits the rows; for batches of many rows) or
            "sharded" (DSA_CACHE_SHARDED: page p lives on GPU p % G only, so the cache may be G times one
            GPU's memory; for few, long sequences). Both give bit-identical results; the CPU backend
            treats both as one whole cache.
    """

    _kind = "cache"
    _destroy = "dsa_cache_destroy"

    def __init__(self, context: Context, num_pages: int, *, page_size: int = 64, head_dim: int = 128,
                 mode: CacheMode = "replicated") -> None:
        mode_value = _cache_mode(mode)
        self.context = context  # held so that the context outlives the cache
        self.num_pages, self.page_size, self.head_dim = int(num_pages), int(page_size), int(head_dim)
        self.mode = "sharded" if mode_value == DSA_CACHE_SHARDED else "replicated"
        config = new_struct(CacheConfig, num_pages=self.num_pages, page_size=self.page_size, head_dim=self.head_dim,
                            mode=mode_value)
        handle = dsa_cache_t()
        call("dsa_cache_create", context.handle, ctypes.byref(config), ctypes.byref(handle))
        self._handle = handle

    def __repr__(self) -> str:
        return (f"<dsa_indexer.Cache num_pages={self.num_pages} page_size={self.page_size} "
                f"head_dim={self.head_dim} mode={self.mode}{' closed' if self._handle is None else ''}>")

    def _tokens(self, slots: ArrayLike, keys: ArrayLike, scales: ArrayLike,
                writing: bool) -> Tuple[ArrayView, ArrayView, ArrayView, int]:
        """Checks slots / keys / scales of one write or read and returns their views and memory_device."""
        device = _arrays.device_of(slots)
        _check_context_device(self.context, device, "slots", "slots, keys and scales")
        views = []
        for obj, name in ((slots, "slots"), (keys, "keys"), (scales, "scales")):
            view = _arrays.as_array(obj, name)
            if view.device != device:
                raise ValueError(f"{name}: is in {view.where()}, but slots are in {_memory_name(device)}")
            _check_contiguous(view)
            if view.itemsize > 1:
                _check_alignment(view, view.itemsize)
            if not writing and name != "slots":
                _check_writable(view)
            views.append(view)
        slot_view, key_view, scale_view = views
        _check_dtype(slot_view, ["int64"])
        if len(slot_view.shape) != 1:
            raise ValueError(f"slots: must be 1-D [n], got shape {slot_view.shape}")
        n = slot_view.shape[0]
        _check_dtype(key_view, FP8_DTYPES)
        _check_shape(key_view, (n, self.head_dim), "(n, head_dim)")
        _check_dtype(scale_view, ["float32"])
        _check_shape(scale_view, (n,), "(n,)")
        if device is not None:
            _arrays.wait_for_current_stream(slots, device)  # the library reads and writes on its own stream
        return slot_view, key_view, scale_view, DSA_MEMORY_HOST if device is None else device

    def write(self, slots: ArrayLike, keys: ArrayLike, scales: ArrayLike) -> None:
        """dsa_cache_write(): token i goes to slot slots[i] (= page * P + offset) with key keys[i] and scale
        scales[i]. slots [n] int64, keys [n, D] fp8 (uint8 or float8_e4m3fn), scales [n] float32, all in host
        memory or all on one of the context's GPUs. Every slot is checked before anything is written."""
        slot_view, key_view, scale_view, memory = self._tokens(slots, keys, scales, writing=True)
        call("dsa_cache_write", self.handle, slot_view.ptr or None, key_view.ptr or None, scale_view.ptr or None,
             slot_view.shape[0], memory)

    def read(self, slots: ArrayLike, keys: Optional[ArrayLike] = None,
             scales: Optional[ArrayLike] = None) -> Tuple[Any, Any]:
        """dsa_cache_read(): the keys [n, D] uint8 and scales [n] float32 of the given slots, into the arrays
        given or new ones of slots' framework and memory. Returns (keys, scales)."""
        device = _arrays.device_of(slots)
        n = _arrays.as_array(slots, "slots").shape[0]
        if keys is None:
            keys = _arrays.empty(slots, device, (n, self.head_dim), "uint8")
        if scales is None:
            scales = _arrays.empty(slots, device, (n,), "float32")
        slot_view, key_view, scale_view, memory = self._tokens(slots, keys, scales, writing=False)
        call("dsa_cache_read", self.handle, slot_view.ptr or None, key_view.ptr or None, scale_view.ptr or None,
             slot_view.shape[0], memory)
        return keys, scales

    def topk(self, q: ArrayLike, weights: ArrayLike, seq_lens: ArrayLike, block_table: ArrayLike, *,
             topk: int = 2048, next_n: Optional[int] = None, sorted: bool = False, logical_indices: bool = False,
             return_scores: bool = False, indices: Optional[ArrayLike] = None,
             scores: Optional[ArrayLike] = None) -> TopkResult:
        """dsa_topk(): paged decode top-k over this cache; synchronous (results are in place on return).

        The inputs (q, weights, seq_lens, block_table) are host memory: the library moves what it needs to
        the devices. The outputs are where the indices / scores arrays given are (memory_device): host
        memory, or one GPU of the context in this process (PyTorch / CuPy CUDA tensors, DLPack or
        __cuda_array_interface__ arrays); both in the same memory. Outputs not given are made like the
        one given (same framework and device), or as numpy arrays when none is. Other arguments and the
        result as for Context.topk_paged, with page_size and head_dim those of the cache.
        """
        call_ = _Call(self.context, q, "q", None, host_only=True)
        inputs, rows, heads, dim, next_n = _paged_rows(call_, q, weights, seq_lens, block_table, next_n)
        if dim != self.head_dim:
            raise ValueError(f"q: head dim {dim} differs from the cache's head_dim {self.head_dim}")
        device, template = self._output_memory(indices, scores)
        if template is not None:
            call_.outputs_in(device, template, "indices" if template is indices else "scores")
        params = new_struct(TopkParams, num_heads=heads, head_dim=dim, page_size=self.page_size, topk=topk,
                            next_n=next_n, flags=_flags(sorted, logical_indices))
        # The paged size query checks the parameters and sizes as dsa_topk does, before outputs are allocated.
        outputs, result = _outputs(call_, rows, topk, indices, scores, return_scores,
                                   lambda: _Required().query(self.context, "dsa_topk_paged", params, inputs),
                                   DSA_MEMORY_HOST if device is None else device)
        if device is not None:
            _arrays.wait_for_current_stream(template, device)  # the library writes them on its own stream
        call("dsa_topk", self.context.handle, self.handle, ctypes.byref(params), ctypes.byref(inputs),
             ctypes.byref(outputs))
        return result

    def _output_memory(self, indices: Optional[ArrayLike],
                       scores: Optional[ArrayLike]) -> Tuple[Optional[int], Optional[ArrayLike]]:
        """(device, the first output given) of the owned-cache call's outputs: (None, ...) for host memory,
        which is also where outputs go when none is given. A device must be one of the context's here."""
        given = [(obj, name) for obj, name in ((indices, "indices"), (scores, "scores")) if obj is not None]
        if not given:
            return None, None
        first, first_name = given[0]
        device = _arrays.device_of(first)
        for obj, name in given[1:]:
            other = _arrays.device_of(obj)
            if other != device:
                raise ValueError(f"{name}: is in {_memory_name(other)}, but {first_name} is in "
                                 f"{_memory_name(device)}: both outputs must be in one memory")
        _check_context_device(self.context, device, first_name, "the owned-cache call's outputs")
        return device, first


# ---- the C entry points as functions, for code that mirrors the C API ------------------------------------

def topk_paged(context: Context, *args: Any, **kwargs: Any) -> TopkResult:
    """dsa_topk_paged(context, ...): see Context.topk_paged."""
    return context.topk_paged(*args, **kwargs)


def topk_ragged(context: Context, *args: Any, **kwargs: Any) -> TopkResult:
    """dsa_topk_ragged(context, ...): see Context.topk_ragged."""
    return context.topk_ragged(*args, **kwargs)


def topk_paged_workspace_size(context: Context, *args: Any, **kwargs: Any) -> int:
    """dsa_topk_paged_workspace_size(context, ...): see Context.topk_paged_workspace_size."""
    return context.topk_paged_workspace_size(*args, **kwargs)


def topk_ragged_workspace_size(context: Context, *args: Any, **kwargs: Any) -> int:
    """dsa_topk_ragged_workspace_size(context, ...): see Context.topk_ragged_workspace_size."""
    return context.topk_ragged_workspace_size(*args, **kwargs)


def topk(context: Context, cache: Cache, *args: Any, **kwargs: Any) -> TopkResult:
    """dsa_topk(context, cache, ...): see Cache.topk."""
    return context.topk(cache, *args, **kwargs)
