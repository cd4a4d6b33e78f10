"""Ophyd devices for STMs and the backends that talk to instruments."""

from .backend import Backend, ScanSpeedControl, ScanTimeouts
from .labview import labview_stm
from .nanonis import nanonis_stm
from .stm import STM, simulated_stm
from .transport import (
    InstrumentError,
    InstrumentUnreachable,
    MalformedReply,
    Outage,
    OutcomeUnknown,
    UnsupportedRequest,
)

__all__ = [
    "STM", "Backend", "InstrumentError", "InstrumentUnreachable", "MalformedReply", "Outage",
    "OutcomeUnknown", "ScanSpeedControl", "ScanTimeouts", "UnsupportedRequest", "labview_stm",
    "nanonis_stm", "simulated_stm",
]
