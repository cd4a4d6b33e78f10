"""Bluesky plans for autonomous STM surveys."""

from deepspm_bluesky.ml import RandomAgent  # kept importable from here, where it was first

from .stubs import condition_tip, recover, scan_image
from .survey import autonomous_survey

__all__ = ["RandomAgent", "autonomous_survey", "condition_tip", "recover", "scan_image"]
