"""Judging one image: the fast checks first, then the classifier — the one home of both rules.

The survey plan and the `LiveTipClassification` callback both judge through `judge`, so an
image gets the same verdict wherever it is judged. No torch import: the classifier is any
callable from a raw image to P(good tip).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .actions import ActionTable
from .imaging import FreeSquare, check_image, process_image

GOOD_TIP_THRESHOLD = 0.9  # DeepSPM counts the tip as good when P(good) >= 0.9
Classifier = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Judgement:
    """What was concluded about one image.

    Attributes
    ----------
    check
        Verdict of the fast checks: "ok", "crash", "no_contact" or "debris"; "" when they
        could not run (z range unknown).
    p_good
        P(good tip) from the classifier; NaN when it was not asked (a check fired).
    square
        Largest free square (where an action may go); None when not looked for.
    allowed
        Boolean mask of the actions that fit in `square`; None when not looked for.
    familiar
        False when the classifier says the image is unlike its training data, so P(good)
        is a guess (the survey does not condition on it in operational mode).
    """

    check: str
    p_good: float
    square: FreeSquare | None = None
    allowed: np.ndarray | None = None
    familiar: bool = True

    @property
    def tip_good(self) -> bool:
        """Checks passed (or not run) and P(good) >= `GOOD_TIP_THRESHOLD`."""
        return self.check in ("ok", "") and tip_is_good(self.p_good)

    @property
    def verdict(self) -> str:
        """`good`/`bad` for an image the checks passed, else the check that fired."""
        if self.check not in ("ok", ""):
            return self.check
        return "good" if self.tip_good else "bad"


def tip_is_good(p_good: float, threshold: float = GOOD_TIP_THRESHOLD) -> bool:
    """True when P(good) reaches the threshold (NaN never does)."""
    return bool(p_good >= threshold)


def judge(image: np.ndarray, classifier: Classifier, *, z_range_m: float | None,
          size_nm: float | None = None, actions: ActionTable | None = None) -> Judgement:
    """Judge a raw image (metres): fast checks, then the classifier if they passed.

    Parameters
    ----------
    image
        Raw heights in metres, 2-D.
    classifier
        Callable from a raw image to P(good tip); one with ``predict_familiar`` (the
        `TipClassifier`) also says whether the image is like its training data.
    z_range_m
        Range of the z piezo; None skips the checks (the classifier alone judges).
    size_nm
        Frame side; given, the free square and the allowed actions are found too.
    actions
        Action table for the allowed mask (default table when None).
    """
    if z_range_m is None:
        return Judgement("", *_classify(classifier, image))
    if size_nm is None:
        check, square, allowed = check_image(image, z_range_m=z_range_m).verdict, None, None
        normalized = None
    else:
        processed = process_image(image, size_nm=size_nm, z_range_m=z_range_m, actions=actions)
        check, square, allowed = processed.check.verdict, processed.square, processed.allowed
        normalized = processed.normalized
    p_good, familiar = _classify(classifier, image, normalized) if check == "ok" \
        else (math.nan, True)
    return Judgement(check, p_good, square, allowed, familiar)


def _classify(classifier: Classifier, image: np.ndarray,
              normalized: np.ndarray | None = None) -> tuple[float, bool]:
    """P(good) and familiarity, in one pass where the classifier offers `predict_familiar`
    (`deepspm_bluesky.ml.TipClassifier`, which is then given the image the pipeline already
    flattened and normalised, as its own preprocessing would); any other callable is given
    the raw image and taken as familiar."""
    predict_familiar = getattr(classifier, "predict_familiar", None)
    if predict_familiar is None:
        return float(classifier(image)), True
    if normalized is None:
        p_good, familiar = predict_familiar(image)
    else:
        p_good, familiar = predict_familiar(normalized, normalized=True)
    return float(p_good[0]), bool(familiar[0])
