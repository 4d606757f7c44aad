"""8-bit upload of client updates: per-tensor affine uint8 codes, dequantized on the server.

``x ≈ lo + code * (hi - lo) / 255`` with ``lo, hi`` the tensor's min and max, so the
round-trip error of every element is at most ``(hi - lo) / 510``. Integer buffers are sent
as they are. The payload is ``{name: codes}`` plus ``{name + RANGE_SUFFIX: [lo, hi]}``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

RANGE_SUFFIX = "::range"


def quantize_arrays(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float arrays -> uint8 codes plus their [min, max]; other arrays unchanged."""
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        if value.dtype.kind != "f" or value.size == 0:
            out[key] = value
            continue
        lo, hi = float(value.min()), float(value.max())
        span = hi - lo if hi > lo else 1.0
        out[key] = np.rint((value - lo) / span * 255).astype(np.uint8)
        out[key + RANGE_SUFFIX] = np.array([lo, hi], dtype=np.float32)
    return out


def dequantize_arrays(
    arrays: Mapping[str, np.ndarray], dtypes: Mapping[str, np.dtype]
) -> dict[str, np.ndarray]:
    """Inverse of :func:`quantize_arrays`, casting back to the model's ``dtypes``."""
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if key.endswith(RANGE_SUFFIX):
            continue
        rng = arrays.get(key + RANGE_SUFFIX)
        if rng is None:
            out[key] = np.asarray(value)
            continue
        lo, hi = float(rng[0]), float(rng[1])
        span = hi - lo if hi > lo else 1.0
        decoded = lo + np.asarray(value, dtype=np.float64) * span / 255
        out[key] = decoded.astype(dtypes.get(key, np.float32))
    return out
