"""The STM tip: an apex made of a few protrusions, plus blur, instability and contact state.

Defects compose: a tip can be double *and* blunt *and* contaminated, and the image shows all
of them. `Tip.state` names the dominant defect (the label a classifier learns), `Tip.defects`
lists every defect, and `Tip.is_good` is ``state == "good"``.

How each property shapes an image (see `deepspm_bluesky.sim.render`):

- ``apexes``: the image is the upper envelope of the sample seen by each protrusion, shifted
  by its lateral offset and lowered by its retraction, so a second protrusion close to the
  lowest one prints a ghost copy of every feature taller than its retraction ("double").
- ``blur_m``: the effective apex radius; features are convolved with a Gaussian ("blunt").
- ``instability``: per-line probability of a jump of the tip height or a streak ("unstable").
- ``contrast``: relative change of the apparent height of adsorbates after the tip picked
  something up; below -1 molecules appear as depressions ("contaminated"). On the surface
  families (`sim.families`) the picked-up adsorbate also hops on and off the apex, so the
  contrast switches in bands of scan lines (`render.hopping_rows`) whatever the surface.
- ``crashed``: the tip is stuck in the sample and the image is perfectly flat.
- ``in_contact``: out of tunnelling contact the z piezo sits at its retracted limit.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

STATES = ("good", "double", "blunt", "unstable", "contaminated", "crashed", "no_contact")
BAD_STATES = ("double", "blunt", "unstable", "contaminated")
GHOST_VISIBLE_M = 0.8e-10  # a protrusion retracted less than this prints ghosts of molecules
BLUR_VISIBLE_M = 0.35e-9
UNSTABLE_VISIBLE = 0.02
CONTRAST_VISIBLE = 0.3


@dataclass(frozen=True, eq=False)
class Tip:
    """Tip geometry and condition.

    Parameters
    ----------
    apexes
        (n, 3) array of protrusions (dx m, dy m, dz m); the first is the lowest, at (0, 0, 0);
        a larger dz lies further from the sample and images only features taller than dz.
    blur_m
        Radius (Gaussian sigma) of the effective apex in metres.
    instability
        Probability per scan line of a jump of the tip height or a streak.
    contrast
        Relative change of the apparent height of adsorbates (0 = clean tip).
    crashed
        The tip is stuck in the sample.
    in_contact
        The z controller is tunnelling (False: retracted to the end of the z range).
    """

    apexes: np.ndarray = field(default_factory=lambda: np.zeros((1, 3)))
    blur_m: float = 0.1e-9
    instability: float = 0.0
    contrast: float = 0.0
    crashed: bool = False
    in_contact: bool = True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tip):
            return NotImplemented
        return np.array_equal(self.apexes, other.apexes) and all(
            getattr(self, f) == getattr(other, f)
            for f in ("blur_m", "instability", "contrast", "crashed", "in_contact"))

    __hash__ = None  # mutable array inside: not hashable

    @property
    def ghost_apexes(self) -> np.ndarray:
        """The protrusions besides the lowest one that are close enough to print ghosts."""
        return self.apexes[1:][self.apexes[1:, 2] < GHOST_VISIBLE_M]

    @property
    def defects(self) -> tuple[str, ...]:
        """Every defect the tip has, in the order of `STATES` (empty for a good tip)."""
        found = {
            "crashed": self.crashed,
            "no_contact": not self.in_contact,
            "double": len(self.ghost_apexes) > 0,
            "blunt": self.blur_m > BLUR_VISIBLE_M,
            "unstable": self.instability > UNSTABLE_VISIBLE,
            "contaminated": abs(self.contrast) > CONTRAST_VISIBLE,
        }
        return tuple(s for s in STATES if found.get(s, False))

    @property
    def state(self) -> str:
        """The dominant condition, one of `STATES`.

        Priority: crashed, no_contact, double, blunt, unstable, contaminated, good.
        """
        for state in ("crashed", "no_contact", *BAD_STATES):
            if state in self.defects:
                return state
        return "good"

    @property
    def is_good(self) -> bool:
        """True when the tip has no defect at all (the classifier's positive label)."""
        return self.state == "good"

    def evolve(self, **changes) -> Tip:
        """A copy with some fields changed; apexes are re-centred on the lowest protrusion."""
        tip = replace(self, **changes)
        return replace(tip, apexes=_recentred(np.asarray(tip.apexes, dtype=float)))


def _recentred(apexes: np.ndarray) -> np.ndarray:
    """Apexes ordered lowest first, with the lowest at (0, 0, 0)."""
    apexes = apexes[np.argsort(apexes[:, 2], kind="stable")]
    return apexes - apexes[0]


def good_tip(rng: np.random.Generator) -> Tip:
    """A sharp, clean, stable tip; one in three carries a retracted second protrusion."""
    apexes = np.zeros((1, 3))
    if rng.random() < 1 / 3:
        r, phi = rng.uniform(0.8, 3.0) * 1e-9, rng.uniform(0, 2 * np.pi)
        apexes = np.array([[0, 0, 0], [r * np.cos(phi), r * np.sin(phi),
                                       rng.uniform(4, 8) * 1e-10]])
    return Tip(apexes=apexes, blur_m=rng.uniform(0.05, 0.2) * 1e-9,
               contrast=rng.uniform(-0.1, 0.1))


def ghost_apexes(rng: np.random.Generator, n: int) -> np.ndarray:
    """`n` protrusions 0.8-3 nm beside the apex, retracted by less than 0.5 Angstrom."""
    r = rng.uniform(0.8, 3.0, n) * 1e-9
    phi = rng.uniform(0, 2 * np.pi, n)
    return np.stack([r * np.cos(phi), r * np.sin(phi), rng.uniform(0, 0.5, n) * 1e-10], 1)


def random_tip(rng: np.random.Generator, state: str) -> Tip:
    """A tip drawn from the family of `state`; its `.state` is `state`.

    Bad tips carry their own defect and, sometimes, milder ones below the visibility
    thresholds, so that images of one state are not all alike.
    """
    if state not in STATES:
        raise ValueError(f"unknown tip state {state!r}; known: {STATES}")
    good = good_tip(rng)
    if state == "good":
        return good
    if state == "double":
        ghosts = ghost_apexes(rng, int(rng.integers(1, 3)))
        return good.evolve(apexes=np.vstack([np.zeros((1, 3)), ghosts]),
                           blur_m=rng.uniform(0.05, 0.3) * 1e-9)
    if state == "blunt":
        return good.evolve(blur_m=rng.uniform(0.5, 1.2) * 1e-9)
    if state == "unstable":
        return good.evolve(instability=rng.uniform(0.08, 0.3))
    if state == "contaminated":
        brighter = rng.uniform(0.5, 1.0)
        inverted = -rng.uniform(1.4, 2.0)  # adsorbates appear as depressions
        return good.evolve(contrast=brighter if rng.random() < 0.5 else inverted)
    if state == "crashed":
        return good.evolve(crashed=True)
    return good.evolve(in_contact=False)


def perturbed(tip: Tip, rng: np.random.Generator, strength: float) -> Tip:
    """A small random change of every property; `strength` in [0, 1] scales it.

    Protrusions move laterally and vertically (a retracted one can come forward and print
    ghosts, a ghost can retract), the apex radius changes by a factor, adsorbates shift the
    contrast, and the stability changes.
    """
    n = len(tip.apexes)
    moves = rng.normal(0, 1, (n, 3)) * np.array([0.3e-9, 0.3e-9, 1.5e-10]) * strength
    apexes = tip.apexes + moves
    if rng.random() < 0.3 * strength:  # pick up a cluster beside the apex
        apexes = np.vstack([apexes, ghost_apexes(rng, 1) + [0, 0, rng.uniform(0, 2e-10)]])
    return tip.evolve(
        apexes=apexes,
        blur_m=float(np.clip(tip.blur_m * np.exp(rng.normal(0, 0.5 * strength)), 0.03e-9, 3e-9)),
        instability=float(np.clip(tip.instability + rng.normal(0, 0.05 * strength), 0, 0.5)),
        contrast=float(tip.contrast + rng.normal(0, 0.3 * strength)),
    )


def cleaned(tip: Tip, rng: np.random.Generator) -> Tip:
    """The adsorbate is desorbed and the apex settles: contrast and instability shrink."""
    return tip.evolve(contrast=tip.contrast * rng.uniform(0, 0.2),
                      instability=tip.instability * rng.uniform(0, 0.1))


def degraded(tip: Tip, rng: np.random.Generator) -> Tip:
    """One spontaneous change while scanning: a new defect adds to those the tip has."""
    kind = rng.choice(BAD_STATES)
    if kind == "double":
        return tip.evolve(apexes=np.vstack([tip.apexes, ghost_apexes(rng, 1)]))
    if kind == "blunt":
        return tip.evolve(blur_m=tip.blur_m + rng.uniform(0.3, 1.0) * 1e-9)
    if kind == "unstable":
        return tip.evolve(instability=tip.instability + rng.uniform(0.08, 0.2))
    return tip.evolve(contrast=tip.contrast + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2))


