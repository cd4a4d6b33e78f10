"""`autonomous_survey`: scan, judge, condition and move on, for as long as asked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.utils import MsgGenerator

from deepspm_bluesky.imaging import FreeSquare
from deepspm_bluesky.ml import TipClassifier
from deepspm_bluesky.navigation import CRASH_RADIUS_NM, Navigator

from ..devices import STM
from .metadata import plan_metadata
from .stubs import (
    action_signals,
    condition_tip,
    primary_signals,
    recover,
    scan_image,
)

MODES = ("operational", "training")
BAD_IMAGES_BEFORE_CONDITIONING = 10  # operational mode (DeepSPM)
RESET_ACTIONS_IN_TRAINING = 5
MAX_CONSECUTIVE_CRASHES = 2
MEASUREMENT_ACTION = "stall for measurement"


class Agent(Protocol):
    """What the survey needs from a conditioning agent."""

    def suggest(self, image: np.ndarray, allowed: np.ndarray) -> int: ...


class RandomAgent:
    """Picks uniformly among the allowed actions: DeepSPM's baseline policy."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def suggest(self, image: np.ndarray, allowed: np.ndarray) -> int:
        choices = np.flatnonzero(allowed)
        if not len(choices):
            raise ValueError("no action is allowed here")
        return int(self.rng.choice(choices))


def _navigator(stm: STM, navigation_file: str | None) -> Navigator:
    """A fresh grid over the piezo range, or the one saved in `navigation_file` (kept saved)."""
    area_nm = 2 * stm.scanner.half_range_nm
    if navigation_file is None:
        return Navigator(area_nm)
    return Navigator.resume(navigation_file, area_nm)


def autonomous_survey(
    stm: STM,
    *,
    max_images: int = 100,
    mode: Literal["operational", "training"] = "operational",
    classifier: Callable[[np.ndarray], float] | None = None,
    agent: Agent | None = None,
    navigation_file: str | None = None,
    md: dict | None = None,
) -> MsgGenerator:
    """Survey the sample: scan, judge every image, condition the tip when it goes bad.

    Parameters
    ----------
    stm
        The microscope (any backend).
    max_images
        Number of images to take (scans after a crash or lost contact count too).
    mode
        ``"operational"`` conditions after 10 bad images in a row; ``"training"`` conditions
        at once and damages a good tip again with 5 random reset actions.
    classifier
        Callable returning P(good tip) for a raw image; None uses the shipped
        `deepspm_bluesky.ml.TipClassifier.pretrained()`.
    agent
        Object with ``suggest(image, allowed) -> action index``; None picks at random.
    navigation_file
        File that keeps the navigation state (used ground, position); a survey given the
        same file continues where the last one stopped. None keeps it in memory only.
    md
        Extra metadata for the start document.

    Notes
    -----
    Per image, as DeepSPM (Krull et al., Commun. Phys. 3, 54 (2020)): a crash is cleaned
    (a second one in a row ends the survey), lost contact re-approached, debris avoided by
    growing forbidden discs (a new approach area after 250 in a row); a bad tip gets the
    agent's action at the centre of the largest empty square of the image.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    classifier = classifier if classifier is not None else TipClassifier.pretrained()
    agent = agent if agent is not None else RandomAgent()
    nav = _navigator(stm, navigation_file)
    _md = plan_metadata(
        "autonomous_survey",
        {"stm": stm, "max_images": max_images, "mode": mode, "navigation_file": navigation_file},
        md, detectors=[stm.name], num_points=max_images,
        hints={"dimensions": [([stm.scanner.x_nm.name], "primary")]},
    )
    image_log, action_log = primary_signals(), action_signals()
    rng = np.random.default_rng(0)

    def new_area():
        yield from bps.mv(stm.coarse, "y+")
        nav.new_area()

    def move_on():
        """Next free spot; a fresh approach area when this one is used up."""
        location = nav.next_location()
        if location is None:
            yield from new_area()
            location = nav.next_location()
        x_nm, y_nm = location
        yield from bps.mv(stm.scanner.x_nm, x_nm, stm.scanner.y_nm, y_nm)
        nav.move_to(x_nm, y_nm)

    def act(name: str, reason: str, square: FreeSquare | None = None):
        """Condition at the tip's place (or the free square's centre); forbid around it."""
        x_nm, y_nm = nav.position
        if square is not None:
            x_nm, y_nm = x_nm + square.x_nm, y_nm + square.y_nm
        yield from condition_tip(stm, name, action_log, reason=reason, x_nm=x_nm, y_nm=y_nm)
        nav.forbid(x_nm, y_nm, stm.actions.get(name).forbid_radius_nm)

    def measured():
        nav.forbid(*nav.position, stm.actions.get(MEASUREMENT_ACTION).forbid_radius_nm)

    def damage_tip():
        for index in rng.choice(stm.actions.reset_indices(), RESET_ACTIONS_IN_TRAINING):
            yield from act(stm.actions[index].name, "reset")

    @bpp.run_decorator(md=_md)
    def inner():
        crashes = bad_in_row = 0
        for _ in range(max_images):
            yield from move_on()
            image, judgement = yield from scan_image(stm, image_log, classifier)
            verdict = judgement.check.verdict
            crashes = crashes + 1 if verdict == "crash" else 0
            if crashes >= MAX_CONSECUTIVE_CRASHES:
                break
            yield from recover(stm, judgement.check, action_log)
            if verdict == "debris":
                nav.mark_debris()
                if nav.debris_limit_reached:
                    yield from new_area()
                continue
            nav.clear_debris()
            if verdict == "crash":
                nav.forbid(*nav.position, CRASH_RADIUS_NM)
            if not judgement.check.ok:
                continue
            if judgement.tip_good:
                bad_in_row = 0
                measured()
                if mode == "training":
                    yield from damage_tip()
                continue
            bad_in_row += 1
            if mode == "training" or bad_in_row >= BAD_IMAGES_BEFORE_CONDITIONING:
                index = agent.suggest(image, judgement.processed.allowed)
                yield from act(stm.actions[index].name, "bad tip", judgement.processed.square)
            else:
                measured()

    return (yield from inner())
