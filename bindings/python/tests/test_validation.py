"""Argument checks that happen in Python, before any call into the library (no_c_calls enforces that):
dtypes, shapes, strides, memory and devices, read-only outputs."""

import numpy as np
import pytest

import dsa_indexer as dsa
from fakes import FakeCudaArray
from paged_case import ramp_case

P = 32


def call_with(ctx, **changes):
    case = ramp_case([40, 5])
    args = dict(zip(["q", "k_cache", "weights", "seq_lens", "block_table"], case.args()))
    options = dict(page_size=P, topk=8)
    for name, value in changes.items():
        (args if name in args else options)[name] = value
    return ctx.topk_paged(args.pop("q"), args.pop("k_cache"), args.pop("weights"), args.pop("seq_lens"),
                          args.pop("block_table"), **options)


@pytest.mark.parametrize("name, bad, message", [
    ("q", np.zeros((2, 1, 32, 128), np.float32), "q: dtype must be uint8 or float8_e4m3fn, got float32"),
    ("k_cache", np.zeros((4, P * 132), np.int8), "k_cache: dtype must be uint8, got int8"),
    ("weights", np.zeros((2, 32), np.float64), "weights: dtype must be float32"),
    ("seq_lens", np.array([40, 5], np.int64), "seq_lens: dtype must be int32, got int64"),
    ("block_table", np.zeros((2, 2), np.int64), "block_table: dtype must be int32"),
    ("indices", np.zeros((2, 8), np.int64), "indices: dtype must be int32"),
    ("scores", np.zeros((2, 8), np.float16), "scores: dtype must be float32"),
    ("q", [[0] * 128] * 32, "q: expected a numpy array or a CUDA tensor"),
])
def test_wrong_types(ctx, no_c_calls, name, bad, message):
    with pytest.raises(TypeError, match=message.replace("(", r"\(")):
        call_with(ctx, **{name: bad})


@pytest.mark.parametrize("name, bad, message", [
    ("q", np.zeros((2, 1, 32, 256), np.uint8)[..., ::2], "q: must be C-contiguous"),
    ("q", np.zeros((3, 1, 32, 128), np.uint8), "seq_lens has 2 sequences"),
    ("q", np.zeros((2, 32, 128, 1, 1), np.uint8), r"q: must be \[B, next_n, H, D\]"),
    ("weights", np.zeros((2, 16), np.float32), "weights: shape must be"),
    ("weights", np.zeros((32, 2), np.float32).T, "weights: must be C-contiguous"),
    ("seq_lens", np.array([[40, 5]], np.int32), "seq_lens: must be 1-D"),
    ("block_table", np.zeros((3, 2), np.int32), "block_table: shape must be"),
    ("block_table", np.zeros((2, 4), np.int32)[:, ::2], "block_table: columns must be contiguous"),
    ("k_cache", np.zeros((4, 64 * 132), np.uint8)[:, ::2], "k_cache: must be"),
    ("page_size", 64, "k_cache: a page holds 4224 bytes"),
    ("indices", np.zeros((2, 9), np.int32), r"indices: shape must be \(rows, topk\)"),
    ("indices", np.zeros((8, 2), np.int32).T, "indices: must be C-contiguous"),
    ("next_n", 2, "next_n=2 disagrees with q"),
    ("stream", 5, "stream: must be None"),
])
def test_wrong_shapes_and_strides(ctx, no_c_calls, name, bad, message):
    with pytest.raises(ValueError, match=message):
        call_with(ctx, **{name: bad})


