"""PyTorch custom ops of the indexer top-k, for code run under torch.compile and CUDA graphs (issue 14).

``import dsa_indexer.torch`` (needs PyTorch >= 2.4; the package itself never imports torch) registers, with
``torch.library``, four operators in the namespace ``dsa_indexer``::

    topk_paged(Tensor q, Tensor k_cache, Tensor weights, Tensor seq_lens, Tensor block_table, *,
               int page_size=64, int topk=2048, int? next_n=None, bool sorted=False,
               bool logical_indices=False) -> Tensor                                   # indices [rows, topk] int32
    topk_paged_out(Tensor q, Tensor k_cache, Tensor weights, Tensor seq_lens, Tensor block_table,
                   Tensor(a!) indices, Tensor(b!)? scores, *, int page_size=64, int? next_n=None,
                   bool sorted=False, bool logical_indices=False) -> ()               # k = indices.shape[1]
    topk_ragged(Tensor q, Tensor k, Tensor k_scale, Tensor weights, Tensor row_start, Tensor row_end, *,
                int topk=2048, bool sorted=False, bool absolute_indices=False) -> Tensor
    topk_ragged_out(Tensor q, Tensor k, Tensor k_scale, Tensor weights, Tensor row_start, Tensor row_end,
                    Tensor(a!) indices, Tensor(b!)? scores, *, bool sorted=False,
                    bool absolute_indices=False) -> ()

called as ``torch.ops.dsa_indexer.topk_paged(...)`` or through the functions of the same names here. The
arguments mean what they mean for ``Context.topk_paged`` / ``topk_ragged`` (SPEC sections 1 and 2).

The _out operators' ``scores`` has no default: pass a float32 tensor or None (positionally or as
``scores=``). A mutated argument with a default breaks the ops on some PyTorch releases (2.11 among them):
the dispatcher drops a trailing argument equal to its default before calling the Python kernels, and the
ADInplaceOrView kernel of ``torch.library.custom_op`` indexes the mutated arguments by position
(IndexError). The Python functions ``topk_paged_out`` / ``topk_ragged_out`` here keep ``scores=None`` as a
default and always pass it on.

- CUDA tensors: the engine-path call (dsa_topk_paged / dsa_topk_ragged) on the tensors' device and its
  current stream, asynchronous, capturable in a CUDA graph. One library context per device and a workspace
  per (device, stream), both created on first use and kept (grown when a call needs more): nothing is
  allocated per call except the functional ops' outputs. Bad block-table entries found by the GPU are
  reported by ``context(device).synchronize()``.
- CPU tensors: the CPU backend, synchronously (handy for tests and references).
- Meta / fake tensors (torch.compile tracing, torch.export): output shapes and dtypes only.
- The _out variants write into the caller's int32 indices (and float32 scores) of shape [rows, k]: with
  buffers allocated once, a graph replays without allocating.

Autograd is not supported (the indices are not differentiable); call under torch.no_grad() / inference_mode.
"""

from __future__ import annotations

import threading
from typing import Dict, List, Optional, Set, Tuple

import torch

from ._api import Context

if not (hasattr(torch, "library") and hasattr(torch.library, "custom_op") and hasattr(torch.library, "register_fake")):
    raise ImportError(f"dsa_indexer.torch needs PyTorch >= 2.4 (torch.library.custom_op); this is {torch.__version__}")

__all__ = ["context", "topk_paged", "topk_paged_out", "topk_ragged", "topk_ragged_out", "workspace_bytes"]

_lock = threading.Lock()
_contexts: Dict[Optional[int], Context] = {}
_workspaces: Dict[Tuple[int, int], torch.Tensor] = {}
_captured: Set[Tuple[int, int]] = set()   # workspaces a CUDA graph capture has used
_retired: List[torch.Tensor] = []         # replaced workspaces that captured graphs still use


def context(device: "torch.device | int | str | None" = None) -> Context:
    """The library context the ops use for a device: a CUDA device (index, "cuda:N" or torch.device) or
    the CPU backend ("cpu" / None). Created on first use and kept for the life of the process; call its
    synchronize() to check for device-side input errors (DeviceInputError)."""
    if device is None:
        index: Optional[int] = None
    else:
        device = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
        if device.type == "cpu":
            index = None
        elif device.type == "cuda":
            index = device.index if device.index is not None else torch.cuda.current_device()
        else:
            raise ValueError(f"dsa_indexer ops run on CUDA and CPU tensors, not on {device.type}")
    with _lock:
        ctx = _contexts.get(index)
        if ctx is None:
            ctx = Context() if index is None else Context([index])
            _contexts[index] = ctx
        return ctx


