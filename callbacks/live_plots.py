"""Live survey plots: callbacks drawing the `SurveyFigure` while a survey runs.

- `LiveSurveyPlots` for IPython: a matplotlib window redrawn through its canvas, at most
  every `interval_s` and never more than `MAX_DRAW_SHARE` of the time (a draw costs
  hundreds of milliseconds of Python, which hold the interpreter the survey needs);
- `SurveyPlotFile` for the command line (``survey --plot out.png``): a PNG rewritten
  atomically at most every `interval_s` and at the end of the run, drawn in a process of
  its own (`drawing_process`) so that the survey never waits for matplotlib.

Neither draws per event: the survey's thread only updates the `SurveyView` (microseconds).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path

from bluesky.callbacks.core import CallbackBase, make_class_safe
from bluesky.callbacks.mpl_plotting import QtAwareCallback

from deepspm_bluesky.actions import ActionTable

from .drawing_process import DrawingProcess
from .survey_figure import FIGURE_SIZE_IN, SurveyFigure
from .survey_view import SurveyView

logger = logging.getLogger(__name__)

WINDOW_INTERVAL_S = 1.0  # an on-screen figure redraws at most this often
FILE_INTERVAL_S = 5.0  # a PNG is rewritten at most this often
MAX_DRAW_SHARE = 0.025  # an on-screen figure takes at most this share of the survey's time


@make_class_safe(logger=logger)
class LiveSurveyPlots(QtAwareCallback):
    """Live survey figure for IPython: ``RE.subscribe(LiveSurveyPlots())``.

    Each run gets the figure redrawn through its canvas at most every `interval_s`, and
    after a draw that took ``t`` seconds not before ``t / MAX_DRAW_SHARE`` have passed (a
    fast survey is slowed by at most that share), and once at its end; events in between
    only update the view. With a Qt backend the drawing happens on the main thread
    (bluesky's teleporter, as `LivePlot`); call ``plt.ion()`` first for a window that
    updates while the survey runs.

    Parameters
    ----------
    fig
        Figure to draw on; default: a new pyplot figure at the first run.
    interval_s
        Least time between two redraws.
    actions
        Action table of the survey (forbidden radii of the map); default: the shipped one.
    """

    def __init__(self, *, fig=None, interval_s: float = WINDOW_INTERVAL_S,
                 actions: ActionTable | None = None, use_teleporter: bool | None = None
                 ) -> None:
        super().__init__(use_teleporter=use_teleporter)
        self.fig = fig
        self.interval_s = interval_s
        self.view = SurveyView(actions)
        self.figure: SurveyFigure | None = None
        self.draws = 0
        self._due = -math.inf

    def start(self, doc):
        self.view("start", doc)
        if self.fig is None:
            import matplotlib.pyplot as plt

            self.fig = plt.figure(figsize=FIGURE_SIZE_IN)
        if self.figure is None:
            self.figure = SurveyFigure(self.fig)
        self.redraw()

    def descriptor(self, doc):
        self.view("descriptor", doc)

    def event(self, doc):
        self.view("event", doc)
        if time.monotonic() >= self._due:
            self.redraw()

    def stop(self, doc):
        self.view("stop", doc)
        self.redraw()

    def redraw(self) -> None:
        """Draw the view now (the next throttled draw waits in proportion)."""
        began = time.monotonic()
        self.figure.update(self.view.snapshot())
        self.fig.canvas.draw_idle()
        self.fig.canvas.flush_events()
        took = time.monotonic() - began
        self._due = began + max(self.interval_s, took / MAX_DRAW_SHARE)
        self.draws += 1


class SurveyPlotFile(CallbackBase):
    """The live survey figure as a PNG, kept current while a survey runs (``--plot``).

    A thread of its own hands the view to a drawing process at most every `interval_s`
    while it changes, and at once when a run stops; the survey's thread never waits for
    it. Call `close` at the end: it writes what is not written yet and ends both.

    Parameters
    ----------
    path
        The PNG to keep current.
    interval_s
        Least time between two writes while a run goes on.
    actions
        Action table of the survey (forbidden radii of the map); default: the shipped one.
    """

    def __init__(self, path: str | os.PathLike, *, interval_s: float = FILE_INTERVAL_S,
                 actions: ActionTable | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.interval_s = interval_s
        self.view = SurveyView(actions)
        self.writes = 0
        self._written_changes = 0  # nothing to draw before the first document
        self._wake = threading.Event()
        self._closed = False
        self._process = DrawingProcess()
        self._thread = threading.Thread(target=self._loop, name="survey-plot-file", daemon=True)
        self._thread.start()

    def wait_ready(self) -> None:
        """Wait until the drawing process has started (it starts with this object)."""
        self._process.wait_ready()

    def __call__(self, name: str, doc: dict) -> None:
        try:
            self.view(name, doc)
        except Exception:  # a plot must never stop the survey
            logger.exception("survey plot: could not take a %s document", name)
        if name == "stop":
            self._wake.set()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            self._write_if_changed()

    def _write_if_changed(self) -> None:
        if self.view.changes == self._written_changes:
            return
        try:
            self.write()
        except Exception as error:  # a full disk, a dead child: log it, keep the survey going
            logger.warning("survey plot: could not write %s: %s", self.path, error)
            if not self._process.alive:
                self._process = DrawingProcess()

    def write(self) -> Path:
        """Replace the PNG with the view as it is now, and wait for it; returns the path."""
        changes = self.view.changes
        self._process.draw(self.view.snapshot(), self.path, time.time())
        self._written_changes = changes
        self.writes += 1
        return self.path

    def close(self) -> None:
        """Write what is not written yet, then end the thread and the drawing process."""
        self._closed = True
        self._wake.set()
        self._thread.join()
        self._write_if_changed()
        self._process.close()