# -- repairs: what a conditioning action that works does to one defect ------------------------
def desorbed(tip: Tip, rng: np.random.Generator) -> Tip:
    """The adsorbate on the apex is gone: the contrast is that of a clean tip (|c| <= 0.1)."""
    return tip.evolve(contrast=rng.uniform(-0.1, 0.1))


def stabilized(tip: Tip, rng: np.random.Generator) -> Tip:
    """The loosely bound apex atom or cluster has settled (or left): no more jumps."""
    return tip.evolve(instability=0.0)


def sharpened(tip: Tip, rng: np.random.Generator) -> Tip:
    """One protrusion leads again: every ghost-printing protrusion is pulled back 4-8 A."""
    apexes = tip.apexes.copy()
    ghosts = np.flatnonzero(apexes[1:, 2] < GHOST_VISIBLE_M) + 1
    apexes[ghosts, 2] = rng.uniform(4, 8, len(ghosts)) * 1e-10
    return tip.evolve(apexes=apexes)


def reshaped(tip: Tip, rng: np.random.Generator) -> Tip:
    """A fresh nanotip is pulled out of the sample metal: the apex radius is that of a good
    tip again (0.05-0.2 nm)."""
    return tip.evolve(blur_m=rng.uniform(0.05, 0.2) * 1e-9)


REPAIRS = {"double": sharpened, "blunt": reshaped, "unstable": stabilized,
           "contaminated": desorbed}
"""The repair of each bad state (`BAD_STATES`): applied, it removes that defect only."""
