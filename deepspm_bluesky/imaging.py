"""Per-image pipeline of DeepSPM: plane flattening, normalisation, checks, free area.

Pure functions on 2-D height images in metres (row index = y, column index = x, as the
simulated microscope renders them). Constants from Krull et al., Commun. Phys. 3, 54 (2020),
https://doi.org/10.1038/s42005-020-0317-3.

Examples
--------
>>> from deepspm_bluesky.sim import SimulatedMicroscope
>>> image = SimulatedMicroscope(seed=0).scan(0.0, 0.0, 10e-9, 64)
>>> result = process_image(image, size_nm=10.0, z_range_m=1e-6)
>>> result.check.verdict in VERDICTS
True
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .actions import ActionTable, load_actions

CRASH_RANGE_M = 1e-25  # a crashed tip returns a perfectly flat image ...
CONTACT_TOLERANCE_M = 3e-10  # ... a lost one reads -z_range/2 to within this
DEBRIS_RANGE_M = 6e-10  # 600 pm of height range after flattening: debris
PLANE_THRESHOLD_M = 5e-12  # RANSAC residual threshold of the reference plane fit
NORMALIZE_SCALE_M = 1e-10
NORMALIZE_CLIP = 1.5
FREE_TOLERANCE = 0.1  # normalised units: within 10 pm of the plane
VERDICTS = ("ok", "crash", "no_contact", "debris")
COARSE_PX = 32  # the plane's start and wide refits use every n-th pixel, n = side // 32
# Consensus refits of the plane, in multiples of the threshold: wide ones on the coarse
# grid, then the exact one on every pixel.
_COARSE_SCHEDULE = (4.0, 2.0)
_FINE_SCHEDULE = (1.0,)
_HYPOTHESES = 16  # sampled 3-point planes that compete with the start on large images
SAMPLED_ABOVE_PX = 64


# -- input -------------------------------------------------------------------------------
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


# -- plane -------------------------------------------------------------------------------
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


# -- checks ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckResult:
    """One fast check: whether it fired, and the number it compared with its limit.

    Attributes
    ----------
    name
        The verdict this check gives when it fires ("crash", "no_contact", "debris").
    fired
        True when the image fails the check.
    value_m, limit_m
        The measured number and the limit it was compared with, in metres.
    """

    name: str
    fired: bool
    value_m: float
    limit_m: float


def _crash(height_range_m: float, mean_m: float) -> CheckResult:
    fired = height_range_m < CRASH_RANGE_M and mean_m > 0
    return CheckResult("crash", fired, height_range_m, CRASH_RANGE_M)


def _contact(mean_m: float, z_range_m: float) -> CheckResult:
    if not (np.isfinite(z_range_m) and z_range_m > 0):
        raise ValueError(f"z_range_m must be a positive number, got {z_range_m}")
    distance = abs(mean_m + z_range_m / 2)
    return CheckResult("no_contact", distance <= CONTACT_TOLERANCE_M, distance,
                       CONTACT_TOLERANCE_M)


def _debris(flat_range_m: float) -> CheckResult:
    return CheckResult("debris", flat_range_m >= DEBRIS_RANGE_M, flat_range_m, DEBRIS_RANGE_M)


def _range(image: np.ndarray) -> float:
    return float(np.maximum.reduce(image, axis=None) - np.minimum.reduce(image, axis=None))


def _mean(image: np.ndarray) -> float:
    return float(np.add.reduce(image, axis=None)) / image.size


def check_crash(image: np.ndarray) -> CheckResult:
    """Crashed tip: a perfectly flat image (max - min < 1e-25 m) with a positive mean.

    `value_m` is max - min of the raw image.
    """
    image = _validated(image)
    return _crash(_range(image), _mean(image))


def check_contact(image: np.ndarray, *, z_range_m: float) -> CheckResult:
    """Tip out of contact: the mean height is within 300 pm of the z reading -z_range/2.

    `value_m` is the distance of the mean from that reading; the check fires when it is
    at most `limit_m`.
    """
    return _contact(_mean(_validated(image)), z_range_m)


def check_debris(flattened: np.ndarray) -> CheckResult:
    """Debris: the flattened image spans 600 pm or more (`value_m` = max - min)."""
    return _debris(_range(_validated(flattened, "flattened image")))


@dataclass(frozen=True)
class ImageCheck:
    """Outcome of the fast, ML-free checks and the numbers behind it (metres).

    Attributes
    ----------
    verdict
        "ok" or the first check that fired, in the order crash, no_contact, debris.
    height_range_m, mean_m
        Max - min and mean of the raw image.
    flat_range_m
        Max - min after plane flattening (the debris number).
    contact_distance_m
        Distance of the mean from the out-of-contact reading -z_range/2.
    checks
        Every check's `CheckResult`, in the order they are applied.
    """

    verdict: str
    height_range_m: float
    mean_m: float
    flat_range_m: float = float("nan")
    contact_distance_m: float = float("nan")
    checks: tuple[CheckResult, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no check fired."""
        return self.verdict == "ok"

    @property
    def fired(self) -> CheckResult | None:
        """The check that decided the verdict, or None for a clean image."""
        return next((c for c in self.checks if c.fired), None)


