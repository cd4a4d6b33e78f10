"""Survey rate with the live PNG plot (and notifications) against the same survey without.

Each configuration is the CLI's session (Tiled, journal, shipped classifier), measured by
`bench_survey.images_per_s`; rounds alternate the configurations so that a busy machine
slows them alike, each taking each place in a round once, and the best round of each
counts. The goal: at least 0.95 of the rate without plots. On a shared machine the rates
vary more than that from run to run, so the CPU time the survey's process spent is printed
as well (the PNG is drawn in a child process, whose time is not the survey's).
"""

from __future__ import annotations

import tempfile
import threading
import time
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

ROUNDS = 3  # one per configuration: the first survey of a round ran slowest
GOAL_RATIO = 0.95


class _Accept(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _rate(with_plot: bool, with_notifier: bool, url: str) -> tuple[float, float, list]:
    """Images/s of one survey in a fresh session, this process's CPU seconds for it (the
    survey's cost whatever else the machine runs), and the callbacks it had."""
    session = survey_session(open_catalog(tempfile.mkdtemp()), progress=False)
    extras = []
    if with_plot:
        extras.append(SurveyPlotFile(Path(tempfile.mkdtemp()) / "survey.png"))
    if with_notifier:
        rules = parse_rules({"rules": {"no_good_image_minutes": 1, "survey_ended": True,
                                       "crashes_per_hour": 3, "approach_area_changed": True},
                             "webhook": {"url": url}})
        extras.append(SurveyNotifier(rules))
    for callback in extras:
        session.engine.subscribe(callback)
    cpu_before = time.process_time()
    rate = images_per_s(session.engine)
    cpu_s = time.process_time() - cpu_before
    session.writer.close()
    for callback in extras:
        callback.close()
    return rate, cpu_s, extras


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
    best, cpu = dict.fromkeys(configurations, 0.0), dict.fromkeys(configurations, float("inf"))
    plot_file = None
    names = list(configurations)
    for round_ in range(ROUNDS):  # each configuration once in each place of a round
        for name in names[round_:] + names[:round_]:
            rate, cpu_s, extras = _rate(*configurations[name], url)
            best[name], cpu[name] = max(best[name], rate), min(cpu[name], cpu_s)
            plot_file = next((c for c in extras if isinstance(c, SurveyPlotFile)), plot_file)
    server.shutdown()
    bare = best["without"]
    print(f"survey, {RUN_IMAGES} images into Tiled: without plots {bare:.1f} images/s, with the "
          f"--plot PNG ({plot_file.writes} writes) {best['plot']:.1f} images/s -> ratio "
          f"{best['plot'] / bare:.3f} (goal {GOAL_RATIO}); with the PNG and --notify "
          f"{best['both']:.1f} images/s -> ratio {best['both'] / bare:.3f}")
    print(f"CPU time of the survey's process: without plots {cpu['without']:.1f} s, with the "
          f"PNG {cpu['plot']:.1f} s -> ratio {cpu['without'] / cpu['plot']:.3f} (goal "
          f"{GOAL_RATIO}); with the PNG and --notify {cpu['both']:.1f} s -> ratio "
          f"{cpu['without'] / cpu['both']:.3f}")
    print(f"one draw of the figure ({plot_file.view.snapshot().images} images) into a PNG: "
          f"{1e3 * _draw_s(plot_file.view.snapshot()):.0f} ms, in the drawing process "
          f"every {plot_file.interval_s:.0f} s at most")
