"""The simulated STM: a seeded physics-flavoured model of sample, tip and controller."""

from .microscope import SimulatedMicroscope
from .sample import Sample
from .tip import STATES, Tip, random_tip

__all__ = ["STATES", "Sample", "SimulatedMicroscope", "Tip", "random_tip"]
