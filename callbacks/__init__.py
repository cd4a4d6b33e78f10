"""Bluesky callbacks: the journaled Tiled writer, progress, live classification, live plots
and notifications."""

from .classification import LiveTipClassification
from .journal import JournaledTiledWriter, RunJournal
from .live_plots import LiveSurveyPlots, SurveyPlotFile
from .notifications import SurveyNotifier
from .notify_rules import NotificationRules, RulesError, load_rules
from .notify_senders import Notice, NoticeSender
from .progress import SurveyProgress
from .survey_figure import SurveyFigure
from .survey_view import SurveyView

__all__ = ["JournaledTiledWriter", "LiveSurveyPlots", "LiveTipClassification", "Notice",
           "NoticeSender", "NotificationRules", "RulesError", "RunJournal", "SurveyFigure",
           "SurveyNotifier", "SurveyPlotFile", "SurveyProgress", "SurveyView", "load_rules"]
