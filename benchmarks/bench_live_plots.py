"""Survey rate with the live PNG plot (and notifications) against the same survey without.

Each configuration is the CLI's session (Tiled, journal, shipped classifier), measured by
`bench_survey.images_per_s`; rounds alternate the configurations so that a busy machine
slows them alike, each taking each place in a round once, and the best round of each
counts. The goal: at least 0.95 of the rate without plots. On a shared machine the rates
vary more than that from run to run (a round's surveys differed by up to a third), so two
more measures are printed: the CPU time the survey's process spent (the PNG is drawn in a
child process, whose time is not the survey's), and the callbacks' own time in it, timed
around each document in the RunEngine's thread plus the CPU of their threads, as a share
of the survey's wall time.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepspm_bluesky.callbacks import SurveyFigure, SurveyNotifier, SurveyPlotFile
from deepspm_bluesky.callbacks.drawing_process import render_png
from deepspm_bluesky.callbacks.notify_rules import parse_rules
from deepspm_bluesky.callbacks.survey_figure import FIGURE_SIZE_IN
from deepspm_bluesky.callbacks.survey_view import ViewSnapshot
from deepspm_bluesky.data import open_catalog
from deepspm_bluesky.session import survey_session

from .bench_survey import RUN_IMAGES, images_per_s
from .timing import per_call_s

EXTRA_THREADS = {"survey-plot-file", "notifier-clock", "notice-sender"}
ROUNDS = 3  # one per configuration: the first survey of a round ran slowest
GOAL_RATIO = 0.95


class _Accept(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class Timed:
    """A callback, with the time the RunEngine spends in it added up."""

    def __init__(self, callback) -> None:
        self.callback, self.seconds = callback, 0.0

    def __call__(self, name: str, doc: dict) -> None:
        started = time.perf_counter()
        self.callback(name, doc)
        self.seconds += time.perf_counter() - started


def thread_cpu_s(thread: threading.Thread) -> float:
    """CPU seconds a thread of this process has used."""
    return cpu_s(f"/proc/self/task/{thread.native_id}/stat")


def cpu_s(stat_file: str) -> float:
    """User and system CPU seconds in a Linux ``/proc/.../stat`` file."""
    utime, stime = Path(stat_file).read_text().rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    """One survey: its rate, this process's CPU seconds (the survey's cost whatever else
    the machine runs), its wall time, and the seconds its extra callbacks took in it (in
    the RunEngine's thread, and their own threads' CPU)."""

    rate: float
    cpu_s: float
    wall_s: float
    extras_s: float
    drawing_s: float  # the drawing process's CPU seconds, on another core
    extras: list


def _rate(with_plot: bool, with_notifier: bool, url: str) -> Measured:
    """One survey in a fresh session, with the asked-for callbacks."""
    session = survey_session(open_catalog(tempfile.mkdtemp()), progress=False)
    extras = []
    if with_plot:
        extras.append(SurveyPlotFile(Path(tempfile.mkdtemp()) / "survey.png"))
    if with_notifier:
        rules = parse_rules({"rules": {"no_good_image_minutes": 1, "survey_ended": True,
                                       "crashes_per_hour": 3, "approach_area_changed": True},
                             "webhook": {"url": url}})
        extras.append(SurveyNotifier(rules))
    timed = [Timed(callback) for callback in extras]
    for callback in timed:
        session.engine.subscribe(callback)
    threads = [thread for thread in threading.enumerate() if thread.name in EXTRA_THREADS]
    threads_before = sum(map(thread_cpu_s, threads))
    children = [f"/proc/{c._process._child.pid}/stat" for c in extras
                if isinstance(c, SurveyPlotFile)]
    drawing_before = sum(map(cpu_s, children))  # its imports, before the survey
    cpu_before, started = time.process_time(), time.perf_counter()
    rate = images_per_s(session.engine)
    cpu, wall_s = time.process_time() - cpu_before, time.perf_counter() - started
    extras_s = sum(t.seconds for t in timed) + sum(map(thread_cpu_s, threads)) - threads_before
    drawing_s = sum(map(cpu_s, children)) - drawing_before
    session.writer.close()
    for callback in extras:
        callback.close()
    return Measured(rate, cpu, wall_s, extras_s, drawing_s, extras)


def _draw_s(view: ViewSnapshot) -> float:
    """One draw of the figure into a PNG in this process (what the drawing process does)."""
    fig = Figure(figsize=FIGURE_SIZE_IN)
    FigureCanvasAgg(fig)
    figure, path = SurveyFigure(fig), str(Path(tempfile.mkdtemp()) / "survey.png")
    return per_call_s(lambda: render_png(figure, view, path, time.time()), repeat=3, warmup=1)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    configurations = {"without": (False, False), "plot": (True, False), "both": (True, True)}
    runs: dict[str, list[Measured]] = {name: [] for name in configurations}
    names = list(configurations)
    for round_ in range(ROUNDS):  # each configuration once in each place of a round
        for name in names[round_:] + names[:round_]:
            runs[name].append(_rate(*configurations[name], url))
    server.shutdown()
    best = {name: max(m.rate for m in measured) for name, measured in runs.items()}
    cpu = {name: min(m.cpu_s for m in measured) for name, measured in runs.items()}
    share = {name: max(m.extras_s / m.wall_s for m in measured) for name, measured in runs.items()}
    plot_file = next(c for c in runs["plot"][-1].extras if isinstance(c, SurveyPlotFile))
    bare = best["without"]
    print(f"survey, {RUN_IMAGES} images into Tiled: without plots {bare:.1f} images/s, with the "
          f"--plot PNG ({plot_file.writes} writes) {best['plot']:.1f} images/s -> ratio "
          f"{best['plot'] / bare:.3f} (goal {GOAL_RATIO}); with the PNG and --notify "
          f"{best['both']:.1f} images/s -> ratio {best['both'] / bare:.3f}")
    print(f"CPU time of the survey's process: without plots {cpu['without']:.1f} s, with the "
          f"PNG {cpu['plot']:.1f} s -> ratio {cpu['without'] / cpu['plot']:.3f} (goal "
          f"{GOAL_RATIO}); with the PNG and --notify {cpu['both']:.1f} s -> ratio "
          f"{cpu['without'] / cpu['both']:.3f}")
    print(f"the callbacks' own time in the survey's process (in the RunEngine and their "
          f"threads), as a share of the survey's time, worst of {ROUNDS}: the PNG "
          f"{100 * share['plot']:.2f} %, the PNG and --notify {100 * share['both']:.2f} % "
          f"(goal <= {100 * (1 - GOAL_RATIO):.0f} %); the drawing process beside it used "
          f"{100 * max(m.drawing_s / m.wall_s for m in runs['plot']):.1f} % of a core")
    print(f"one draw of the figure ({plot_file.view.snapshot().images} images) into a PNG: "
          f"{1e3 * _draw_s(plot_file.view.snapshot()):.0f} ms, in the drawing process "
          f"every {plot_file.interval_s:.0f} s at most")
