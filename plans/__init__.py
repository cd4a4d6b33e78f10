"""Bluesky plans for autonomous STM surveys."""

from .stubs import condition_tip, recover, scan_image
from .survey import RandomAgent, autonomous_survey

__all__ = ["RandomAgent", "autonomous_survey", "condition_tip", "recover", "scan_image"]
