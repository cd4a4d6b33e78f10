"""The STM tip: an apex made of a few protrusions, plus blur, instability and contact state.

States compose: a tip can be double *and* blunt. `Tip.state` names the dominant defect, and
`Tip.is_good` is the label the classifier learns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

STATES = ("good", "double", "blunt", "unstable", "contaminated", "crashed", "no_contact")
GHOST_VISIBLE_M = 0.6e-10  # a second apex this close to the first shows up as a ghost image
BLUR_VISIBLE_M = 0.35e-9
UNSTABLE_VISIBLE = 0.02
CONTRAST_VISIBLE = 0.3


@dataclass(frozen=True)
class Tip:
    """Tip geometry and condition.

    apexes
        (n, 3) array of protrusions (dx m, dy m, dz m); dz = 0 is the lowest apex, a larger
        dz lies further from the sample and images more weakly.
    blur_m
        radius of the effective apex (Gaussian sigma) in metres.
    instability
        probability per scan line of a jump/streak.
    contrast
        relative change of apparent heights from an adsorbate picked up (0 = clean).
    """

    apexes: np.ndarray = field(default_factory=lambda: np.zeros((1, 3)))
    blur_m: float = 0.1e-9
    instability: float = 0.0
    contrast: float = 0.0
    crashed: bool = False
    in_contact: bool = True

    @property
    def ghost_apexes(self) -> np.ndarray:
        """The protrusions besides the lowest one that are close enough to image."""
        return self.apexes[1:][self.apexes[1:, 2] < GHOST_VISIBLE_M]

    @property
    def state(self) -> str:
        """The dominant condition, one of `STATES`."""
        if self.crashed:
            return "crashed"
        if not self.in_contact:
            return "no_contact"
        if len(self.ghost_apexes):
            return "double"
        if self.blur_m > BLUR_VISIBLE_M:
            return "blunt"
        if self.instability > UNSTABLE_VISIBLE:
            return "unstable"
        if abs(self.contrast) > CONTRAST_VISIBLE:
            return "contaminated"
        return "good"

    @property
    def is_good(self) -> bool:
        return self.state == "good"

    def evolve(self, **changes) -> Tip:
        return replace(self, **changes)


def random_tip(rng: np.random.Generator, state: str) -> Tip:
    """A tip drawn from the family of `state` (used by actions and to build data sets)."""
    if state not in STATES:
        raise ValueError(f"unknown tip state {state!r}; known: {STATES}")
    good = Tip(blur_m=rng.uniform(0.05, 0.2) * 1e-9, contrast=rng.uniform(-0.1, 0.1))
    if state == "good":
        return good
    if state == "double":
        n = rng.integers(1, 3)
        r = rng.uniform(0.8, 3.0, n) * 1e-9
        phi = rng.uniform(0, 2 * np.pi, n)
        ghosts = np.stack([r * np.cos(phi), r * np.sin(phi), rng.uniform(0, 0.4, n) * 1e-10], 1)
        return good.evolve(apexes=np.vstack([np.zeros((1, 3)), ghosts]))
    if state == "blunt":
        return good.evolve(blur_m=rng.uniform(0.5, 1.5) * 1e-9)
    if state == "unstable":
        return good.evolve(instability=rng.uniform(0.05, 0.3))
    if state == "contaminated":
        return good.evolve(contrast=rng.choice([-1, 1]) * rng.uniform(0.5, 0.9))
    if state == "crashed":
        return good.evolve(crashed=True)
    return good.evolve(in_contact=False)
