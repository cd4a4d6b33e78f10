"""The fast, ML-free checks of one image: crash, lost contact, debris."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .plane import PLANE_THRESHOLD_M, _fit_plane
from .validation import _validated

CRASH_RANGE_M = 1e-25  # a crashed tip returns a perfectly flat image ...
CONTACT_TOLERANCE_M = 3e-10  # ... a lost one reads -z_range/2 to within this
DEBRIS_RANGE_M = 6e-10  # 600 pm of height range after flattening: debris
VERDICTS = ("ok", "crash", "no_contact", "debris")


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
