"""The whole per-image pipeline in one pass: check, flatten, normalise, free square."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..actions import ActionTable
from .checks import ImageCheck, _check
from .free_area import FREE_TOLERANCE, FreeSquare, _free_square, allowed_actions
from .plane import PLANE_THRESHOLD_M, PlaneFit, _fit_plane, _normalize
from .validation import _validated


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
