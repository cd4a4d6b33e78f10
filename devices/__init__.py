"""Ophyd devices for STMs and the backends that talk to instruments."""

from .backend import Backend, ScanSpeedControl
from .labview import labview_stm
from .nanonis import nanonis_stm
from .stm import STM, simulated_stm

__all__ = ["STM", "Backend", "ScanSpeedControl", "labview_stm", "nanonis_stm", "simulated_stm"]
