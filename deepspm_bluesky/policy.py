"""DeepSPM's operation loop as one state machine: a judgement in, the next steps out.

The survey plan only executes the steps this object returns (move, scan, recover, condition,
end), so the decisions are tested without a RunEngine and a killed survey resumes exactly:
`state` and `restore` carry every counter and the random state (the navigation grid saves
itself, see `deepspm_bluesky.navigation`). Rules from Krull et al., Commun. Phys. 3, 54
(2020), https://doi.org/10.1038/s42005-020-0317-3.

Examples
--------
>>> from deepspm_bluesky.actions import load_actions
>>> from deepspm_bluesky.navigation import Navigator
>>> policy = SurveyPolicy(Navigator(850.0), load_actions(), max_images=3)
>>> policy.next_frame()
[Move(x_nm=0.0, y_nm=0.0)]
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from .actions import ActionTable
from .judging import Judgement
from .navigation import CRASH_RADIUS_NM, Navigator

MODES = ("operational", "training")
BAD_IMAGES_BEFORE_CONDITIONING = 10  # operational mode (DeepSPM)
RESET_ACTIONS_IN_TRAINING = 5
MAX_CONSECUTIVE_CRASHES = 2
MAX_CONSECUTIVE_NO_CONTACT = 3  # approaches that did not bring the tip back: give up
MAX_EPISODE_ACTIONS = 100  # DeepSPM: an episode this long ends, in a new approach area
MEASUREMENT_ACTION = "stall for measurement"
NEW_AREA_ACTION = "new area"  # how the coarse move to a fresh approach area is recorded
STATE_FORMAT = "deepspm-bluesky survey policy"
STATE_VERSION = 1


# -- used ground: the one home of what an image or an action uses up ----------------------
def mark_image(nav: Navigator, actions: ActionTable, verdict: str, x_nm: float,
               y_nm: float) -> None:
    """Mark the ground an image of this verdict at (x, y) nm uses up: the policy's rule, and
    how a resumed survey or a watcher rebuilds the map from recorded images."""
    if verdict == "crash":
        nav.forbid(x_nm, y_nm, CRASH_RADIUS_NM)
    elif verdict == "debris":
        nav.mark_debris(x_nm, y_nm)
    elif verdict in ("good", "bad"):
        nav.clear_debris()
        nav.forbid(x_nm, y_nm, actions.get(MEASUREMENT_ACTION).forbid_radius_nm)


def mark_action(nav: Navigator, actions: ActionTable, name: str, x_nm: float, y_nm: float,
                outcome: str = "done") -> None:
    """Mark what a recorded action uses up: a fresh approach area, or the forbidden disc of
    an action of the table (a refused one, a tip clean or an approach uses nothing more)."""
    if name == NEW_AREA_ACTION:
        nav.new_area()
    elif name in actions.names and outcome != "refused":
        nav.forbid(x_nm, y_nm, actions.get(name).forbid_radius_nm)


# -- the steps the plan executes ---------------------------------------------------------
@dataclass(frozen=True)
class Move:
    """Move the scanner to (x, y) nm in the approach area, then scan."""

    x_nm: float
    y_nm: float


@dataclass(frozen=True)
class NewArea:
    """Coarse move to a fresh approach area (this one is used up)."""

    reason: str


@dataclass(frozen=True)
class Recover:
    """Heavy tip clean after a crash (``"clean"``) or re-approach (``"approach"``)."""

    command: str
    reason: str


@dataclass(frozen=True)
class Condition:
    """Ask for an action among `allowed`, to run at (x, y) nm.

    `chooser` is ``"agent"``, or ``"random"`` in the training episodes that compare the
    agent with a random policy (DeepSPM alternated them).
    """

    x_nm: float
    y_nm: float
    allowed: np.ndarray
    chooser: str = "agent"


@dataclass(frozen=True)
class Act:
    """Run action `index` of the table at (x, y) nm (training resets)."""

    index: int
    x_nm: float
    y_nm: float
    reason: str


@dataclass(frozen=True)
class EpisodeEnd:
    """A conditioning episode ended after `actions` actions chosen by `chooser`."""

    episode: int
    actions: int
    outcome: str
    chooser: str


@dataclass(frozen=True)
class End:
    """The survey ends with a Bluesky exit status and a reason."""

    exit_status: str
    reason: str


Step = Move | NewArea | Recover | Condition | Act | EpisodeEnd | End


@dataclass
class Counters:
    """Everything the loop counts; saved whole by `SurveyPolicy.state`."""

    images: int = 0  # images judged in this run
    crashes_in_row: int = 0
    no_contact_in_row: int = 0
    bad_in_row: int = 0
    episode: int = 0  # conditioning episodes started so far (all runs)
    episode_actions: int = 0  # actions in the open episode; 0 when none is open


class SurveyPolicy:
    """The decisions of one survey: when to clean, approach, condition, reset or stop.

    Parameters
    ----------
    navigator
        The approach-area grid; the policy moves on it and marks what is used.
    actions
        The action table (indices are the agent's action indices).
    max_images
        Images to take in this run (a whole number >= 1).
    mode
        ``"operational"`` conditions after 10 bad images in a row; ``"training"`` at once,
        and damages a good tip again with 5 random reset actions.
    seed
        Seed of the random reset actions.
    """

    def __init__(self, navigator: Navigator, actions: ActionTable, *, max_images: int,
                 mode: str = "operational", seed: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) \
                or max_images < 1:
            raise ValueError(f"max_images must be a whole number >= 1, got {max_images!r}")
        self.nav = navigator
        self.actions = actions
        self.max_images = int(max_images)
        self.mode = mode
        self.rng = np.random.default_rng(seed)
        self.counters = Counters()
        self.tally: Counter[str] = Counter()  # verdicts and actions by kind, for the summary
        self.end_requested: End | None = None

    # -- the loop ---------------------------------------------------------------------------
    def next_frame(self) -> list[Step]:
        """Where to scan next: `[Move]`, `[NewArea, Move]` or `[End]` when done."""
        if self.end_requested is not None:
            return [self.end_requested]
        if self.counters.images >= self.max_images:
            return [End("success", f"took the {self.max_images} images asked for")]
        steps: list[Step] = []
        location = self.nav.next_location()
        if location is None:
            steps.append(self._new_area("approach area used up"))
            location = self.nav.next_location()
        x_nm, y_nm = location
        self.nav.move_to(x_nm, y_nm)
        return [*steps, Move(x_nm, y_nm)]

    def judged(self, judgement: Judgement) -> list[Step]:
        """The steps after an image was judged (and recorded)."""
        c = self.counters
        c.images += 1
        verdict = judgement.verdict
        self.tally[f"image {verdict}"] += 1
        c.crashes_in_row = c.crashes_in_row + 1 if verdict == "crash" else 0
        c.no_contact_in_row = c.no_contact_in_row + 1 if verdict == "no_contact" else 0
        if c.crashes_in_row >= MAX_CONSECUTIVE_CRASHES:
            return [End("fail", f"{c.crashes_in_row} crashes in a row (image {c.images}): the "
                                "tip clean did not help; the tip needs a person")]
        if c.no_contact_in_row >= MAX_CONSECUTIVE_NO_CONTACT:
            return [End("fail", f"no tunnelling contact in {c.no_contact_in_row} images in a "
                                f"row (image {c.images}): approaching did not restore it")]
        if verdict in ("crash", "debris"):
            mark_image(self.nav, self.actions, verdict, *self.nav.position)
        if verdict == "crash":
            return [Recover("clean", "crash")]
        if verdict == "no_contact":
            return [Recover("approach", "no_contact")]
        if verdict == "debris":
            if self.nav.debris_limit_reached:
                return [self._new_area("debris everywhere")]
            return []
        self.nav.clear_debris()
        if judgement.tip_good:
            return self._good_tip()
        if not judgement.familiar and self.mode == "operational":
            self.tally["image unfamiliar"] += 1  # P(good) is a guess: never condition on it
            self._measured()
            return []
        return self._bad_tip(judgement)

    def acted(self, index: int, x_nm: float, y_nm: float) -> None:
        """An action of the table ran at (x, y) nm: forbid its disc, count it."""
        action = self.actions[index]
        mark_action(self.nav, self.actions, action.name, x_nm, y_nm)
        self.tally[f"action {action.kind}"] += 1
        if self.counters.episode_actions:
            self.counters.episode_actions += 1

    def recovered(self, command: str) -> None:
        """A tip clean or approach ran."""
        self.tally[f"recovery {command}"] += 1

    def request_end(self, exit_status: str, reason: str) -> None:
        """End the survey at the next frame (the STOP file, a full disk...)."""
        self.end_requested = End(exit_status, reason)

    # -- helpers ----------------------------------------------------------------------------
    def _new_area(self, reason: str) -> NewArea:
        mark_action(self.nav, self.actions, NEW_AREA_ACTION, 0.0, 0.0)
        self.tally["new approach area"] += 1
        return NewArea(reason)

    def _measured(self) -> None:
        mark_image(self.nav, self.actions, "good", *self.nav.position)  # good or bad alike

    def _good_tip(self) -> list[Step]:
        c = self.counters
        c.bad_in_row = 0
        steps: list[Step] = []
        if c.episode_actions:
            steps.append(self._end_episode("good tip"))
        self._measured()
        if self.mode == "training":
            x_nm, y_nm = self.nav.position
            resets = self.rng.choice(self.actions.reset_indices(), RESET_ACTIONS_IN_TRAINING)
            steps += [Act(int(i), x_nm, y_nm, "reset") for i in resets]
        return steps

    def _bad_tip(self, judgement: Judgement) -> list[Step]:
        c = self.counters
        c.bad_in_row += 1
        if self.mode == "operational" and c.bad_in_row < BAD_IMAGES_BEFORE_CONDITIONING:
            self._measured()
            return []
        steps: list[Step] = []
        if c.episode_actions > MAX_EPISODE_ACTIONS:
            steps += [self._end_episode(f"no good tip after {MAX_EPISODE_ACTIONS} actions"),
                      self._new_area("a conditioning episode ran too long")]
        if not c.episode_actions:  # 1 marks an open episode with no action yet
            c.episode += 1
            c.episode_actions = 1
        x_nm, y_nm = self.nav.position
        square = judgement.square
        if square is not None:
            x_nm, y_nm = x_nm + square.x_nm, y_nm + square.y_nm
        allowed = judgement.allowed
        if allowed is None:
            allowed = np.ones(len(self.actions), bool)
        return [*steps, Condition(x_nm, y_nm, np.asarray(allowed, bool), self.chooser)]

    @property
    def chooser(self) -> str:
        """Who chooses in the open episode: training alternates the agent and random."""
        if self.mode == "training" and self.counters.episode % 2 == 0:
            return "random"
        return "agent"

    def _end_episode(self, outcome: str) -> EpisodeEnd:
        c = self.counters
        end = EpisodeEnd(c.episode, c.episode_actions - 1, outcome, self.chooser)
        c.episode_actions = 0
        return end

    # -- state ------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts for the end of the survey: images, good-tip fraction, actions by kind."""
        good = self.tally["image good"]
        judged = good + self.tally["image bad"]
        return {"images": self.counters.images,
                "good_tip_fraction": good / judged if judged else math.nan,
                **{key.replace(" ", "_"): n for key, n in sorted(self.tally.items())}}

    def state(self) -> dict[str, Any]:
        """All the loop's state as JSON-ready data (`restore` takes it back)."""
        return {"format": STATE_FORMAT, "version": STATE_VERSION,
                "counters": vars(self.counters).copy(), "tally": dict(self.tally),
                "rng": self.rng.bit_generator.state}

    def restore(self, state: dict[str, Any], *, source: str = "policy state") -> None:
        """Continue from `state`; a ValueError names `source` and the bad field."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"{source}: not a {STATE_FORMAT} file")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{source}: version {state.get('version')!r}, this code reads "
                             f"version {STATE_VERSION}")
        counters = _checked_counts(state.get("counters"), source, "counters",
                                   set(vars(Counters())))
        tally = _checked_counts(state.get("tally", {}), source, "tally", None)
        rng = np.random.default_rng()
        try:
            rng.bit_generator.state = state["rng"]
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source}: field 'rng' is not a random state ({error})") from None
        counters["images"] = 0  # a new run counts its own images
        self.counters = Counters(**counters)
        self.tally = Counter(tally)
        self.rng = rng


def _checked_counts(data: object, source: str, field: str,
                    keys: set[str] | None) -> dict[str, int]:
    """`data` as {name: count >= 0}; with `keys`, exactly those names."""
    if not isinstance(data, dict):
        raise ValueError(f"{source}: field {field!r} must be a table of counts")
    if keys is not None and set(data) != keys:
        raise ValueError(f"{source}: field {field!r} must hold exactly {sorted(keys)}")
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{source}: field '{field}.{key}' must be a whole number >= 0, "
                             f"got {value!r}")
    return dict(data)
