"""The simulated STM: a seeded physics-flavoured model of sample, tip and controller.

- `sample`: approach areas of 850 x 850 nm (a new one per coarse move) with meandering
  Ag(100) step edges, an atomic lattice where pixels resolve it, four-lobed MgPc-like
  molecules, clusters, and the craters and debris the tip leaves.
- `tip`: an apex of a few protrusions (ghost copies), blur, instability (jumps, streaks) and
  contrast (brighter or inverted molecules), crashed / out of contact; defects compose.
- `render`: the image through the tip, lateral drift and creep after an approach, a tilted
  plane, 1/f, white and line noise; analytic, vectorised (>= 1000 64-px images/s).
- `conditioning`: what pulses and dips do to the tip, with the probabilities in its table.
- `microscope`: `SimulatedMicroscope`, the backend the `STM` device drives; instrument clock,
  slow ageing of the tip, optional real-time pacing with an injectable sleep and clock.
- `families`: surface families beyond MgPc/Ag(100) (Au(111) herringbone, Si(111)-7x7,
  H:Si(100), graphite, molecular islands, step bunches, clusters), imaged through the same
  tip; ``SimulatedMicroscope(family=...)`` (None: the default sample, unchanged).
- `gallery`: one picture per tip state, and every family with every imaging tip state
  (``deepspm-bluesky sim-gallery OUT.png``).

No Bluesky import here: the model is plain Python + numpy (+ scipy), driven by the `STM`
device through the backend calls of `SimulatedMicroscope`. Labels for a classifier: after
``image = microscope.scan(...)``, ``microscope.tip.state`` and ``microscope.tip.is_good``.
"""

from .conditioning import OUTCOMES, apply_action, outcome_probabilities
from .families import DEFAULT_FAMILY, FAMILIES, RANDOM_FAMILY, make_sample
from .microscope import SimulatedMicroscope
from .sample import Sample
from .tip import BAD_STATES, STATES, Tip, random_tip

__all__ = [
    "BAD_STATES",
    "DEFAULT_FAMILY",
    "FAMILIES",
    "OUTCOMES",
    "RANDOM_FAMILY",
    "STATES",
    "Sample",
    "SimulatedMicroscope",
    "Tip",
    "apply_action",
    "make_sample",
    "outcome_probabilities",
    "random_tip",
]
