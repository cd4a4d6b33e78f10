"""Turn raw STM height images (metres) into the normalised network input of the pipeline.

The classifier sees exactly what the survey plan sees: `imaging.flatten_plane`, then
`imaging.normalize` (DeepSPM: clip(h / 1e-10 - 1, -1.5, 1.5)).
"""

from __future__ import annotations

import numpy as np

from deepspm_bluesky.imaging import flatten_plane, normalize

PIXELS = 64
NORMALIZED_LIMIT = 1.5
# Raw heights in metres are tiny numbers (a 1 um z range is 1e-6); normalised images lie in
# [-1.5, 1.5] with the plane at -1. Anything larger than this is taken to be normalised.
RAW_HEIGHT_LIMIT_M = 1e-3


def as_image_stack(images: np.ndarray, *, pixels: int = PIXELS) -> np.ndarray:
    """Check shape and values; return a float64 stack of shape (n, pixels, pixels).

    Raises
    ------
    ValueError
        If the images are not (pixels, pixels) or (n, pixels, pixels), or hold NaN/inf.
    """
    stack = np.asarray(images, dtype=np.float64)
    if stack.ndim == 2:
        stack = stack[np.newaxis]
    if stack.ndim != 3 or stack.shape[1:] != (pixels, pixels):
        raise ValueError(
            f"expected images of shape ({pixels}, {pixels}) or (n, {pixels}, {pixels}), "
            f"got {np.shape(images)}"
        )
    bad = ~np.isfinite(stack)
    if bad.any():
        raise ValueError(f"images hold {np.count_nonzero(bad)} NaN/inf pixels")
    return stack


def looks_normalized(stack: np.ndarray) -> bool:
    """True if the values are those of normalised images rather than heights in metres."""
    return bool(stack.size) and float(np.max(np.abs(stack))) > RAW_HEIGHT_LIMIT_M


def preprocess(images: np.ndarray, *, normalized: bool | None = None,
               pixels: int = PIXELS) -> np.ndarray:
    """Network input, float32 (n, pixels, pixels), from raw or already normalised images.

    Parameters
    ----------
    images
        Raw heights in metres or normalised images, shape (pixels, pixels) or
        (n, pixels, pixels).
    normalized
        True: the images are already normalised; False: they are raw heights; None (default):
        decide from the values (raw heights are all below 1e-3 in magnitude).
    pixels
        Side of the images the network expects.

    Returns
    -------
    numpy.ndarray
        Normalised images, float32, shape (n, pixels, pixels).

    Raises
    ------
    ValueError
        For a wrong shape, NaN/inf pixels, or "normalised" images outside [-1.5, 1.5].
    """
    stack = as_image_stack(images, pixels=pixels)
    if normalized is None:
        normalized = looks_normalized(stack)
    if normalized:
        peak = float(np.max(np.abs(stack)))
        if peak > NORMALIZED_LIMIT + 1e-6:
            raise ValueError(
                f"normalised images must lie in [-1.5, 1.5], found |value| = {peak:.3g}; "
                "pass raw heights in metres (normalized=False) or normalise them first"
            )
        return stack.astype(np.float32)
    return np.stack([normalize(flatten_plane(image)) for image in stack]).astype(np.float32)
