"""Input validation shared by every imaging function."""

from __future__ import annotations

import numpy as np


def _validated(image: np.ndarray, what: str = "image") -> np.ndarray:
    """`image` as a float64 2-D array, or a ValueError naming what is wrong with it."""
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold real numbers, got dtype {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2-D, got {array.ndim} dimensions "
                         f"(shape {array.shape})")
    if array.size == 0:
        raise ValueError(f"{what} is empty (shape {array.shape})")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array.sum()):  # one reduction; NaN/inf (or overflow) poison it
        bad = np.count_nonzero(~np.isfinite(array))
        if bad:
            raise ValueError(f"{what} has {bad} NaN/inf pixels of {array.size}")
        raise ValueError(f"{what} has values too large to sum (max {np.abs(array).max():g})")
    return array
