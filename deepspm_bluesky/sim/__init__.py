"""The simulated STM: a seeded physics-flavoured model of sample, tip and controller.

No Bluesky import here: the model is plain Python + numpy, driven by the `STM` device through
the backend calls of `SimulatedMicroscope`.
"""

from .conditioning import OUTCOMES, apply_action, outcome_probabilities
from .microscope import SimulatedMicroscope
from .sample import Sample
from .tip import BAD_STATES, STATES, Tip, random_tip

__all__ = [
    "BAD_STATES",
    "OUTCOMES",
    "STATES",
    "Sample",
    "SimulatedMicroscope",
    "Tip",
    "apply_action",
    "outcome_probabilities",
    "random_tip",
]
