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

from .checks import (
    CONTACT_TOLERANCE_M,
    CRASH_RANGE_M,
    DEBRIS_RANGE_M,
    VERDICTS,
    CheckResult,
    ImageCheck,
    check_contact,
    check_crash,
    check_debris,
    check_image,
)
from .free_area import (
    FREE_TOLERANCE,
    FreeSquare,
    allowed_actions,
    free_square,
    largest_free_square,
    square_sizes,
)
from .pipeline import ProcessedImage, process_image
from .plane import (
    NORMALIZE_CLIP,
    NORMALIZE_SCALE_M,
    PLANE_THRESHOLD_M,
    PlaneFit,
    align_rows,
    fit_plane,
    flatten_plane,
    normalize,
)

__all__ = [
    "CONTACT_TOLERANCE_M", "CRASH_RANGE_M", "DEBRIS_RANGE_M", "FREE_TOLERANCE",
    "NORMALIZE_CLIP", "NORMALIZE_SCALE_M", "PLANE_THRESHOLD_M", "VERDICTS",
    "CheckResult", "FreeSquare", "ImageCheck", "PlaneFit", "ProcessedImage",
    "align_rows", "allowed_actions", "check_contact", "check_crash", "check_debris", "check_image",
    "fit_plane", "flatten_plane", "free_square", "largest_free_square", "normalize",
    "process_image", "square_sizes",
]
