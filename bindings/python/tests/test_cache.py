"""The owned-cache path: Cache create / write / read / topk on the CPU backend."""

import numpy as np
import pytest

import dsa_indexer as dsa
from paged_case import check_case, spec6_case


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