def workspace_bytes(device: "torch.device | int | str", stream: Optional[torch.cuda.Stream] = None) -> int:
    """Bytes of the cached workspace of (device, stream) (default: the current stream); 0 before first use."""
    device = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = stream if stream is not None else torch.cuda.current_stream(index)
    cached = _workspaces.get((index, int(stream.cuda_stream)))
    return 0 if cached is None else cached.numel()


def _workspace_for(device: torch.device, stream: int):
    """The callable Context._launch calls with the bytes a GPU call needs: the cached workspace of (device,
    stream), replaced by a larger one when needed. Keyed by stream: a workspace is only ever used on the
    stream it was allocated on, so the caching allocator reuses a replaced one only after the work queued
    there, and calls on different streams never share scratch memory."""
    def get(required: int) -> torch.Tensor:
        key = (device.index, stream)
        with _lock:
            cached = _workspaces.get(key)
            if cached is None or cached.numel() < required:
                if cached is not None and key in _captured:
                    # A graph captured with it still reads and writes it at replay: it must stay allocated
                    # (freed, a later capture into a shared pool could hand its memory to another tensor).
                    _retired.append(cached)
                cached = torch.empty(required, dtype=torch.uint8, device=device)
                _workspaces[key] = cached
                _captured.discard(key)
            if torch.cuda.is_current_stream_capturing():
                _captured.add(key)
            return cached
    return get


def _launch_args(device: torch.device) -> dict:
    if device.type != "cuda":
        return {}
    return dict(workspace=_workspace_for(device, int(torch.cuda.current_stream(device).cuda_stream)),
                stream=int(torch.cuda.current_stream(device).cuda_stream))


def _paged_rows(q: torch.Tensor, next_n: Optional[int]) -> int:
    if q.dim() == 4:
        return q.shape[0] * q.shape[1]
    if q.dim() == 3:
        return q.shape[0]
    raise ValueError(f"q: must be [B, next_n, H, D] or [B * next_n, H, D], got shape {tuple(q.shape)}")


def _check_topk(topk: int) -> None:
    # The functional ops allocate [rows, topk] before the library sees k: refuse what it would refuse.
    if not 1 <= topk <= 2048:
        raise ValueError(f"topk: supported range is [1, 2048] (SPEC section 3), got {topk}")


# ---- paged decode ------------------------------------------------------------------------------------

_PAGED_INPUTS = "Tensor q, Tensor k_cache, Tensor weights, Tensor seq_lens, Tensor block_table"


@torch.library.custom_op(
    "dsa_indexer::topk_paged", mutates_args=(),
    schema=f"({_PAGED_INPUTS}, *, int page_size=64, int topk=2048, int? next_n=None, bool sorted=False, "
           "bool logical_indices=False) -> Tensor")
def topk_paged(q: torch.Tensor, k_cache: torch.Tensor, weights: torch.Tensor, seq_lens: torch.Tensor,
               block_table: torch.Tensor, *, page_size: int = 64, topk: int = 2048, next_n: Optional[int] = None,
               sorted: bool = False, logical_indices: bool = False) -> torch.Tensor:
    """Paged decode top-k: indices [rows, topk] int32 (rows = B * next_n), -1 padded."""
    _check_topk(topk)
    indices = torch.empty((_paged_rows(q, next_n), topk), dtype=torch.int32, device=q.device)
    context(q.device).topk_paged(q, k_cache, weights, seq_lens, block_table, page_size=page_size, topk=topk,
                                 next_n=next_n, sorted=sorted, logical_indices=logical_indices, indices=indices,
                                 **_launch_args(q.device))
    return indices


@topk_paged.register_fake
def _topk_paged_fake(q, k_cache, weights, seq_lens, block_table, *, page_size=64, topk=2048, next_n=None,
                     sorted=False, logical_indices=False):
    _check_topk(topk)
    return q.new_empty((_paged_rows(q, next_n), topk), dtype=torch.int32)


@torch.library.custom_op(
    "dsa_indexer::topk_paged_out", mutates_args=("indices", "scores"),
    schema=f"({_PAGED_INPUTS}, Tensor(a!) indices, Tensor(b!)? scores, *, int page_size=64, "
           "int? next_n=None, bool sorted=False, bool logical_indices=False) -> ()")
def _topk_paged_out(q: torch.Tensor, k_cache: torch.Tensor, weights: torch.Tensor, seq_lens: torch.Tensor,
                    block_table: torch.Tensor, indices: torch.Tensor, scores: Optional[torch.Tensor], *,
                    page_size: int = 64, next_n: Optional[int] = None, sorted: bool = False,
                    logical_indices: bool = False) -> None:
    topk = indices.shape[-1] if indices.dim() == 2 else 0
    context(q.device).topk_paged(q, k_cache, weights, seq_lens, block_table, page_size=page_size, topk=topk,
                                 next_n=next_n, sorted=sorted, logical_indices=logical_indices, indices=indices,
                                 scores=scores, **_launch_args(q.device))


