"""Ophyd devices for STMs and the backends that talk to instruments."""

from .backend import Backend
from .labview import labview_stm
from .nanonis import nanonis_stm
from .stm import STM, simulated_stm

__all__ = ["STM", "Backend", "labview_stm", "nanonis_stm", "simulated_stm"]
