"""Robust plane flattening (a fast stand-in for DeepSPM's RANSAC) and normalisation."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .validation import _validated

PLANE_THRESHOLD_M = 5e-12  # RANSAC residual threshold of the reference plane fit
NORMALIZE_SCALE_M = 1e-10
NORMALIZE_CLIP = 1.5
COARSE_PX = 32  # the plane's start and wide refits use every n-th pixel, n = side // 32
# Consensus refits of the plane, in multiples of the threshold: wide ones on the coarse
# grid, then the exact one on every pixel.
_COARSE_SCHEDULE = (4.0, 2.0)
_FINE_SCHEDULE = (1.0,)
_HYPOTHESES = 16  # sampled 3-point planes that compete with the start on large images
SAMPLED_ABOVE_PX = 64
_TERRACE_ROUNDS = 3  # least-squares refits to the whole dominant terrace (see `_terrace`)
NOISE_PER_DIFFERENCE = 1.0  # the terrace's height bins are no narrower than the median
# absolute deviation of neighbouring pixels' differences along the fast axis (scanner noise)
_TERRACE_FLOOR = 0.1  # a height bin belongs to the terrace while it holds this much of its peak


@dataclass(frozen=True)
class PlaneFit:
    """A plane ``z = offset_m + slope_row_m * (row - rc) + slope_col_m * (col - cc)``.

    (rc, cc) is the centre of the image, so `offset_m` is the plane's height there.

    Attributes
    ----------
    offset_m, slope_row_m, slope_col_m
        Height at the image centre and slopes in metres per pixel along rows and columns.
    inliers
        Number of pixels the final least-squares fit used: those within `threshold_m` of
        the previous iterate (the consensus set; 0 if no refit was possible).
    threshold_m
        The residual threshold of the consensus.
    """

    offset_m: float
    slope_row_m: float
    slope_col_m: float
    inliers: int
    threshold_m: float

    def evaluate(self, shape: tuple[int, int]) -> np.ndarray:
        """The plane sampled on an image of `shape`."""
        rows, cols = _centred_axes(tuple(shape))
        return ((self.offset_m + self.slope_row_m * rows)[:, None]
                + (self.slope_col_m * cols)[None, :])


@lru_cache(maxsize=16)
def _centred_axes(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates measured from the centre of the image (read-only)."""
    axes = tuple(np.arange(n) - (n - 1) / 2 for n in shape)
    for axis in axes:
        axis.setflags(write=False)
    return axes


@lru_cache(maxsize=16)
def _axes(shape: tuple[int, int], step: int) -> tuple[np.ndarray, ...]:
    """Centred row and column coordinates of every `step`-th pixel, and their powers
    (1, r, r^2) as rows and (1, c, c^2) as columns: ``R @ w @ C`` are the moments of w."""
    rows, cols = (axis[::step] for axis in _centred_axes(shape))
    row_powers = np.stack([np.ones_like(rows), rows, rows * rows])
    col_powers = np.stack([np.ones_like(cols), cols, cols * cols], axis=1)
    arrays = (rows, cols, row_powers, col_powers)
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _solve_normal(of_weights: np.ndarray,
                  of_heights: np.ndarray) -> tuple[float, float, float] | None:
    """Weighted least-squares plane from its moments (Cramer's rule); None if degenerate."""
    (n, sc, scc), (sr, src, _), (srr, _, _) = of_weights.tolist()
    (sz, scz, _), (srz, _, _), _ = of_heights.tolist()
    c11, c12, c13 = srr * scc - src * src, sc * src - sr * scc, sr * src - sc * srr
    c22, c23, c33 = n * scc - sc * sc, sr * sc - n * src, n * srr - sr * sr
    det = n * c11 + sr * c12 + sc * c13
    if n < 3 or not det > 1e-9 * max(n * c11, c22 * srr, c33 * scc):
        return None  # fewer than three pixels, or all of them on one line
    return ((c11 * sz + c12 * srz + c13 * scz) / det,
            (c12 * sz + c22 * srz + c23 * scz) / det,
            (c13 * sz + c23 * srz + c33 * scz) / det)


def _median(values: np.ndarray) -> float:
    """Upper median, by partition (no copy of the sort)."""
    k = values.size // 2
    return float(np.partition(values, k, axis=None)[k])


def _densest_level(values: np.ndarray, width: float) -> float:
    """Centre of the height window of side 2*`width` that holds the most values."""
    low = float(values.min())
    span = (float(values.max()) - low) / width
    if span > 64 * values.size:  # a wild outlier: histogram would be huge, median will do
        return _median(values)
    counts = np.bincount(((values - low) * (1.0 / width)).astype(np.intp, copy=False).ravel())
    if counts.size < 2:
        return low + width / 2
    return low + (int(np.argmax(counts[:-1] + counts[1:])) + 1) * width


