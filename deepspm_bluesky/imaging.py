"""Per-image pipeline of DeepSPM: plane flattening, normalisation, checks, free area.

Constants from Krull et al., Commun. Phys. 3, 54 (2020), https://doi.org/10.1038/s42005-020-0317-3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CRASH_RANGE_M = 1e-25
CONTACT_TOLERANCE_M = 3e-10
DEBRIS_RANGE_M = 6e-10
NORMALIZE_SCALE_M = 1e-10
VERDICTS = ("ok", "crash", "no_contact", "debris")


def _validated(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D, got {image.ndim} dimensions")
    if image.size == 0:
        raise ValueError("image is empty")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"image has {np.count_nonzero(~np.isfinite(image))} NaN/inf pixels")
    return image


def flatten_plane(image: np.ndarray) -> np.ndarray:
    """Subtract the best-fitting plane (least squares, then trimmed refits)."""
    image = _validated(image)
    rows, cols = np.indices(image.shape)
    design = np.stack([rows.ravel(), cols.ravel(), np.ones(image.size)], axis=1)
    z = image.ravel()
    keep = np.ones(z.size, bool)
    for _ in range(4):
        coef, *_ = np.linalg.lstsq(design[keep], z[keep], rcond=None)
        residual = z - design @ coef
        mad = np.median(np.abs(residual[keep] - np.median(residual[keep])))
        keep = np.abs(residual - np.median(residual[keep])) <= max(3 * 1.4826 * mad, 1e-14)
    return (z - design @ coef).reshape(image.shape)


def normalize(image: np.ndarray) -> np.ndarray:
    """DeepSPM normalisation of a flattened image: clip(h / 1e-10 - 1, -1.5, 1.5)."""
    return np.clip(_validated(image) / NORMALIZE_SCALE_M - 1, -1.5, 1.5)


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of the fast, ML-free checks and the numbers behind it (metres)."""

    verdict: str
    height_range_m: float
    mean_m: float

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def check_image(image: np.ndarray, *, z_range_m: float) -> ImageCheck:
    """Crash (flat image), lost contact (mean at -z_range/2) or debris (range >= 600 pm)."""
    image = _validated(image)
    height_range, mean = float(np.ptp(image)), float(image.mean())
    if height_range < CRASH_RANGE_M and mean > 0:
        verdict = "crash"
    elif abs(mean + z_range_m / 2) <= CONTACT_TOLERANCE_M:
        verdict = "no_contact"
    elif np.ptp(flatten_plane(image)) >= DEBRIS_RANGE_M:
        verdict = "debris"
    else:
        verdict = "ok"
    return ImageCheck(verdict, height_range, mean)


def largest_free_square(normalized: np.ndarray, *,
                        tolerance: float = 0.1) -> tuple[float, float, int]:
    """Centre (row, col) and side in pixels of the largest square of free pixels.

    A pixel is free where ``|normalized + 1| <= tolerance`` (on the plane). Binary search on
    the side with a summed-area table: each test is one vectorised pass.
    """
    blocked = (np.abs(_validated(normalized) + 1) > tolerance).astype(np.int64)
    table = np.pad(blocked.cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def first_fit(k: int) -> tuple[int, int] | None:
        sums = table[k:, k:] - table[:-k, k:] - table[k:, :-k] + table[:-k, :-k]
        hits = np.argwhere(sums == 0)
        return tuple(hits[0]) if len(hits) else None

    lo, hi, best = 0, min(blocked.shape), (0, 0)
    while lo < hi:
        k = (lo + hi + 1) // 2
        hit = first_fit(k)
        if hit is None:
            hi = k - 1
        else:
            lo, best = k, hit
    return best[0] + (lo - 1) / 2, best[1] + (lo - 1) / 2, lo
