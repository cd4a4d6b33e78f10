"""Judging the tip from image files: the `classify` command's logic.

Each image of a file goes through what the survey does (the fast checks, then the
classifier on `preprocessing.network_input`), and whether the classifier knows images like
it (`TipClassifier.familiar`). Files: Nanonis ``.sxm`` (read by `deepspm_bluesky.spmfiles`,
with the pixel size they record) and ``.npy`` (one image or a stack of raw heights in
metres; their frame side must be given to use the pixel size).

A constant-height image (the Z controller off) records its contrast in the current, not in
Z: it says nothing a topograph-trained classifier can judge, and is reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepspm_bluesky.imaging import check_image, flatten_plane
from deepspm_bluesky.spmfiles import read_sxm

from .classifier import TipClassifier
from .preprocessing import frame_side_nm, network_input

CONSTANT_HEIGHT = "constant height"
UNFAMILIAR = "unfamiliar"
INCOMPLETE = "incomplete"
DEFAULT_Z_RANGE_M = 1e-6  # only the no-contact check uses it (a tip at -z_range / 2)


@dataclass(frozen=True)
class ImageVerdict:
    """What `classify_file` says about one image.

    Attributes
    ----------
    path, index
        The file and the image's index in it.
    frame_nm
        Side of the frame (None if unknown).
    check
        Verdict of the fast checks (crash, no contact, debris, ok), or "" if not run.
    p_good
        P(good tip), NaN where the classifier was not asked.
    familiar
        Whether the image is like the classifier's training images (None if unknown).
    verdict
        "good" or "bad" (P(good) against the classifier's threshold), the check's verdict
        when a check failed, "unfamiliar" when the classifier does not know such images,
        "constant height" or "incomplete".
    """

    path: Path
    index: int
    frame_nm: float | None
    check: str
    p_good: float
    familiar: bool | None
    verdict: str

    def line(self) -> str:
        """One line of the command's table."""
        frame = "?" if self.frame_nm is None else f"{self.frame_nm:.3g} nm"
        p = "-" if np.isnan(self.p_good) else f"{self.p_good:.3f}"
        known = {None: "-", True: "yes", False: "no"}[self.familiar]
        return (f"{self.path.name}[{self.index}]  frame {frame:>8}  checks {self.check or '-':9}"
                f"  P(good) {p:>5}  familiar {known:3}  -> {self.verdict}")


def read_images(path: str | Path, *, frame_nm: float | None = None
                ) -> tuple[np.ndarray, float | None, bool]:
    """Raw height images (n, h, w) of a file, their pixel size in nm, and whether Z was
    regulated (False: constant height).

    Raises
    ------
    ValueError
        For an unknown file type or an unreadable file.
    """
    path = Path(path)
    if path.suffix.lower() == ".sxm":
        scan = read_sxm(path)
        return scan.z_m[None], scan.pixel_size_m[0] * 1e9, scan.z_controller_on
    if path.suffix.lower() == ".npy":
        try:
            stack = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ValueError(f"{path}: not a readable .npy image ({error})") from None
        stack = np.asarray(stack, dtype=np.float64)
        if stack.ndim == 2:
            stack = stack[None]
        if stack.ndim != 3:
            raise ValueError(f"{path}: expected one image or a stack, got shape {stack.shape}")
        pixel_nm = None if frame_nm is None else frame_nm / min(stack.shape[1:])
        return stack, pixel_nm, True
    raise ValueError(f"{path}: unknown file type {path.suffix!r} (known: .sxm, .npy)")


def classify_file(path: str | Path, classifier: TipClassifier, *,
                  frame_nm: float | None = None,
                  z_range_m: float = DEFAULT_Z_RANGE_M) -> list[ImageVerdict]:
    """Checks, P(good), familiarity and verdict of every image in a file.

    Parameters
    ----------
    path
        A ``.sxm`` or ``.npy`` file.
    classifier
        The classifier that judges (e.g. `TipClassifier.pretrained()`).
    frame_nm
        Frame side of ``.npy`` images (``.sxm`` files record it).
    z_range_m
        Z range of the instrument, for the no-contact check.
    """
    path = Path(path)
    images, pixel_nm, regulated = read_images(path, frame_nm=frame_nm)
    out = []
    for index, image in enumerate(images):
        side = None if pixel_nm is None else min(image.shape) * pixel_nm
        if not regulated:
            out.append(ImageVerdict(path, index, side, "", float("nan"), None, CONSTANT_HEIGHT))
            continue
        rows = np.isfinite(image).all(axis=1)
        if not rows.all():  # an aborted scan: judge the recorded lines if most are there
            if rows.mean() < 0.5:
                out.append(ImageVerdict(path, index, side, "", float("nan"), None, INCOMPLETE))
                continue
            image = image[rows]
        out.append(_judge(path, index, image, pixel_nm, side, classifier, z_range_m))
    return out


def _judge(path: Path, index: int, image: np.ndarray, pixel_nm: float | None,
           side: float | None, classifier: TipClassifier, z_range_m: float) -> ImageVerdict:
    check = check_image(image, z_range_m=z_range_m, flattened=flatten_plane(image)).verdict
    data = network_input(image, pixel_nm=pixel_nm)
    p_good = float(classifier.predict(data, normalized=True)[0])
    familiar = None
    if classifier.familiarity is not None:
        seen = None if pixel_nm is None else frame_side_nm(image, pixel_nm)
        familiar = bool(classifier.familiar(data, normalized=True, frame_nm=seen)[0])
    if check != "ok":
        verdict = check
    elif familiar is False:
        verdict = UNFAMILIAR
    else:
        verdict = "good" if p_good >= classifier.threshold else "bad"
    return ImageVerdict(path, index, side, check, p_good, familiar, verdict)