def fit_plane(image: np.ndarray, *, threshold_m: float = PLANE_THRESHOLD_M) -> PlaneFit:
    """Robust plane of a height image: the plane most pixels lie on, as RANSAC finds it.

    Parameters
    ----------
    image
        Heights in metres, 2-D, at least 2 x 2 pixels.
    threshold_m
        Residual within which a pixel counts as on the plane (the reference's RANSAC
        residual threshold, 5 pm).

    Returns
    -------
    PlaneFit
        Coefficients and consensus of the plane.

    Notes
    -----
    DeepSPM fits the plane with RANSAC (scikit-learn, 4-point samples, 1000 trials at most,
    threshold 5 pm), whose result is a least-squares fit to the consensus set of the best
    random sample. Here the random samples are replaced by a deterministic start that already
    lies on the dominant plane of a plane plus features (steps, adsorbates, debris): the
    slopes are the medians of the row and column differences (a feature only touches the
    differences at its rim) and the offset is the densest 2 * threshold window of the
    detrended heights. The plane is then refitted by least squares to the pixels within 4
    and 2 thresholds of it on a coarse grid (every ``side // 32``-th pixel), and finally to
    the pixels of the full image within 1 threshold. Images of more than 64 pixels a side
    (long scans, where creep bends the slow axis) also refine the best of 16 seeded
    three-pixel planes on the coarse grid and keep whichever start gathers more pixels.
    Before the final refit, the plane is refitted three times to the whole dominant terrace
    (the block of height bins around the fullest one, up to the nearly empty bins a step
    edge or a cluster's rim leaves) and its offset set to the densest level again: on an
    atomically corrugated surface, where the corrugation spans many thresholds, a thin
    consensus would otherwise keep the tilt of its start (up to ~300 pm across a 256-px
    frame with a cluster in a corner; RANSAC's random search finds the level plane).
    Like RANSAC's, the result is the least-squares plane of a 5 pm consensus set, at a
    small fraction of the cost. Measured (``python -m benchmarks bench_imaging``) on
    simulated scans, it differs from RANSAC's plane about as much as two RANSAC runs with
    different seeds differ from each other; a plane plus flat features comes out exact.

    References
    ----------
    Krull et al., Commun. Phys. 3, 54 (2020), https://doi.org/10.1038/s42005-020-0317-3.
    Fischler & Bolles, Commun. ACM 24, 381 (1981), https://doi.org/10.1145/358669.358692.
    """
    return _fit_plane(_validated(image), threshold_m)


def _start(z: np.ndarray, axes: tuple[np.ndarray, ...], step: int,
           threshold_m: float) -> tuple[float, float, float]:
    """First plane: median slopes, then the densest height level of the detrended image."""
    rows, cols = axes[:2]
    slope_row = _median(z[1:] - z[:-1]) / step
    slope_col = _median(z[:, 1:] - z[:, :-1]) / step
    tilt = (slope_row * rows)[:, None] + (slope_col * cols)[None, :]
    return _densest_level(z - tilt, threshold_m), slope_row, slope_col


@lru_cache(maxsize=16)
def _triples(shape: tuple[int, int], count: int) -> np.ndarray:
    """`count` seeded triples of distinct flat pixel indices (the same for every call)."""
    rng = np.random.default_rng(0)
    size = shape[0] * shape[1]
    triples = np.array([rng.choice(size, 3, replace=False) for _ in range(count)])
    triples.setflags(write=False)
    return triples


def _sampled_start(z: np.ndarray, axes: tuple[np.ndarray, ...],
                   threshold_m: float) -> tuple[float, float, float]:
    """The best of `_HYPOTHESES` planes through three pixels, as RANSAC draws them: the one
    with the most pixels within 2 thresholds."""
    rows, cols = axes[:2]
    r, c = np.repeat(rows, cols.size), np.tile(cols, rows.size)
    heights = z.ravel()
    triple = _triples(z.shape, _HYPOTHESES)
    (r1, r2, r3), (c1, c2, c3), (z1, z2, z3) = r[triple].T, c[triple].T, heights[triple].T
    # normal of the plane through the three points (cross product of two edges)
    n_r = (c2 - c1) * (z3 - z1) - (z2 - z1) * (c3 - c1)
    n_c = (z2 - z1) * (r3 - r1) - (r2 - r1) * (z3 - z1)
    n_z = (r2 - r1) * (c3 - c1) - (c2 - c1) * (r3 - r1)
    valid = n_z != 0  # three pixels on one line define no plane
    n_z = np.where(valid, n_z, 1.0)
    slope_row, slope_col = -n_r / n_z, -n_c / n_z
    offset = z1 - slope_row * r1 - slope_col * c1
    residual = (offset[:, None] + slope_row[:, None] * r + slope_col[:, None] * c) - heights
    consensus = np.where(valid, (np.abs(residual) <= 2 * threshold_m).sum(axis=1), -1)
    best = int(np.argmax(consensus))
    return float(offset[best]), float(slope_row[best]), float(slope_col[best])