def check_image(image: np.ndarray, *, z_range_m: float,
                flattened: np.ndarray | None = None) -> ImageCheck:
    """Crash, lost contact and debris checks of a raw height image, in DeepSPM's order.

    Parameters
    ----------
    image
        Raw heights in metres, 2-D.
    z_range_m
        Range of the z piezo; a tip out of contact reads -z_range_m / 2.
    flattened
        The image already flattened by `flatten_plane`, to save fitting it again.

    Returns
    -------
    ImageCheck
        The verdict and the numbers of every check.

    Notes
    -----
    DeepSPM measures the debris range on the raw image; here it is measured after the
    plane is removed, so that a tilted sample (a slope of 0.03 over a 10 nm frame already
    spans 300 pm per axis) is not taken for debris.
    """
    image = _validated(image)
    if flattened is None:
        flattened = image - _fit_plane(image, PLANE_THRESHOLD_M).evaluate(image.shape)
    else:
        flattened = _validated(flattened, "flattened image")
        if flattened.shape != image.shape:
            raise ValueError(f"flattened image has shape {flattened.shape}, "
                             f"the image {image.shape}")
    return _check(image, z_range_m, flattened)


def _check(image: np.ndarray, z_range_m: float, flattened: np.ndarray) -> ImageCheck:
    mean = _mean(image)
    checks = (_crash(_range(image), mean), _contact(mean, z_range_m), _debris(_range(flattened)))
    fired = next((c for c in checks if c.fired), None)
    return ImageCheck(
        verdict="ok" if fired is None else fired.name,
        height_range_m=checks[0].value_m,
        mean_m=mean,
        flat_range_m=checks[2].value_m,
        contact_distance_m=checks[1].value_m,
        checks=checks,
    )


