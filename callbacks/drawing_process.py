"""The PNG of `survey --plot`, drawn in a process of its own.

A draw costs hundreds of milliseconds of Python (mostly laying out text; `bench_live_plots`
prints it), during which a thread would hold the interpreter the survey needs; a separate
process leaves the survey alone. The parent
sends pickled `ViewSnapshot` objects down the child's stdin and reads a pickled reply
(None, or what went wrong) from its stdout. The child is started with ``python -c``, so it
never re-imports the caller's script (multiprocessing's "spawn" would).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

from .survey_figure import FIGURE_SIZE_IN, SurveyFigure
from .survey_view import ViewSnapshot

FILE_DPI = 90
READY = "ready"
CHILD = "from deepspm_bluesky.callbacks.drawing_process import serve; serve()"
CLOSE_TIMEOUT_S = 30.0


def render_png(figure: SurveyFigure, view: ViewSnapshot, path: str, now: float) -> None:
    """Draw `view` and replace the PNG at `path` with it (written beside it, then renamed)."""
    figure.update(view, now=now)
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    figure.fig.savefig(partial, format="png", dpi=FILE_DPI)
    os.replace(partial, target)


def serve() -> None:
    """The child's loop: one (view, path, now) in, one reply out, until stdin closes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stdout carries replies only
    fig = Figure(figsize=FIGURE_SIZE_IN)
    FigureCanvasAgg(fig)
    figure = SurveyFigure(fig)
    pickle.dump(READY, replies)
    replies.flush()
    while True:
        try:
            view, path, now = pickle.load(requests)
        except EOFError:
            return
        try:
            render_png(figure, view, path, now)
            reply = None
        except Exception as error:  # reported to the parent, which logs it
            reply = f"{type(error).__name__}: {error}"
        pickle.dump(reply, replies)
        replies.flush()


class DrawingProcess:
    """A child Python process that writes survey PNGs on request; one request at a time
    (callers in several threads take turns)."""

    def __init__(self) -> None:
        self._child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE)
        self._ready = False
        self._turn = threading.Lock()

    def wait_ready(self) -> None:
        """Wait until the child has imported matplotlib and made its figure."""
        with self._turn:
            self._get_ready()

    def _get_ready(self) -> None:
        if not self._ready:
            if self._receive() != READY:
                raise RuntimeError("the drawing process did not start properly")
            self._ready = True

    def draw(self, view: ViewSnapshot, path: str | os.PathLike, now: float) -> None:
        """Have the child write `view` to `path`; raises RuntimeError naming its failure."""
        with self._turn:
            self._get_ready()
            try:
                pickle.dump((view, str(path), now), self._child.stdin)
                self._child.stdin.flush()
            except (BrokenPipeError, ValueError):  # the child died, or was closed
                raise RuntimeError(self._ended()) from None
            error = self._receive()
        if error is not None:
            raise RuntimeError(f"drawing {path} failed: {error}")

    def _receive(self):
        try:
            return pickle.load(self._child.stdout)
        except EOFError:
            raise RuntimeError(self._ended()) from None

    def _ended(self) -> str:
        return f"the drawing process ended (exit status {self._child.wait()})"

    @property
    def alive(self) -> bool:
        return self._child.poll() is None

    def close(self) -> None:
        """Let the child finish and end (killed if it does not within 30 s)."""
        with self._turn:
            self._child.stdin.close()
            try:
                self._child.wait(CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._child.kill()
                self._child.wait()
            self._child.stdout.close()
