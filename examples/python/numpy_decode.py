#!/usr/bin/env python3
"""A decode step from Python with numpy arrays on the CPU backend, checked against a float64 reference.

The K cache is laid out as the library (and vLLM's DeepSeek-V3.2 indexer) keeps it: per page, P keys of
D fp8 bytes, then P fp32 scales. Keys are quantised per token with scale amax / 448, as engines do.

Run from the repository with the library built:  DSA_INDEXER_LIBRARY=build/libdsa_indexer.so \
    PYTHONPATH=bindings/python python3 examples/python/numpy_decode.py
"""

import sys

import numpy as np

import dsa_indexer as dsa
from dsa_indexer.fp8 import e4m3_to_float32, float32_to_e4m3

HEADS, DIM, PAGE, TOPK = 64, 128, 64, 256
SEQ_LENS = [1000, 37, 4096, 0]


def build_inputs(rng):
    """q [B, 1, H, D] fp8, weights [B, H] f32, a paged cache with each sequence in scattered pages."""
    pages_per_seq = [-(-n // PAGE) for n in SEQ_LENS]
    num_pages = sum(pages_per_seq) + 3
    physical = rng.permutation(num_pages).astype(np.int32)
    block_table = np.zeros((len(SEQ_LENS), max(pages_per_seq)), np.int32)
    k_cache = np.zeros((num_pages, PAGE * (DIM + 4)), np.uint8)
    keys = k_cache[:, : PAGE * DIM].reshape(num_pages, PAGE, DIM)        # views into the cache
    scales = k_cache[:, PAGE * DIM :].view(np.float32)                    # [num_pages, PAGE]
    used = 0
    for b, n in enumerate(SEQ_LENS):
        block_table[b, : pages_per_seq[b]] = physical[used : used + pages_per_seq[b]]
        used += pages_per_seq[b]
        raw = rng.standard_normal((n, DIM)).astype(np.float32)
        scale = np.maximum(np.abs(raw).max(axis=1), 1e-4) / 448.0
        positions = np.arange(n)
        pages, offsets = block_table[b, positions // PAGE], positions % PAGE
        keys[pages, offsets] = float32_to_e4m3(raw / scale[:, None])
        scales[pages, offsets] = scale
    q = float32_to_e4m3(np.clip(rng.standard_normal((len(SEQ_LENS), 1, HEADS, DIM)), -2, 2))
    # The engine folds H^-0.5 * D^-0.5 * q_scale into the weights; any float32 values are valid here.
    weights = (rng.standard_normal((len(SEQ_LENS), HEADS)) * HEADS ** -0.5 * DIM ** -0.5).astype(np.float32)
    return q, k_cache, weights, np.array(SEQ_LENS, np.int32), block_table, keys, scales


def reference_scores(q, weights, keys, scales, block_table, b, n):
    """float64 score of every position of sequence b: s_p * sum_h w[h] * relu(q[h] . k_p)."""
    positions = np.arange(n)
    pages, offsets = block_table[b, positions // PAGE], positions % PAGE
    k = e4m3_to_float32(keys[pages, offsets]).astype(np.float64)
    dots = k @ e4m3_to_float32(q[b, 0]).astype(np.float64).T            # [n, H]
    return scales[pages, offsets] * (np.maximum(dots, 0.0) @ weights[b].astype(np.float64))


def main():
    rng = np.random.default_rng(2024)
    q, k_cache, weights, seq_lens, block_table, keys, scales = build_inputs(rng)
    with dsa.Context() as context:
        indices, scores = context.topk_paged(q, k_cache, weights, seq_lens, block_table, page_size=PAGE,
                                             topk=TOPK, sorted=True, logical_indices=True, return_scores=True)
    print(f"dsa_indexer {'.'.join(map(str, dsa.version()))} from {dsa.library_path()}")
    ok = True
    for b, n in enumerate(SEQ_LENS):
        found = indices[b][indices[b] >= 0]
        reference = reference_scores(q, weights, keys, scales, block_table, b, n)
        count = min(TOPK, n)
        kth_best = np.sort(reference)[::-1][count - 1] if count else 0.0
        # Our scores are fp32 sums; allow for rounding relative to the score's size.
        worst = reference[found].min() if count else 0.0
        good = len(found) == count and len(set(found.tolist())) == count and \
            worst >= kth_best - 1e-4 * (abs(kth_best) + 1e-6)
        ok &= good
        best = ", ".join(f"{p}:{s:.4f}" for p, s in zip(found[:3], scores[b][:3]))
        print(f"sequence {b}: {n:5d} tokens -> {len(found):3d} positions, best {best or '-'}; "
              f"{'matches' if good else 'DIFFERS FROM'} the float64 reference")
    print("numpy example: OK" if ok else "numpy example: WRONG RESULTS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