def _refit(z: np.ndarray, axes: tuple[np.ndarray, ...], coef: tuple[float, float, float],
           factors: tuple[float, ...], threshold_m: float,
           fitted_to: int = 0) -> tuple[tuple[float, float, float], int]:
    """Least-squares refits to the pixels within ``factor * threshold_m`` of the plane."""
    rows, cols, row_powers, col_powers = axes
    residual = np.empty_like(z)
    stacked = np.empty((2, *z.shape))  # weights and weighted heights: moments in one product
    for factor in factors:
        np.subtract(z, (coef[0] + coef[1] * rows)[:, None], out=residual)
        residual -= coef[2] * cols
        np.abs(residual, out=residual)
        np.less_equal(residual, factor * threshold_m, out=stacked[0], casting="unsafe")
        np.multiply(stacked[0], z, out=stacked[1])
        moments = row_powers @ (stacked.reshape(-1, z.shape[1]) @ col_powers).reshape(
            2, z.shape[0], 3)  # [k, a, b]: sum of w r^a c^b (k = 0), of w z r^a c^b (k = 1)
        refit = _solve_normal(moments[0], moments[1])
        if refit is None:
            break
        coef, fitted_to = refit, int(moments[0, 0, 0])
    return coef, fitted_to


def _terrace_band(residual: np.ndarray, width: float) -> tuple[float, float]:
    """Height window of the dominant terrace: the run of `width` bins around the fullest one
    in which every bin holds at least `_TERRACE_FLOOR` of its count (and two pixels).

    An atomically corrugated terrace fills a block of neighbouring bins; a step edge leaves
    a gap of nearly empty bins before the next terrace, and a cluster spreads its few pixels
    per bin thinly over its whole height.
    """
    low = float(residual.min())
    span = (float(residual.max()) - low) / width
    if span > 64 * residual.size:  # a wild outlier: no histogram, keep a narrow window
        return -2.0 * width, 2.0 * width
    counts = np.bincount(((residual - low) * (1.0 / width)).astype(np.intp, copy=False).ravel())
    peak = int(np.argmax(counts))
    sparse = counts < max(2.0, _TERRACE_FLOOR * counts[peak])
    below, above = sparse[peak::-1], sparse[peak:]  # outwards from the peak
    first = peak - int(np.argmax(below)) + 1 if below.any() else 0
    last = peak + int(np.argmax(above)) if above.any() else counts.size
    return low + first * width, low + last * width


def _terrace(z: np.ndarray, axes: tuple[np.ndarray, ...], coef: tuple[float, float, float],
             threshold_m: float, noise_m: float) -> tuple[float, float, float] | None:
    """Least-squares refits to every pixel of the dominant terrace (`_terrace_band`), or
    None when the terrace is no thicker than the widest consensus (nothing to change).

    A consensus of a few pm is a thin slice through an atomically corrugated terrace, and
    nearly any slice is its own fixed point, so the plane stays as tilted as its start;
    fitting the whole terrace averages the corrugation out.
    """
    rows, cols, row_powers, col_powers = axes
    residual = np.empty_like(z)
    stacked = np.empty((2, *z.shape))
    width = max(threshold_m, noise_m)
    for round_ in range(_TERRACE_ROUNDS):
        np.subtract(z, (coef[0] + coef[1] * rows)[:, None], out=residual)
        residual -= coef[2] * cols
        low, high = _terrace_band(residual, width)
        if round_ == 0 and high - low <= 2 * _COARSE_SCHEDULE[0] * threshold_m:
            return None  # the widest consensus refit already held the whole terrace
        np.greater_equal(residual, low, out=stacked[0], casting="unsafe")
        stacked[0] *= residual <= high
        np.multiply(stacked[0], z, out=stacked[1])
        moments = row_powers @ (stacked.reshape(-1, z.shape[1]) @ col_powers).reshape(
            2, z.shape[0], 3)
        refit = _solve_normal(moments[0], moments[1])
        if refit is None:
            break
        coef = refit
    return coef


