"""The reference per-image pipeline of DeepSPM, re-implemented faithfully for benchmarks only.

Krull et al., Commun. Phys. 3, 54 (2020), https://doi.org/10.1038/s42005-020-0317-3. The
original flattens with scikit-learn's ``RANSACRegressor`` (degree-1 polynomial features, so
four points per trial, residual threshold 5e-12 m, at most 1000 trials, the default stop
probability 0.99), normalises with ``clip(h / 1e-10 - 1, -1.5, 1.5)``, marks free pixels and
the one-pixel frame as blocked in a pixel loop, and finds the largest square with a pixel-loop
dynamic programme. This module repeats those algorithms trial for trial and pixel for pixel
(in numpy, since scikit-learn is not a dependency), minus the PNG files and prints. It is the
yardstick in `bench_imaging`, never used by the package.
"""

from __future__ import annotations

import math

import numpy as np

RESIDUAL_THRESHOLD_M = 5e-12
MAX_TRIALS = 1000
STOP_PROBABILITY = 0.99
MIN_SAMPLES = 4  # scikit-learn: number of (polynomial) features + 1
_EPSILON = np.spacing(1)


def _dynamic_max_trials(n_inliers: int, n_samples: int, probability: float) -> float:
    """Trials needed to draw one all-inlier sample with `probability` (scikit-learn's rule)."""
    nom = max(_EPSILON, 1 - probability)
    denom = max(_EPSILON, 1 - (n_inliers / n_samples) ** MIN_SAMPLES)
    if nom == 1:
        return 0
    if denom == 1:
        return math.inf
    return abs(math.ceil(math.log(nom) / math.log(denom)))


def _r2(design: np.ndarray, z: np.ndarray, coef: np.ndarray) -> float:
    """Coefficient of determination of the plane on (design, z), as ``estimator.score``."""
    residual = z - design @ coef
    total = np.sum((z - z.mean()) ** 2)
    return 1.0 - float(residual @ residual) / float(total) if total > 0 else 1.0


def ransac_plane(image: np.ndarray, *, seed: int = 0, threshold: float = RESIDUAL_THRESHOLD_M,
                 max_trials: int = MAX_TRIALS,
                 stop_probability: float = STOP_PROBABILITY) -> tuple[np.ndarray, int]:
    """RANSAC plane as DeepSPM's ``RansacWrapper``; returns (plane image, trials run).

    ``stop_probability=1`` makes it run all `max_trials` trials.
    """
    rows, cols = image.shape
    design = np.ones((image.size, 3))
    design[:, 1] = np.repeat(np.arange(rows), cols)
    design[:, 2] = np.tile(np.arange(cols), rows)
    z = image.ravel().astype(np.float64)
    rng = np.random.default_rng(seed)
    best_inliers, best_score, best_mask = 0, -math.inf, None
    trials, limit = 0, max_trials
    while trials < limit:
        trials += 1
        subset = rng.choice(z.size, MIN_SAMPLES, replace=False)
        coef, *_ = np.linalg.lstsq(design[subset], z[subset], rcond=None)
        inliers = np.abs(z - design @ coef) <= threshold
        n_inliers = int(inliers.sum())
        if n_inliers == 0 or n_inliers < best_inliers:
            continue
        score = _r2(design[inliers], z[inliers], coef)
        if n_inliers == best_inliers and score < best_score:
            continue
        best_inliers, best_score, best_mask = n_inliers, score, inliers
        limit = min(limit, _dynamic_max_trials(best_inliers, z.size, stop_probability))
    if best_mask is None:
        raise ValueError("RANSAC found no inliers")
    coef, *_ = np.linalg.lstsq(design[best_mask], z[best_mask], rcond=None)
    return (design @ coef).reshape(image.shape), trials


def normalize(image: np.ndarray) -> np.ndarray:
    """``normImg1``: clip(h / 1e-10 - 1, -1.5, 1.5)."""
    return np.clip(image / 1e-10 - 1, -1.5, 1.5)


def max_empty_size(mat: np.ndarray, zero: float = 0) -> tuple[float, int, int]:
    """Pixel-loop dynamic programme: side and top-left (row, col) of the largest zero square."""
    nrows, ncols = mat.shape
    counts = np.zeros((nrows, ncols))
    for i in reversed(range(nrows)):
        for j in reversed(range(ncols)):
            if mat[i][j] == zero:
                counts[i][j] = (1 + min(counts[i][j + 1], counts[i + 1][j], counts[i + 1][j + 1])
                                if i < nrows - 1 and j < ncols - 1 else 1)
    best, best_row, best_col = -1, -1, -1
    for row in range(len(counts)):
        for col in range(len(counts[row])):
            if counts[row, col] > best:
                best, best_row, best_col = counts[row, col], row, col
    return best, best_row, best_col


def find_empty_spot(normalized: np.ndarray, threshold: float = 0.1) -> tuple[float, float, float]:
    """``findEmptySpotAbs``: centre (row, col) = top-left + side / 2, and side in pixels.

    The one-pixel frame of the image never counts as free (it keeps the value 128).
    """
    free_img = np.full(normalized.shape, 128.0)
    for y in range(1, normalized.shape[0] - 1):
        for x in range(1, normalized.shape[1] - 1):
            free_img[y, x] = 255.0 if abs(normalized[y, x] + 1.0) > threshold else 0.0
    side, row, col = max_empty_size(free_img, 0)
    return float(row + side / 2), float(col + side / 2), float(side)


def pipeline(image: np.ndarray, *, z_range_m: float, size_nm: float, require_free_nm,
             seed: int = 0, stop_probability: float = STOP_PROBABILITY) -> dict:
    """One image through DeepSPM's ``getState`` and ``prepareAction``, as a dict of results.

    `require_free_nm` is the action table's required free side per action (nm).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.max() - image.min() < 1e-25 and image.mean() > 0:
        return {"verdict": "crash"}
    if abs(image.mean() - (-z_range_m / 2)) <= 3e-10:
        return {"verdict": "no_contact"}
    if image.max() - image.min() >= 6e-10:
        return {"verdict": "debris"}
    plane, trials = ransac_plane(image, seed=seed, stop_probability=stop_probability)
    normalized = normalize(image - plane)
    row, col, side = find_empty_spot(normalized)
    free_nm = side * size_nm / image.shape[0]
    allowed = [i for i, need in enumerate(require_free_nm) if need <= free_nm]
    return {"verdict": "ok", "plane": plane, "trials": trials, "normalized": normalized,
            "row": row, "col": col, "side_px": side, "free_nm": free_nm, "allowed": allowed}
