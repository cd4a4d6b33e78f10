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


# -- frames of any size ----------------------------------------------------------------------
INPUT_FRAME_NM = (5.0, 25.0)  # frame sides the shipped classifier was trained on (64 px)


def network_input(image: np.ndarray, *, pixel_nm: float | None = None) -> np.ndarray:
    """The network input (64 x 64, normalised, float32) of one raw frame of any size.

    Parameters
    ----------
    image
        Raw heights in metres, 2-D, any number of pixels (at least 8 a side).
    pixel_nm
        Pixel size in nm (the frame's side / its pixels). Used explicitly: a frame larger
        than ``INPUT_FRAME_NM[1]`` (25 nm) is cut to its central 25 nm square first, since
        tip defects (ghosts 1-3 nm apart, blur 0.3-1 nm) vanish in coarser pixels. None:
        the whole frame is used as it is.

    Returns
    -------
    numpy.ndarray
        float32 (64, 64): the frame flattened at full resolution (`flatten_plane`), area-
        averaged (or linearly interpolated, for frames under 64 px) to 64 x 64, then
        normalised (`normalize`).

    Notes
    -----
    This is the one way images reach the network: the network always sees a whole square
    frame at 64 x 64, so its input pixel is ``side_nm / 64``. The classifier was trained on
    frames of 5 to 25 nm (`INPUT_FRAME_NM`); `TipClassifier.familiar` calls a frame outside
    that range unfamiliar when its pixel size is given. A non-square frame is cut to its
    central square. A 64 x 64 frame passes unchanged through the resampling, so this is
    exactly `preprocess` for DeepSPM's 64 px frames.
    """
    from scipy import ndimage

    frame = np.asarray(image, dtype=np.float64)
    if frame.ndim != 2 or min(frame.shape) < 8:
        raise ValueError(f"expected one 2-D frame of at least 8 x 8 pixels, got {frame.shape}")
    if not np.all(np.isfinite(frame)):
        raise ValueError("the frame holds NaN/inf pixels")
    if pixel_nm is not None and not pixel_nm > 0:
        raise ValueError(f"pixel_nm must be positive, got {pixel_nm}")
    side = min(frame.shape)
    if pixel_nm is not None and side * pixel_nm > INPUT_FRAME_NM[1]:
        side = max(8, int(round(INPUT_FRAME_NM[1] / pixel_nm)))
    top, left = (frame.shape[0] - side) // 2, (frame.shape[1] - side) // 2
    flat = flatten_plane(frame[top:top + side, left:left + side])
    if side != PIXELS:
        if side > PIXELS:  # area average: a box of the output pixel's size, then sample
            flat = ndimage.uniform_filter(flat, size=side / PIXELS, mode="nearest")
        centres = (np.arange(PIXELS) + 0.5) * side / PIXELS - 0.5
        flat = ndimage.map_coordinates(flat, np.meshgrid(centres, centres, indexing="ij"),
                                       order=1, mode="nearest")
    return normalize(flat).astype(np.float32)


def frame_side_nm(image: np.ndarray, pixel_nm: float) -> float:
    """Side of the square the network sees of `image` (nm), after `network_input`'s cut."""
    return min(min(np.shape(image)) * pixel_nm, INPUT_FRAME_NM[1])
