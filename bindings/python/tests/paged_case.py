"""Inputs like the benchmark's (SPEC section 6) and a float64 oracle with the SPEC section 5 check, in numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from dsa_indexer.fp8 import e4m3_to_float32, float32_to_e4m3

HEAD_DIM = 128
FP8_ONE = 0x38


@dataclass
class PagedCase:
    q: np.ndarray            # [B, next_n, H, D] uint8
    k_cache: np.ndarray      # [num_pages, P * (D + 4)] uint8
    weights: np.ndarray      # [B * next_n, H] float32
    seq_lens: np.ndarray     # [B] int32
    block_table: np.ndarray  # [B, max_pages] int32
    page_size: int

    @property
    def next_n(self) -> int:
        return self.q.shape[1]

    @property
    def heads(self) -> int:
        return self.q.shape[2]

    def page_keys(self) -> np.ndarray:
        """[num_pages, P, D] view of the keys."""
        P = self.page_size
        return self.k_cache[:, : P * HEAD_DIM].reshape(-1, P, HEAD_DIM)

    def page_scales(self) -> np.ndarray:
        """[num_pages, P] float32 view of the scales."""
        P = self.page_size
        return self.k_cache[:, P * HEAD_DIM : P * (HEAD_DIM + 4)].view(np.float32)

    def slots(self, b: int) -> np.ndarray:
        """Global slot of every position of sequence b."""
        p = np.arange(int(self.seq_lens[b]))
        return self.block_table[b, p // self.page_size].astype(np.int64) * self.page_size + p % self.page_size

    def kwargs(self) -> dict:
        return dict(page_size=self.page_size)

    def args(self) -> tuple:
        return self.q, self.k_cache, self.weights, self.seq_lens, self.block_table


def empty_case(seq_lens: List[int], heads: int = 32, page_size: int = 32, next_n: int = 1,
               rng: Optional[np.random.Generator] = None, spare_pages: int = 2) -> PagedCase:
    """Zero keys, q and weights; pages of each sequence a random permutation of the physical pages."""
    rng = rng or np.random.default_rng(0)
    pages_of = [max(1, math.ceil(n / page_size)) for n in seq_lens]
    num_pages = sum(pages_of) + spare_pages
    order = rng.permutation(num_pages).astype(np.int32)
    max_pages = max(pages_of)
    table = np.zeros((len(seq_lens), max_pages), np.int32)
    used = 0
    for b, count in enumerate(pages_of):
        table[b, :count] = order[used : used + count]
        used += count
    B = len(seq_lens)
    return PagedCase(q=np.zeros((B, next_n, heads, HEAD_DIM), np.uint8),
                     k_cache=np.zeros((num_pages, page_size * (HEAD_DIM + 4)), np.uint8),
                     weights=np.zeros((B * next_n, heads), np.float32),
                     seq_lens=np.array(seq_lens, np.int32), block_table=table, page_size=page_size)


def ramp_case(seq_lens: List[int], next_n: int = 1, heads: int = 32, page_size: int = 32) -> PagedCase:
    """Every key is e_0 with scale position + 1, head 0 reads dimension 0 with weight 1: the score of
    position p is p + 1 exactly, so the answers are known."""
    case = empty_case(seq_lens, heads=heads, page_size=page_size, next_n=next_n)
    keys, scales = case.page_keys(), case.page_scales()
    for b, n in enumerate(seq_lens):
        for p in range(n):
            page = case.block_table[b, p // page_size]
            keys[page, p % page_size, 0] = FP8_ONE
            scales[page, p % page_size] = p + 1
    case.q[:, :, 0, 0] = FP8_ONE
    case.weights[:, 0] = 1.0
    return case


def integer_case(seq_lens: List[int], next_n: int = 1, heads: int = 64, page_size: int = 64,
                 seed: int = 0) -> PagedCase:
    """Small integer keys, queries and weights with scale 1: every score is an integer, exact in any fp32
    summation order, so every backend must return the same indices (ties by position) and the same scores
    (SPEC section 5: exact equality with the CPU backend is required on such inputs)."""
    rng = np.random.default_rng(seed)
    case = empty_case(seq_lens, heads=heads, page_size=page_size, next_n=next_n, rng=rng)
    case.q[...] = float32_to_e4m3(rng.integers(-2, 3, case.q.shape))
    case.weights[...] = rng.integers(-2, 3, case.weights.shape)
    case.page_keys()[...] = float32_to_e4m3(rng.integers(-3, 4, case.page_keys().shape))
    case.page_scales()[...] = 1.0
    return case


def spec6_case(seq_lens: List[int], heads: int = 64, page_size: int = 64, next_n: int = 1,
               seed: int = 0) -> PagedCase:
    """Random inputs like FlashInfer-Bench's: q from randn clamped to [-2, 2], keys from randn with scale
    max(amax, 1e-4) / 448, weights randn (negative ones included)."""
    rng = np.random.default_rng(seed)
    case = empty_case(seq_lens, heads=heads, page_size=page_size, next_n=next_n, rng=rng)
    case.q[...] = float32_to_e4m3(np.clip(rng.standard_normal(case.q.shape), -2, 2))
    case.weights[...] = rng.standard_normal(case.weights.shape).astype(np.float32)
    keys, scales = case.page_keys(), case.page_scales()
    for b, n in enumerate(seq_lens):
        raw = rng.standard_normal((n, HEAD_DIM))
        scale = (np.maximum(np.abs(raw).max(axis=1), 1e-4) / 448).astype(np.float32)
        codes = float32_to_e4m3(raw / scale[:, None])
        p = np.arange(n)
        pages = case.block_table[b, p // page_size]
        keys[pages, p % page_size] = codes
        scales[pages, p % page_size] = scale
    return case


def oracle(case: PagedCase, b: int, j: int):
    """(score, magnitude A) in float64 of every visible position of row (b, j) (SPEC sections 1 and 5)."""
    n = int(case.seq_lens[b])
    visible = max(0, n - case.next_n + j + 1)
    slots = case.slots(b)[:visible]
    P = case.page_size
    keys = e4m3_to_float32(case.page_keys()[slots // P, slots % P]).astype(np.float64)
    scales = case.page_scales()[slots // P, slots % P].astype(np.float64)
    q = e4m3_to_float32(case.q[b, j]).astype(np.float64)
    w = case.weights[b * case.next_n + j].astype(np.float64)
    relu = np.maximum(keys @ q.T, 0.0)
    return scales * (relu @ w), scales * (relu @ np.abs(w))


def check_row(score: np.ndarray, magnitude: np.ndarray, positions: np.ndarray, topk: int) -> Optional[str]:
    """SPEC section 5 for one row; positions are logical, -1 for padding. None when the row passes."""
    n = len(score)
    count = min(topk, n)
    if np.any(positions[count:] != -1):
        return f"padding after {count} results is not -1: {positions[count:]}"
    found = positions[:count]
    if np.any(found < 0) or np.any(found >= n):
        return f"positions outside [0, {n}): {found}"
    if len(np.unique(found)) != count:
        return "repeated positions"
    if count == 0:
        return None
    kth = np.argsort(-score, kind="stable")[count - 1]
    threshold = score[kth]
    tolerance = 1e-3 * np.maximum(magnitude[found], magnitude[kth]) + 1e-30
    bad = score[found] < threshold - tolerance
    return f"positions {found[bad]} score below the k-th best {threshold}" if np.any(bad) else None


def check_case(case: PagedCase, indices: np.ndarray, topk: int, logical: bool) -> None:
    """Asserts SPEC section 5 on every row of a paged result."""
    for b in range(len(case.seq_lens)):
        slot_to_position = {int(s): p for p, s in enumerate(case.slots(b))}
        for j in range(case.next_n):
            row = indices[b * case.next_n + j]
            if logical:
                positions = row.astype(np.int64)
            else:
                positions = np.array([slot_to_position.get(int(s), -2) if s >= 0 else -1 for s in row])
            score, magnitude = oracle(case, b, j)
            problem = check_row(score, magnitude, positions, topk)
            assert problem is None, f"row {b * case.next_n + j} (b {b}, j {j}): {problem}"
