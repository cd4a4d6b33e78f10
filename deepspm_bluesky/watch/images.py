"""One STM image as the page shows it: levelled (the robust plane removed), then coloured."""

from __future__ import annotations

import io

import numpy as np
from matplotlib.image import imsave

from deepspm_bluesky.imaging import flatten_plane

COLORMAP = "afmhot"  # the usual STM topography colours
CONTRAST_PERCENTILES = (1.0, 99.5)  # a few spikes or holes never wash the rest out


def image_png(image: np.ndarray) -> bytes:
    """PNG bytes of a raw height image (m): plane removed, heights stretched to the colours.

    Row 0 is the lowest y (as every image here), so the PNG is flipped to put it at the
    bottom. An image that is not finite everywhere is drawn as it is, without levelling.
    """
    heights = np.asarray(image, dtype=np.float64)
    if np.isfinite(heights).all():
        heights = flatten_plane(heights)
    finite = heights[np.isfinite(heights)]
    low, high = np.percentile(finite, CONTRAST_PERCENTILES) if finite.size else (0.0, 1.0)
    buffer = io.BytesIO()
    imsave(buffer, heights[::-1], cmap=COLORMAP, vmin=low, vmax=max(high, low + 1e-15),
           format="png")
    return buffer.getvalue()
