"""topk_ragged (prefill over a contiguous K) on the CPU backend."""

import numpy as np

import dsa_indexer as dsa
from dsa_indexer.fp8 import e4m3_to_float32, float32_to_e4m3
from paged_case import FP8_ONE, check_row

H, D = 32, 128


def ramp_keys(num_keys):
    """Key i is e_0 with scale i + 1; head 0 of every row reads dimension 0 with weight 1: score = i + 1."""
    k = np.zeros((num_keys, D), np.uint8)
    k[:, 0] = FP8_ONE
    return k, np.arange(1, num_keys + 1, dtype=np.float32)


def ramp_rows(rows):
    q = np.zeros((rows, H, D), np.uint8)
    q[:, 0, 0] = FP8_ONE
    weights = np.zeros((rows, H), np.float32)
    weights[:, 0] = 1.0
    return q, weights


def test_known_answer_relative_and_absolute(ctx):
    k, k_scale = ramp_keys(20)
    q, weights = ramp_rows(3)
    row_start = np.array([0, 10, 15], np.int32)
    row_end = np.array([4, 20, 15], np.int32)
    indices, scores = ctx.topk_ragged(q, k, k_scale, weights, row_start, row_end, topk=5, sorted=True,
                                      return_scores=True)
    assert indices.tolist() == [[3, 2, 1, 0, -1], [9, 8, 7, 6, 5], [-1] * 5]
    assert scores[1].tolist() == [20.0, 19.0, 18.0, 17.0, 16.0] and np.isneginf(scores[0, 4])
    absolute = ctx.topk_ragged(q, k, k_scale, weights, row_start, row_end, topk=5, sorted=True,
                               absolute_indices=True)
    assert absolute.tolist() == [[3, 2, 1, 0, -1], [19, 18, 17, 16, 15], [-1] * 5]
    assert np.array_equal(dsa.topk_ragged(ctx, q, k, k_scale, weights, row_start, row_end, topk=5, sorted=True),
                          indices)


def test_random_prefill_meets_the_spec(ctx):
    rng = np.random.default_rng(5)
    lengths = [1, 70, 300]  # one causal sequence after another
    num_keys, rows = sum(lengths), sum(lengths)
    raw = rng.standard_normal((num_keys, D))
    k_scale = (np.maximum(np.abs(raw).max(axis=1), 1e-4) / 448).astype(np.float32)
    k = float32_to_e4m3(raw / k_scale[:, None])
    q = float32_to_e4m3(np.clip(rng.standard_normal((rows, H, D)), -2, 2))
    weights = rng.standard_normal((rows, H)).astype(np.float32)
    row_start, row_end, first = [], [], 0
    for n in lengths:
        for t in range(n):
            row_start.append(first)
            row_end.append(first + t + 1)
        first += n
    row_start, row_end = np.array(row_start, np.int32), np.array(row_end, np.int32)
    topk = 32
    indices = ctx.topk_ragged(q, k, k_scale, weights, row_start, row_end, topk=topk)
    keys = e4m3_to_float32(k).astype(np.float64)
    for r in range(rows):
        window = slice(row_start[r], row_end[r])
        relu = np.maximum(keys[window] @ e4m3_to_float32(q[r]).astype(np.float64).T, 0.0)
        w = weights[r].astype(np.float64)
        s = k_scale[window].astype(np.float64)
        problem = check_row(s * (relu @ w), s * (relu @ np.abs(w)), indices[r].astype(np.int64), topk)
        assert problem is None, f"row {r}: {problem}"
