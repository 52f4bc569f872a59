"""FP8 e4m3 (OCP e4m3fn) conversion with numpy, for preparing inputs on the host and checking results.

e4m3fn: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; no infinities; 0x7F / 0xFF are NaN; the
largest finite value is 448. Importing this module needs numpy; the rest of the package does not.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _table() -> np.ndarray:
    codes = np.arange(256)
    exponent = (codes >> 3) & 0xF
    mantissa = (codes & 0x7).astype(np.float64)
    magnitude = np.where(exponent == 0, mantissa / 8.0 * 2.0 ** -6,  # subnormals
                         (1.0 + mantissa / 8.0) * 2.0 ** (exponent - 7.0))
    values = np.where(codes & 0x80, -magnitude, magnitude)
    values[(codes & 0x7F) == 0x7F] = np.nan
    return values.astype(np.float32)


#: The float32 value of each of the 256 codes.
E4M3_VALUES: np.ndarray = _table()
_POSITIVE = E4M3_VALUES[:0x7F].astype(np.float64)  # codes 0x00..0x7E, increasing: 0 .. 448


def e4m3_to_float32(codes: Any) -> np.ndarray:
    """The float32 values of an array of e4m3 codes (uint8, or a float8_e4m3fn array viewed as uint8)."""
    return E4M3_VALUES[np.asarray(codes, dtype=np.uint8)]


def float32_to_e4m3(values: Any) -> np.ndarray:
    """The nearest e4m3 codes (uint8) of float values: round to nearest, ties to an even code, magnitudes
    beyond 448 saturate to 448, NaN becomes 0x7F."""
    x = np.asarray(values, dtype=np.float64)
    magnitude = np.minimum(np.abs(x), 448.0)
    upper = np.clip(np.searchsorted(_POSITIVE, magnitude), 1, 0x7E)
    lower = upper - 1
    below, above = magnitude - _POSITIVE[lower], _POSITIVE[upper] - magnitude
    take_upper = (above < below) | ((above == below) & (upper % 2 == 0))
    code = np.where(take_upper, upper, lower).astype(np.uint8)
    code = np.where(magnitude == 0, 0, code).astype(np.uint8)
    code |= np.where(np.signbit(x), 0x80, 0).astype(np.uint8)
    return np.where(np.isnan(x), 0x7F, code).astype(np.uint8)
