"""The largest empty square of an image, where a conditioning action may go."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..actions import ActionTable, load_actions
from .validation import _validated

FREE_TOLERANCE = 0.1  # normalised units: within 10 pm of the plane


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