def _fit_plane(image: np.ndarray, threshold_m: float) -> PlaneFit:
    """`fit_plane` of a validated image."""
    if min(image.shape) < 2:
        raise ValueError(f"a plane needs an image of at least 2 x 2 pixels, got {image.shape}")
    if not (np.isfinite(threshold_m) and threshold_m > 0):
        raise ValueError(f"threshold_m must be a positive number, got {threshold_m}")
    base = float(image[0, 0])  # work near zero: heights may sit tens of nm from it
    z = image - base
    step = max(1, min(image.shape) // COARSE_PX)
    coarse = z[::step, ::step]
    coarse_axes = _axes(image.shape, step)
    starts = [_start(coarse, coarse_axes, step, threshold_m)]
    if min(image.shape) > SAMPLED_ABOVE_PX:  # long scans creep: sampled planes compete
        starts.append(_sampled_start(coarse, coarse_axes, threshold_m))
    coef, fitted_to = max((_refit(coarse, coarse_axes, start, _COARSE_SCHEDULE, threshold_m)
                           for start in starts), key=lambda fit: fit[1])
    differences = np.diff(z[::4 * step], axis=1)  # along the fast axis, a few lines
    differences -= _median(differences)  # the tilt's share
    noise_m = NOISE_PER_DIFFERENCE * _median(np.abs(differences))
    terrace = _terrace(coarse, coarse_axes, coef, threshold_m, noise_m)
    if terrace is not None:  # a rough terrace: its slopes, at its densest level
        rows, cols = coarse_axes[:2]
        tilt = (terrace[1] * rows)[:, None] + (terrace[2] * cols)[None, :]
        coef = (_densest_level(coarse - tilt, threshold_m), terrace[1], terrace[2])
    axes = coarse_axes if step == 1 else _axes(image.shape, 1)
    coef, fitted_to = _refit(z, axes, coef, _FINE_SCHEDULE, threshold_m, fitted_to)
    return PlaneFit(coef[0] + base, coef[1], coef[2], fitted_to, threshold_m)


def flatten_plane(image: np.ndarray, *, threshold_m: float = PLANE_THRESHOLD_M) -> np.ndarray:
    """The image minus its robust plane (`fit_plane`): the dominant plane becomes 0.

    Parameters
    ----------
    image
        Heights in metres, 2-D.
    threshold_m
        Residual threshold of the plane's consensus (5 pm, as the reference RANSAC).

    Returns
    -------
    numpy.ndarray
        Heights above the plane, float64, same shape.
    """
    image = _validated(image)
    return image - _fit_plane(image, threshold_m).evaluate(image.shape)


def normalize(image: np.ndarray) -> np.ndarray:
    """DeepSPM normalisation of a flattened image: ``clip(h / 1e-10 - 1, -1.5, 1.5)``.

    The plane maps to -1; 50 pm above it to -0.5; 250 pm and more to the clip at 1.5.
    """
    return _normalize(_validated(image))


def _normalize(image: np.ndarray) -> np.ndarray:
    scaled = image * (1.0 / NORMALIZE_SCALE_M)
    scaled -= 1.0
    np.maximum(scaled, -NORMALIZE_CLIP, out=scaled)  # np.clip, minus its Python overhead
    return np.minimum(scaled, NORMALIZE_CLIP, out=scaled)


def align_rows(image: np.ndarray) -> np.ndarray:
    """Line-by-line correction: each scan line shifted so that its median difference from
    the line before is zero (Gwyddion's "median of differences" row alignment).

    Parameters
    ----------
    image
        Heights in metres, 2-D, rows = scan lines.

    Returns
    -------
    numpy.ndarray
        float64, same shape; the first line keeps its heights.

    Notes
    -----
    A separate, optional step before `flatten_plane` for images with line offsets (feedback
    jumps, a tip change between lines): the offset of line i is the cumulative sum of the
    medians of ``image[j] - image[j - 1]`` for j <= i, so features that cover less than half
    of a line do not move it. It also removes any tilt along the slow axis, which
    `flatten_plane` would remove anyway; not part of DeepSPM's pipeline, so not of
    `process_image`.

    References
    ----------
    Nečas & Klapetek, Cent. Eur. J. Phys. 10, 181 (2012), https://doi.org/10.2478/s11534-011-0096-2
    (Gwyddion).
    """
    image = _validated(image)
    steps = np.median(np.diff(image, axis=0), axis=1)
    offsets = np.concatenate([[0.0], np.cumsum(steps)])
    return image - offsets[:, None]
