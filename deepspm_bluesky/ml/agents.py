"""The conditioning-agent protocol (ask for an action, tell the outcome) and the random baseline.

Modelled on bluesky-adaptive's ``ask``/``tell`` pair: the survey asks `suggest` for an action
when the tip is bad and tells `observe` what came of it. An agent knows nothing of Bluesky;
what `observe` learned is returned as data the plan can record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


class NoActionAllowed(ValueError):
    """The allowed mask admits no action: there is nothing to suggest."""


@dataclass(frozen=True)
class Transition:
    """One conditioning step as the agent learns from it.

    `image` (raw heights in metres) and `allowed` (boolean mask over the action table) are
    what the action was chosen on; `next_image`/`next_allowed` what the rescan showed;
    `done` is True when the episode ended (the tip was judged good).
    """

    image: np.ndarray
    allowed: np.ndarray
    action: int
    reward: float
    next_image: np.ndarray
    next_allowed: np.ndarray
    done: bool


@runtime_checkable
class Agent(Protocol):
    """What the survey needs from a conditioning agent."""

    def suggest(self, image: np.ndarray, allowed: np.ndarray) -> int:
        """Index of the action to take; raises `NoActionAllowed` when `allowed` is all False."""

    def observe(self, transition: Transition) -> dict[str, float]:
        """Learn from one transition; return what was learned (e.g. a loss), possibly empty."""


def allowed_indices(allowed: np.ndarray) -> np.ndarray:
    """Indices where the boolean mask `allowed` is True; `NoActionAllowed` when none is."""
    choices = np.flatnonzero(np.asarray(allowed, dtype=bool))
    if not len(choices):
        raise NoActionAllowed("no conditioning action is allowed here (no free area)")
    return choices


class RandomAgent:
    """Picks uniformly among the allowed actions: DeepSPM's baseline policy. Learns nothing.

    Its random state can be saved and restored (`save`, `restore`), so a resumed survey
    continues the same sequence of choices.
    """

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def suggest(self, image: np.ndarray, allowed: np.ndarray) -> int:
        return int(self.rng.choice(allowed_indices(allowed)))

    def observe(self, transition: Transition) -> dict[str, float]:
        return {}

    def save(self, path: str | Path) -> None:
        """Write the random state to `path` (JSON)."""
        Path(path).write_text(json.dumps(self.rng.bit_generator.state))

    def restore(self, path: str | Path) -> None:
        """Continue from the random state saved in `path`."""
        try:
            self.rng.bit_generator.state = json.loads(Path(path).read_text())
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise ValueError(f"{path}: not a saved RandomAgent state ({error})") from None


class FixedActionAgent:
    """Always the same action: the "best single action" baseline. Learns nothing.

    When its action is not allowed (it needs more free area than the image has), it takes
    the allowed action nearest to it in the table (the lower index on a tie), which for
    DeepSPM's table is the next shallower dip.

    Parameters
    ----------
    action
        Index of the action in the table.
    """

    def __init__(self, action: int) -> None:
        if action < 0:
            raise ValueError(f"action index must be >= 0, got {action}")
        self.action = int(action)

    def __repr__(self) -> str:
        return f"FixedActionAgent({self.action})"

    def suggest(self, image: np.ndarray, allowed: np.ndarray) -> int:
        choices = allowed_indices(allowed)
        return int(choices[np.argmin(np.abs(choices - self.action))])

    def observe(self, transition: Transition) -> dict[str, float]:
        return {}
