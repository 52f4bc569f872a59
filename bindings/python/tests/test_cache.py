"""The owned-cache path: Cache create / write / read / topk on the CPU backend."""

import ctypes

import numpy as np
import pytest

import dsa_indexer as dsa
from dsa_indexer import _api, _library
from fakes import FakeCudaArray, FakeDlpackArray
from paged_case import check_case, ramp_case, spec6_case


def written_cache(context, case, **options):
    """A cache of the case's pages holding every visible token of its sequences."""
    cache = context.create_cache(case.k_cache.shape[0], page_size=case.page_size, **options)
    slots = np.concatenate([case.slots(b) for b in range(len(case.seq_lens))])
    P = case.page_size
    cache.write(slots, case.page_keys()[slots // P, slots % P], case.page_scales()[slots // P, slots % P])
    return cache


def spy_on(monkeypatch, function, change=None):
    """Records the ctypes structs passed to `function` (change(args) may edit them first), then calls it."""
    seen = []
    real = _api.call

    def spy(name, *args):
        if name == function:
            structs = [getattr(arg, "_obj", arg) for arg in args]  # byref(x)._obj is x
            if change:
                change(structs)
            seen.append(structs)
        return real(name, *args)
    monkeypatch.setattr(_api, "call", spy)
    return seen


def test_fresh_cache_is_zero_and_writes_read_back(ctx):
    with ctx.create_cache(4, page_size=32) as cache:
        assert (cache.num_pages, cache.page_size, cache.head_dim) == (4, 32, 128)
        slots = np.array([0, 5, 127], np.int64)
        keys, scales = cache.read(slots)
        assert keys.dtype == np.uint8 and keys.shape == (3, 128) and not keys.any() and not scales.any()
        new_keys = np.arange(3 * 128, dtype=np.uint32).astype(np.uint8).reshape(3, 128)
        cache.write(slots, new_keys, np.array([1.5, 2.5, 3.5], np.float32))
        keys, scales = cache.read(slots)
        assert np.array_equal(keys, new_keys) and scales.tolist() == [1.5, 2.5, 3.5]


def test_bad_slot_fails_the_whole_write(ctx):
    with dsa.Cache(ctx, 2, page_size=32) as cache:
        with pytest.raises(dsa.InvalidArgumentError) as info:
            cache.write(np.array([1, 64], np.int64), np.ones((2, 128), np.uint8), np.ones(2, np.float32))
        assert "64" in info.value.message
        keys, scales = cache.read(np.array([1], np.int64))
        assert not keys.any() and scales[0] == 0  # slot 1 was not written either


def test_topk_over_the_cache_equals_topk_paged(ctx):
    case = spec6_case([0, 1, 100, 700], seed=21)
    expected, expected_scores = ctx.topk_paged(*case.args(), **case.kwargs(), topk=50, sorted=True,
                                               return_scores=True)
    num_pages = case.k_cache.shape[0]
    with ctx.create_cache(num_pages, page_size=case.page_size) as cache:
        slots = np.concatenate([case.slots(b) for b in range(len(case.seq_lens))])
        P = case.page_size
        cache.write(slots, case.page_keys()[slots // P, slots % P], case.page_scales()[slots // P, slots % P])
        got, got_scores = cache.topk(case.q, case.weights, case.seq_lens, case.block_table, topk=50, sorted=True,
                                     return_scores=True)
        assert np.array_equal(got, expected) and np.array_equal(got_scores, expected_scores)
        logical = dsa.topk(ctx, cache, case.q, case.weights, case.seq_lens, case.block_table, topk=50,
                           logical_indices=True)
        check_case(case, logical, 50, True)


def test_cache_of_another_context_is_refused(ctx):
    with dsa.Context() as other, other.create_cache(1, page_size=32) as cache:
        with pytest.raises(ValueError, match="another context"):
            ctx.topk(cache, np.zeros((1, 32, 128), np.uint8), np.zeros((1, 32), np.float32),
                     np.zeros(1, np.int32), np.zeros((1, 1), np.int32), topk=1)


# ---- 0.2: cache mode ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, name", [("replicated", "replicated"), ("sharded", "sharded"), ("Sharded", "sharded"),
                                        (dsa.DSA_CACHE_REPLICATED, "replicated"), (dsa.DSA_CACHE_SHARDED, "sharded")])
def test_mode_reaches_the_library(ctx, monkeypatch, mode, name):
    seen = spy_on(monkeypatch, "dsa_cache_create")
    with ctx.create_cache(3, page_size=32, mode=mode) as cache:
        assert cache.mode == name and f"mode={name}" in repr(cache)
    (config,) = [structs[1] for structs in seen]
    assert config.struct_size == ctypes.sizeof(_library.CacheConfig)
    assert config.mode == (dsa.DSA_CACHE_SHARDED if name == "sharded" else dsa.DSA_CACHE_REPLICATED)
    assert (config.num_pages, config.page_size, config.head_dim) == (3, 32, 128)


def test_mode_is_ignored_by_the_cpu_backend(ctx):
    """Both modes are one whole cache on the CPU: bit-identical indices and scores, equal to topk_paged."""
    case = spec6_case([0, 1, 100, 700, 1500], seed=23)
    options = dict(topk=64, sorted=True, return_scores=True)
    expected, expected_scores = ctx.topk_paged(*case.args(), **case.kwargs(), **options)
    results = {}
    for mode in ("replicated", "sharded"):
        with written_cache(ctx, case, mode=mode) as cache:
            results[mode] = cache.topk(case.q, case.weights, case.seq_lens, case.block_table, **options)
            slots, P = case.slots(3), case.page_size
            keys, scales = cache.read(slots)
            assert np.array_equal(keys, case.page_keys()[slots // P, slots % P])
            assert np.array_equal(scales, case.page_scales()[slots // P, slots % P])
    for indices, scores in results.values():
        assert np.array_equal(indices, expected) and np.array_equal(scores, expected_scores, equal_nan=True)
    assert all(np.array_equal(a, b, equal_nan=True) for a, b in zip(results["replicated"], results["sharded"]))


@pytest.mark.parametrize("mode, error", [("mirrored", ValueError), ("", ValueError), (2, ValueError),
                                         (-1, ValueError), (True, TypeError), (None, TypeError), (1.0, TypeError)])
def test_bad_mode_is_refused_before_the_library(ctx, no_c_calls, mode, error):
    with pytest.raises(error, match="mode: must be"):
        ctx.create_cache(4, page_size=32, mode=mode)


def test_the_library_refuses_an_unknown_mode(ctx, monkeypatch):
    def unknown_mode(structs):
        structs[1].mode = 7
    spy_on(monkeypatch, "dsa_cache_create", unknown_mode)
    with pytest.raises(dsa.InvalidArgumentError, match="mode"):
        ctx.create_cache(4, page_size=32)


# ---- 0.2: where dsa_topk writes its outputs (memory_device) --------------------------------------------------

def cache_topk_args(case):
    return case.q, case.weights, case.seq_lens, case.block_table


def test_host_outputs_are_memory_host(ctx, monkeypatch):
    case = ramp_case([40, 5])
    with written_cache(ctx, case) as cache:
        seen = spy_on(monkeypatch, "dsa_topk")
        indices = np.empty((2, 8), np.int32)
        got, scores = cache.topk(*cache_topk_args(case), topk=8, sorted=True, indices=indices, return_scores=True)
        assert got is indices and isinstance(scores, np.ndarray) and scores.dtype == np.float32
        assert cache.topk(*cache_topk_args(case), topk=8, sorted=True).tolist() == indices.tolist()
    for structs in seen:
        outputs = structs[4]
        assert outputs.struct_size == ctypes.sizeof(_library.TopkOutputs)
        assert outputs.memory_device == dsa.DSA_MEMORY_HOST


@pytest.mark.parametrize("outputs", [
    dict(indices=FakeCudaArray((2, 8), "<i4")),
    dict(indices=FakeCudaArray((2, 8), "<i4", device=1), scores=FakeCudaArray((2, 8), "<f4", device=1)),
    dict(scores=FakeCudaArray((2, 8), "<f4")),
    dict(indices=FakeDlpackArray()),
], ids=["indices", "both", "scores-only", "dlpack"])
def test_device_outputs_on_a_cpu_context_are_refused_before_the_library(ctx, monkeypatch, outputs):
    case = ramp_case([40, 5])
    with written_cache(ctx, case) as cache:
        with monkeypatch.context() as patch:
            patch.setattr(_api, "call", lambda name, *args: pytest.fail(f"{name} was called"))
            with pytest.raises(ValueError, match=r"(indices|scores): is in CUDA device \d, which is not a device of "
                                                 r"the context: the context is the CPU backend, so the owned-cache "
                                                 r"call's outputs must be in host memory"):
                cache.topk(*cache_topk_args(case), topk=8, **outputs)


def test_outputs_in_two_memories_are_refused(ctx, monkeypatch):
    case = ramp_case([40, 5])
    with written_cache(ctx, case) as cache:
        with monkeypatch.context() as patch:
            patch.setattr(_api, "call", lambda name, *args: pytest.fail(f"{name} was called"))
            with pytest.raises(ValueError, match="scores: is in CUDA device 0, but indices is in host memory"):
                cache.topk(*cache_topk_args(case), topk=8, indices=np.empty((2, 8), np.int32),
                           scores=FakeCudaArray((2, 8), "<f4"))
            with pytest.raises(ValueError, match="scores: is in host memory, but indices is in CUDA device 0"):
                cache.topk(*cache_topk_args(case), topk=8, indices=FakeCudaArray((2, 8), "<i4"),
                           scores=np.empty((2, 8), np.float32))


def test_the_library_refuses_a_device_output_on_cpu_and_writes_nothing(ctx, monkeypatch):
    """The header's rule, checked by the library too: memory_device must be host or a GPU of the context."""
    case = ramp_case([40, 5])
    with written_cache(ctx, case) as cache:
        def to_device_0(structs):
            structs[4].memory_device = 0
        spy_on(monkeypatch, "dsa_topk", to_device_0)
        indices = np.full((2, 8), 7, np.int32)
        with pytest.raises(dsa.InvalidArgumentError, match="memory_device"):
            cache.topk(*cache_topk_args(case), topk=8, indices=indices)
        assert (indices == 7).all()
