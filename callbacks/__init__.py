"""Bluesky callbacks: progress, live classification and plots; none is needed for correctness."""

from .classification import LiveTipClassification
from .progress import SurveyProgress

__all__ = ["LiveTipClassification", "SurveyProgress"]
