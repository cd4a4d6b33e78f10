"""Bluesky callbacks: progress, live classification and plots; none is needed for correctness."""

from .progress import SurveyProgress

__all__ = ["SurveyProgress"]