@_topk_paged_out.register_fake
def _topk_paged_out_fake(q, k_cache, weights, seq_lens, block_table, indices, scores, *, page_size=64,
                         next_n=None, sorted=False, logical_indices=False):
    return None


def topk_paged_out(q: torch.Tensor, k_cache: torch.Tensor, weights: torch.Tensor, seq_lens: torch.Tensor,
                   block_table: torch.Tensor, indices: torch.Tensor, scores: Optional[torch.Tensor] = None, *,
                   page_size: int = 64, next_n: Optional[int] = None, sorted: bool = False,
                   logical_indices: bool = False) -> None:
    """Paged decode top-k into indices [rows, k] int32 (and scores [rows, k] float32); k = indices.shape[1].
    torch.ops.dsa_indexer.topk_paged_out with scores passed on (None when not given)."""
    torch.ops.dsa_indexer.topk_paged_out(q, k_cache, weights, seq_lens, block_table, indices, scores,
                                         page_size=page_size, next_n=next_n, sorted=sorted,
                                         logical_indices=logical_indices)


# ---- ragged prefill ----------------------------------------------------------------------------------

_RAGGED_INPUTS = "Tensor q, Tensor k, Tensor k_scale, Tensor weights, Tensor row_start, Tensor row_end"


@torch.library.custom_op(
    "dsa_indexer::topk_ragged", mutates_args=(),
    schema=f"({_RAGGED_INPUTS}, *, int topk=2048, bool sorted=False, bool absolute_indices=False) -> Tensor")
def topk_ragged(q: torch.Tensor, k: torch.Tensor, k_scale: torch.Tensor, weights: torch.Tensor,
                row_start: torch.Tensor, row_end: torch.Tensor, *, topk: int = 2048, sorted: bool = False,
                absolute_indices: bool = False) -> torch.Tensor:
    """Ragged prefill top-k: indices [S, topk] int32, -1 padded."""
    _check_topk(topk)
    indices = torch.empty((q.shape[0], topk), dtype=torch.int32, device=q.device)
    context(q.device).topk_ragged(q, k, k_scale, weights, row_start, row_end, topk=topk, sorted=sorted,
                                  absolute_indices=absolute_indices, indices=indices, **_launch_args(q.device))
    return indices


@topk_ragged.register_fake
def _topk_ragged_fake(q, k, k_scale, weights, row_start, row_end, *, topk=2048, sorted=False,
                      absolute_indices=False):
    _check_topk(topk)
    if q.dim() != 3:
        raise ValueError(f"q: must be [S, H, D], got shape {tuple(q.shape)}")
    return q.new_empty((q.shape[0], topk), dtype=torch.int32)


@torch.library.custom_op(
    "dsa_indexer::topk_ragged_out", mutates_args=("indices", "scores"),
    schema=f"({_RAGGED_INPUTS}, Tensor(a!) indices, Tensor(b!)? scores, *, bool sorted=False, "
           "bool absolute_indices=False) -> ()")
def _topk_ragged_out(q: torch.Tensor, k: torch.Tensor, k_scale: torch.Tensor, weights: torch.Tensor,
                     row_start: torch.Tensor, row_end: torch.Tensor, indices: torch.Tensor,
                     scores: Optional[torch.Tensor], *, sorted: bool = False, absolute_indices: bool = False) -> None:
    topk = indices.shape[-1] if indices.dim() == 2 else 0
    context(q.device).topk_ragged(q, k, k_scale, weights, row_start, row_end, topk=topk, sorted=sorted,
                                  absolute_indices=absolute_indices, indices=indices, scores=scores,
                                  **_launch_args(q.device))


@_topk_ragged_out.register_fake
def _topk_ragged_out_fake(q, k, k_scale, weights, row_start, row_end, indices, scores, *, sorted=False,
                          absolute_indices=False):
    return None


def topk_ragged_out(q: torch.Tensor, k: torch.Tensor, k_scale: torch.Tensor, weights: torch.Tensor,
                    row_start: torch.Tensor, row_end: torch.Tensor, indices: torch.Tensor,
                    scores: Optional[torch.Tensor] = None, *, sorted: bool = False,
                    absolute_indices: bool = False) -> None:
    """Ragged prefill top-k into indices [S, k] int32 (and scores [S, k] float32); k = indices.shape[1].
    torch.ops.dsa_indexer.topk_ragged_out with scores passed on (None when not given)."""
    torch.ops.dsa_indexer.topk_ragged_out(q, k, k_scale, weights, row_start, row_end, indices, scores,
                                          sorted=sorted, absolute_indices=absolute_indices)