# -- free area ---------------------------------------------------------------------------
def _diagonals(buffer: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """View of `buffer` (rows x (rows + cols - 1)) in which pixel (i, j) sits in column
    ``j - i + rows - 1``, so that every column of the buffer is one diagonal of the image."""
    rows, cols = shape
    size = buffer.itemsize
    return np.ndarray(shape, buffer.dtype, buffer=buffer, offset=(rows - 1) * size,
                      strides=((rows + cols - 2) * size, size))


def _reverse_cummin(values: np.ndarray, axis: int) -> np.ndarray:
    """Minimum of each element and all after it along `axis` (a new C-contiguous array)."""
    flip = (slice(None, None, -1),) if axis == 0 else (slice(None), slice(None, None, -1))
    result = np.empty_like(values)
    np.minimum.accumulate(values[flip], axis=axis, out=result[flip])
    return result


def square_sizes(free: np.ndarray) -> np.ndarray:
    """Side of the largest all-free square whose top-left pixel is (i, j), for every pixel.

    This is the table of the reference dynamic programme
    ``s[i, j] = 1 + min(s[i, j+1], s[i+1, j], s[i+1, j+1])`` on free pixels, computed
    without a pixel loop: with ``m = min(run of free pixels rightwards, downwards)``, the
    recurrence along a diagonal ``s_k = min(s_{k+1} + 1, m_k)`` unrolls to
    ``s_k = min_{l >= k}(m_l + l) - k``, a reverse cumulative minimum per diagonal.

    Parameters
    ----------
    free
        Boolean mask of free pixels, 2-D.

    Returns
    -------
    numpy.ndarray
        Integer square sides, 0 on blocked pixels.
    """
    free = np.asarray(free, dtype=bool)
    if free.ndim != 2 or free.size == 0:
        raise ValueError(f"free mask must be a non-empty 2-D array, got shape {free.shape}")
    rows, cols = free.shape
    # small images: numpy accumulates machine-size integers fastest; large ones: memory rules
    small = free.size <= 128 * 128 or 2 * (rows + cols) >= np.iinfo(np.int16).max
    dtype = np.intp if small else np.int16
    row_index, col_index, row_minus_col = _indices(free.shape, dtype)
    # next blocked pixel at or after (i, j) to the right and downwards (the edge counts)
    next_right = _reverse_cummin(np.where(free, dtype(cols), col_index), axis=1)
    next_down = _reverse_cummin(np.where(free, dtype(rows), row_index), axis=0)
    # m + i with m = min(run right, run down) = min(next_right - j, next_down - i)
    buffer = np.full((rows, rows + cols - 1), 2 * (rows + cols), dtype=dtype)
    along = _diagonals(buffer, free.shape)
    next_right += row_minus_col
    np.minimum(next_right, next_down, out=along)
    return _diagonals(_reverse_cummin(buffer, axis=0), free.shape) - row_index


@lru_cache(maxsize=16)
def _indices(shape: tuple[int, int], dtype: type) -> tuple[np.ndarray, ...]:
    """Row index (column vector), column index (row vector) and i - j, as `dtype`."""
    row_index = np.arange(shape[0], dtype=dtype)[:, None]
    col_index = np.arange(shape[1], dtype=dtype)[None, :]
    arrays = (row_index, col_index, row_index - col_index)
    for array in arrays:
        array.setflags(write=False)
    return arrays


def _free_mask(normalized: np.ndarray, tolerance: float, border_px: int) -> np.ndarray:
    """Pixels within `tolerance` of the plane (-1), outside a frame `border_px` wide."""
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a non-negative number, got {tolerance}")
    if isinstance(border_px, bool) or not isinstance(border_px, (int, np.integer)) \
            or border_px < 0:
        raise ValueError(f"border_px must be an integer >= 0, got {border_px!r}")
    free = np.abs(normalized + 1.0) <= tolerance
    if border_px:
        inner = np.zeros_like(free)
        inner[border_px:-border_px, border_px:-border_px] = True
        free &= inner
    return free


def _best_square(free: np.ndarray) -> tuple[int, int, int]:
    """Top-left (row, col) and side of the largest free square; first in row-major order."""
    sizes = square_sizes(free)
    first = int(np.argmax(sizes))
    row, col = divmod(first, free.shape[1])
    return row, col, int(sizes.flat[first])


def largest_free_square(normalized: np.ndarray, *, tolerance: float = FREE_TOLERANCE,
                        border_px: int = 0) -> tuple[float, float, int]:
    """Centre (row, col) and side in pixels of the largest square of free pixels.

    Parameters
    ----------
    normalized
        A flattened, normalised image (`normalize`): the plane sits at -1.
    tolerance
        A pixel is free where ``|normalized + 1| <= tolerance`` (0.1: within 10 pm).
    border_px
        Width of a frame that never counts as free; DeepSPM's finder uses 1.

    Returns
    -------
    row, col : float
        Centre of the square in pixel indices (``top_left + (side - 1) / 2``); the image
        centre when no pixel is free.
    side : int
        Side in pixels (0 when no pixel is free).

    Notes
    -----
    Same square as the reference dynamic programme (the first largest one in row-major
    order of its top-left pixel); the reference reports ``top_left + side / 2`` as centre,
    the corner-based coordinate of the same point.
    """
    normalized = _validated(normalized, "normalised image")
    return _centre(normalized.shape, _best_square(_free_mask(normalized, tolerance, border_px)))


def _centre(shape: tuple[int, ...], corner: tuple[int, int, int]) -> tuple[float, float, int]:
    """Centre and side of a square given by its top-left pixel and side."""
    row, col, side = corner
    if side == 0:
        return (shape[0] - 1) / 2, (shape[1] - 1) / 2, 0
    return row + (side - 1) / 2, col + (side - 1) / 2, side


@dataclass(frozen=True)
class FreeSquare:
    """The largest empty square of an image, where a conditioning action may go.

    Attributes
    ----------
    row, col
        Centre in pixel indices.
    size_px
        Side in pixels.
    size_nm
        Side in nm (``size_px * frame side / pixels``).
    x_nm, y_nm
        Centre relative to the centre of the frame, in nm (x along columns, y along rows).
    """

    row: float
    col: float
    size_px: int
    size_nm: float
    x_nm: float
    y_nm: float


def free_square(normalized: np.ndarray, *, size_nm: float, tolerance: float = FREE_TOLERANCE,
                border_px: int = 0) -> FreeSquare:
    """`largest_free_square` with its side and centre in nm, for a frame of side `size_nm`.

    Parameters
    ----------
    normalized
        A flattened, normalised square image.
    size_nm
        Side of the scanned frame in nm.
    tolerance, border_px
        As for `largest_free_square`.
    """
    return _free_square(_validated(normalized, "normalised image"), size_nm, tolerance,
                        border_px)


def _free_square(normalized: np.ndarray, size_nm: float, tolerance: float,
                 border_px: int) -> FreeSquare:
    if not (np.isfinite(size_nm) and size_nm > 0):
        raise ValueError(f"size_nm must be a positive number, got {size_nm}")
    rows, cols = normalized.shape
    if rows != cols:
        raise ValueError(f"a frame of side size_nm needs a square image, got {normalized.shape}")
    corner = _best_square(_free_mask(normalized, tolerance, border_px))
    row, col, side = _centre(normalized.shape, corner)
    pixel_nm = size_nm / cols
    return FreeSquare(row, col, side, side * pixel_nm,
                      (col - (cols - 1) / 2) * pixel_nm, (row - (rows - 1) / 2) * pixel_nm)


@lru_cache(maxsize=1)
def _default_actions() -> ActionTable:
    return load_actions()


def allowed_actions(free_nm: float, actions: ActionTable | None = None) -> np.ndarray:
    """Boolean mask over the action table: the actions whose required free side fits.

    Parameters
    ----------
    free_nm
        Side of the largest free square in nm.
    actions
        The action table; None uses the default DeepSPM table.
    """
    if not (np.isfinite(free_nm) and free_nm >= 0):
        raise ValueError(f"free_nm must be a non-negative number, got {free_nm}")
    return (actions if actions is not None else _default_actions()).allowed(free_nm)


# -- pipeline ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessedImage:
    """One image through the whole fast pipeline.

    Attributes
    ----------
    check
        Verdict and the numbers behind it.
    plane
        The robust plane that was removed.
    flattened, normalized
        The image minus the plane (m) and its DeepSPM normalisation.
    square
        Largest free square, in px and nm.
    allowed
        Boolean mask of the actions that fit in the free square.
    """

    check: ImageCheck
    plane: PlaneFit
    flattened: np.ndarray
    normalized: np.ndarray
    square: FreeSquare
    allowed: np.ndarray


def process_image(image: np.ndarray, *, size_nm: float, z_range_m: float,
                  actions: ActionTable | None = None, tolerance: float = FREE_TOLERANCE,
                  border_px: int = 0) -> ProcessedImage:
    """Check, flatten, normalise and find the free square of one raw image, fitting once.

    Parameters
    ----------
    image
        Raw heights in metres, square.
    size_nm
        Side of the scanned frame in nm.
    z_range_m
        Range of the z piezo (for the contact check).
    actions
        Action table for the allowed mask; None uses the default one.
    tolerance, border_px
        As for `largest_free_square`.
    """
    image = _validated(image)
    plane = _fit_plane(image, PLANE_THRESHOLD_M)
    flattened = image - plane.evaluate(image.shape)
    normalized = _normalize(flattened)
    square = _free_square(normalized, size_nm, tolerance, border_px)
    return ProcessedImage(
        check=_check(image, z_range_m, flattened),
        plane=plane,
        flattened=flattened,
        normalized=normalized,
        square=square,
        allowed=allowed_actions(square.size_nm, actions),
    )