def misaligned(shape, dtype=np.uint8):
    """A C-contiguous array whose address is 1 byte past a 16-byte boundary."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.zeros(size + 32, np.uint8)
    start = (-raw.ctypes.data) % 16 + 1
    return raw[start : start + size].view(dtype).reshape(shape)


def test_misaligned_q_and_keys(ctx, no_c_calls):
    with pytest.raises(ValueError, match="q: must be 16-byte aligned"):
        call_with(ctx, q=misaligned((2, 1, 32, 128)))
    with pytest.raises(ValueError, match="k_cache: must be 16-byte aligned"):
        call_with(ctx, k_cache=misaligned((4, P * 132)))
    with pytest.raises(ValueError, match="weights: must be 4-byte aligned"):
        call_with(ctx, weights=misaligned((2, 32), np.float32))
    with pytest.raises(ValueError, match="k: must be 16-byte aligned"):
        ctx.topk_ragged(np.zeros((1, 32, 128), np.uint8), misaligned((4, 128)), np.ones(4, np.float32),
                        np.zeros((1, 32), np.float32), np.zeros(1, np.int32), np.ones(1, np.int32), topk=1)


def test_read_only_output(ctx, no_c_calls):
    indices = np.zeros((2, 8), np.int32)
    indices.flags.writeable = False
    with pytest.raises(ValueError, match="indices: is read-only"):
        call_with(ctx, indices=indices)


def test_cuda_arrays_are_refused_by_a_cpu_context(ctx, no_c_calls):
    with pytest.raises(ValueError, match="q: is in CUDA device 0, but must be in host memory"):
        call_with(ctx, q=FakeCudaArray((2, 1, 32, 128), "|u1"))
    with pytest.raises(ValueError, match="weights: is in CUDA device 1"):
        call_with(ctx, weights=FakeCudaArray((2, 32), "<f4", device=1))
    with pytest.raises(ValueError, match="indices: is in CUDA device 0"):
        call_with(ctx, indices=FakeCudaArray((2, 8), "<i4"))


def test_a_cuda_array_must_say_which_device(ctx, no_c_calls):
    with pytest.raises(TypeError, match="cannot tell which GPU"):
        call_with(ctx, q=FakeCudaArray((2, 1, 32, 128), "|u1", with_device=False))


def test_ragged_checks(ctx, no_c_calls):
    q = np.zeros((3, 32, 128), np.uint8)
    k, scale = np.zeros((10, 128), np.uint8), np.ones(10, np.float32)
    weights, start, end = np.zeros((3, 32), np.float32), np.zeros(3, np.int32), np.ones(3, np.int32)
    with pytest.raises(ValueError, match=r"k: shape must be \(N, D\) with D = 128"):
        ctx.topk_ragged(q, np.zeros((10, 64), np.uint8), scale, weights, start, end, topk=4)
    with pytest.raises(ValueError, match="k_scale: shape must be"):
        ctx.topk_ragged(q, k, np.ones(9, np.float32), weights, start, end, topk=4)
    with pytest.raises(ValueError, match="row_end: shape must be"):
        ctx.topk_ragged(q, k, scale, weights, start, np.ones(2, np.int32), topk=4)
    with pytest.raises(TypeError, match="row_start: dtype must be int32"):
        ctx.topk_ragged(q, k, scale, weights, start.astype(np.int64), end, topk=4)
    with pytest.raises(ValueError, match="q: must be"):
        ctx.topk_ragged(q.reshape(3, 1, 32, 128), k, scale, weights, start, end, topk=4)


def test_cache_write_checks(ctx):
    with ctx.create_cache(2, page_size=32) as cache:
        slots, keys, scales = np.arange(3, dtype=np.int64), np.zeros((3, 128), np.uint8), np.zeros(3, np.float32)
        with pytest.raises(TypeError, match="slots: dtype must be int64"):
            cache.write(slots.astype(np.int32), keys, scales)
        with pytest.raises(ValueError, match=r"keys: shape must be \(n, head_dim\)"):
            cache.write(slots, np.zeros((3, 64), np.uint8), scales)
        with pytest.raises(ValueError, match="keys: is in CUDA device 0, but slots are in host memory"):
            cache.write(slots, FakeCudaArray((3, 128), "|u1"), scales)
        with pytest.raises(ValueError, match="not a device of the context"):
            cache.write(FakeCudaArray((3,), "<i8"), keys, scales)
        read_only = np.zeros(3, np.float32)
        read_only.flags.writeable = False
        with pytest.raises(ValueError, match="scales: is read-only"):
            cache.read(slots, scales=read_only)


def test_owned_cache_calls_take_host_arrays_only(ctx):
    with ctx.create_cache(2, page_size=32) as cache:
        with pytest.raises(ValueError, match="q: is in CUDA device 0, but must be in host memory"):
            cache.topk(FakeCudaArray((1, 32, 128), "|u1"), np.zeros((1, 32), np.float32), np.ones(1, np.int32),
                       np.zeros((1, 1), np.int32), topk=1)


# ---- issue 14: k and every size checked before outputs are allocated; dtypes named as numpy names them ----

@pytest.fixture
def no_allocation(monkeypatch):
    """Makes any output allocation fail the test: a call that will be refused must not allocate first."""
    from dsa_indexer import _arrays

    def refuse(template, device, shape, dtype, stream=None):
        raise AssertionError(f"an output of shape {shape} was allocated for a call that should be refused")
    monkeypatch.setattr(_arrays, "empty", refuse)


def ragged_args(rows=3, keys=10):
    return (np.zeros((rows, 32, 128), np.uint8), np.zeros((keys, 128), np.uint8), np.ones(keys, np.float32),
            np.zeros((rows, 32), np.float32), np.zeros(rows, np.int32), np.ones(rows, np.int32))


@pytest.mark.parametrize("topk", [-1, 0, 2049, 2 ** 31 - 1])
def test_unsupported_topk_is_the_librarys_error_before_allocating(ctx, no_allocation, topk):
    for run in (lambda: call_with(ctx, topk=topk), lambda: ctx.topk_ragged(*ragged_args(), topk=topk)):
        with pytest.raises(dsa.UnsupportedError, match=rf"params->topk is {topk}: supported range is \[1, 2048\]"):
            run()


@pytest.mark.parametrize("topk", [10 ** 12, 2 ** 31, -(2 ** 31) - 1])
def test_topk_beyond_int32_is_a_value_error_naming_it(ctx, no_c_calls, no_allocation, topk):
    with pytest.raises(ValueError, match=rf"topk: {topk} is outside the range of the C API's TopkParams.topk"):
        call_with(ctx, topk=topk)
    with pytest.raises(ValueError, match=rf"topk: {topk} is outside the range"):
        ctx.topk_ragged(*ragged_args(), topk=topk)


def test_owned_cache_topk_checks_k_before_allocating(ctx, no_allocation):
    case = ramp_case([40, 5])
    with ctx.create_cache(case.k_cache.shape[0], page_size=P) as cache:
        with pytest.raises(dsa.UnsupportedError, match="params->topk is -1"):
            cache.topk(case.q, case.weights, case.seq_lens, case.block_table, topk=-1)
        with pytest.raises(ValueError, match="topk: 1000000000000 is outside the range"):
            cache.topk(case.q, case.weights, case.seq_lens, case.block_table, topk=10 ** 12)


def test_other_unsupported_sizes_are_refused_before_allocating(ctx, no_allocation):
    with pytest.raises(dsa.UnsupportedError, match="params->next_n is 5"):
        call_with(ctx, q=np.zeros((10, 32, 128), np.uint8), weights=np.zeros((10, 32), np.float32), next_n=5)
    with pytest.raises(dsa.UnsupportedError, match="params->num_heads is 16"):
        call_with(ctx, q=np.zeros((2, 1, 16, 128), np.uint8), weights=np.zeros((2, 16), np.float32))


def test_a_given_output_is_checked_before_the_library_is_asked(ctx, no_c_calls):
    with pytest.raises(ValueError, match=r"indices: shape must be \(rows, topk\) = \(2, 8\)"):
        call_with(ctx, indices=np.zeros((2, 7), np.int32))


@pytest.mark.parametrize("dtype, name", [(np.float64, "float64"), (np.int16, "int16"), (np.uint32, "uint32"),
                                         (np.bool_, "bool"), (np.complex64, "complex64")])
def test_dtypes_are_named_as_numpy_names_them(ctx, no_c_calls, dtype, name):
    with pytest.raises(TypeError, match=f"weights: dtype must be float32, got {name}$"):
        call_with(ctx, weights=np.zeros((2, 32), dtype))


def test_dlpack_dtypes_are_named_as_numpy_names_them():
    from dsa_indexer import _arrays
    assert _arrays._from_dlpack_dtype(2, 64, 1) == "float64"
    assert _arrays._from_dlpack_dtype(4, 16, 1) == "bfloat16"
    assert _arrays._from_dlpack_dtype(6, 8, 1) == "bool"
    assert _arrays._from_dlpack_dtype(1, 32, 1) == "uint32"
    assert _arrays._from_typestr("<M8[ns]") == "<M8[ns]"
