"""Ophyd devices for STMs and the backends that talk to instruments."""

from .backend import Backend
from .stm import STM, simulated_stm

__all__ = ["STM", "Backend", "simulated_stm"]
