"""`autonomous_survey`: scan, judge, condition and move on, for as long as asked."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Protocol

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.utils import MsgGenerator

from deepspm_bluesky.imaging import flatten_plane, largest_free_square, normalize
from deepspm_bluesky.navigation import Navigator

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
DEBRIS_RADIUS_NM = 50.0
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


def free_square_nm(image: np.ndarray, size_nm: float) -> float:
    """Side in nm of the largest empty square of the image (where an action may go)."""
    _, _, side_px = largest_free_square(normalize(flatten_plane(image)))
    return side_px * size_nm / image.shape[0]


def autonomous_survey(
    stm: STM,
    *,
    max_images: int = 100,
    mode: Literal["operational", "training"] = "operational",
    classifier: Callable[[np.ndarray], float] | None = None,
    agent: Agent | None = None,
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
        Callable returning P(good tip) for a raw image; None judges by the checks alone.
    agent
        Object with ``suggest(image, allowed) -> action index``; None picks at random.
    md
        Extra metadata for the start document.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    agent = agent if agent is not None else RandomAgent()
    _md = plan_metadata(
        "autonomous_survey", {"stm": stm, "max_images": max_images, "mode": mode}, md,
        detectors=[stm.name], num_points=max_images,
        hints={"dimensions": [([stm.scanner.x_nm.name], "primary")]},
    )
    nav = Navigator(stm.scanner.x_nm.limits[1] * 2)
    image_signals, action_log = primary_signals(), action_signals()
    rng = np.random.default_rng(0)

    def move_on():
        """Next free spot; a fresh approach area when this one is used up."""
        location = nav.next_location()
        if location is None:
            yield from bps.mv(stm.coarse, "y+")
            nav.new_area()
            location = nav.next_location()
        yield from bps.mv(stm.scanner.x_nm, location[0], stm.scanner.y_nm, location[1])
        nav.move_to(*location)

    def condition(image: np.ndarray, reason: str):
        allowed = stm.actions.allowed(free_square_nm(image, stm.scanner.size_nm.get()))
        name = stm.actions[agent.suggest(image, allowed)].name
        yield from condition_tip(stm, name, action_log, reason=reason)
        x, y = nav.position
        nav.forbid(x, y, stm.actions.get(name).forbid_radius_nm)

    def damage_tip():
        for index in rng.choice(stm.actions.reset_indices(), RESET_ACTIONS_IN_TRAINING):
            yield from condition_tip(stm, stm.actions[index].name, action_log, reason="reset")

    @bpp.run_decorator(md=_md)
    def inner():
        crashes = bad_in_row = debris_in_row = 0
        for _ in range(max_images):
            yield from move_on()
            image, verdict = yield from scan_image(stm, image_signals, classifier)
            crashes = crashes + 1 if verdict.check.verdict == "crash" else 0
            if crashes >= MAX_CONSECUTIVE_CRASHES:
                break
            yield from recover(stm, verdict.check, action_log)
            x, y = nav.position
            if verdict.check.verdict == "debris":
                debris_in_row += 1
                nav.forbid(x, y, DEBRIS_RADIUS_NM * 0.5 * math.sqrt(debris_in_row))
                continue
            debris_in_row = 0
            if not verdict.check.ok:
                continue
            if verdict.tip_good:
                bad_in_row = 0
                nav.forbid(x, y, stm.actions.get(MEASUREMENT_ACTION).forbid_radius_nm)
                if mode == "training":
                    yield from damage_tip()
                continue
            bad_in_row += 1
            if mode == "training" or bad_in_row >= BAD_IMAGES_BEFORE_CONDITIONING:
                yield from condition(image, reason="bad tip")
            else:
                nav.forbid(x, y, stm.actions.get(MEASUREMENT_ACTION).forbid_radius_nm)

    return (yield from inner())
