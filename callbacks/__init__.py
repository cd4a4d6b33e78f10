"""Bluesky callbacks: the journaled Tiled writer, progress, live classification."""

from .classification import LiveTipClassification
from .journal import JournaledTiledWriter, RunJournal
from .progress import SurveyProgress

__all__ = ["JournaledTiledWriter", "LiveTipClassification", "RunJournal", "SurveyProgress"]
