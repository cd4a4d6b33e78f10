"""Live survey plots on a real simulated survey: the PNG keeps up, the window shows the
latest image levelled, and the map follows the approach area."""

from __future__ import annotations

import hashlib
import time

import event_model
import matplotlib.image
import numpy as np
import pytest
from bluesky import RunEngine
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.testing import assert_allclose

from deepspm_bluesky.callbacks import LiveSurveyPlots, SurveyPlotFile, SurveyView
from deepspm_bluesky.callbacks.drawing_process import FILE_DPI
from deepspm_bluesky.callbacks.survey_figure import FIGURE_SIZE_IN
from deepspm_bluesky.devices import simulated_stm
from deepspm_bluesky.imaging import flatten_plane
from deepspm_bluesky.plans import autonomous_survey

IMAGES = 20


class PngWatcher:
    """Subscribed after the plot file: at image events `at`, waits until the plot file's
    thread has written the PNG anew (two writes, so the second began after the event came)
    and keeps the PNG's digest. Waiting here holds the survey, so nothing runs ahead."""

    def __init__(self, plot_file, at=(5, 15)) -> None:
        self.plot_file, self.at, self.digests = plot_file, at, []

    def __call__(self, name, doc) -> None:
        if name != "event" or "stm_image" not in doc["data"] or doc["seq_num"] not in self.at:
            return
        before, deadline = self.plot_file.writes, time.monotonic() + 60
        while self.plot_file.writes < before + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.digests.append(hashlib.sha256(self.plot_file.path.read_bytes()).hexdigest())


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """One short simulated survey watched by the PNG writer and the window plots."""
    png = tmp_path_factory.mktemp("plots") / "survey.png"
    plot_file = SurveyPlotFile(png, interval_s=0.02)
    plot_file.wait_ready()
    fig = Figure()
    FigureCanvasAgg(fig)
    window = LiveSurveyPlots(fig=fig, interval_s=0.0)
    documents, watcher = [], PngWatcher(plot_file)
    engine = RunEngine({}, call_returns_result=True)
    for callback in (plot_file, watcher, window, lambda n, d: documents.append((n, d))):
        engine.subscribe(callback)
    stm = simulated_stm(seed=0)
    engine(autonomous_survey(stm, max_images=IMAGES, md={"sample": "MgPc on Ag(100)"}))
    plot_file.close()
    stm.destroy()
    return plot_file, window, watcher, documents


def _events(documents, stream):
    uids = {d["uid"] for n, d in documents if n == "descriptor" and d["name"] == stream}
    return [d for n, d in documents if n == "event" and d["descriptor"] in uids]


def test_the_png_changes_as_images_arrive(survey):
    plot_file, _, watcher, _ = survey
    assert len(watcher.digests) == 2
    assert watcher.digests[0] != watcher.digests[1]


def test_the_png_is_a_readable_figure(survey):
    plot_file, *_ = survey
    pixels = matplotlib.image.imread(plot_file.path)
    width, height = (round(side * FILE_DPI) for side in FIGURE_SIZE_IN)
    assert pixels.shape[:2] == (height, width)
    assert pixels[..., :3].std() > 0.1  # drawn on, not blank
    assert not list(plot_file.path.parent.glob(".*.partial"))


def test_the_window_shows_the_latest_image_levelled_with_its_verdict(survey):
    _, window, _, documents = survey
    last = _events(documents, "primary")[-1]["data"]
    assert_allclose(window.figure.image.get_array(), flatten_plane(last["stm_image"]) * 1e12)
    title = window.figure.ax_image.get_title()
    assert title.startswith(f"image {IMAGES}: {last['verdict']}")
    assert f"P(good) {last['p_good']:.2f}" in title
    assert f"{IMAGES} images" in window.fig._suptitle.get_text()
    assert "ended: success" in window.fig._suptitle.get_text()


def test_p_good_over_time_has_every_image(survey):
    _, window, _, documents = survey
    verdicts = [e["data"]["verdict"] for e in _events(documents, "primary")]
    figure = window.figure
    plotted = (len(figure.p_good_line.get_xdata()), len(figure.p_bad_line.get_xdata()),
               len(figure.p_failed_line.get_xdata()))
    assert plotted == (verdicts.count("good"), verdicts.count("bad"),
                       IMAGES - verdicts.count("good") - verdicts.count("bad"))


def test_the_map_marks_every_frame_and_action_site_on_used_ground(survey):
    plot_file, _, _, documents = survey
    view = plot_file.view.snapshot()
    positions = {(e["data"]["stm_scanner_x_nm"], e["data"]["stm_scanner_y_nm"])
                 for e in _events(documents, "primary")}
    assert {tuple(p) for p in view.frames} == positions
    actions = [e["data"] for e in _events(documents, "actions")
               if e["data"]["action_index"] >= 0]
    assert len(view.actions) == len(actions)
    cell = view.area_nm / (view.free.shape[0] - 1)
    for x_nm, y_nm in positions:
        row, col = (round(v / cell + (view.free.shape[0] - 1) / 2) for v in (y_nm, x_nm))
        assert not view.free[row, col]


def test_a_new_approach_area_empties_the_map():
    view = SurveyView()
    bundle = event_model.compose_run(metadata={"instrument": {"scan_range_nm": 400.0}})
    view("start", bundle.start_doc)
    keys = {"source": "sim", "dtype": "number", "shape": []}
    streams = {}
    for name, fields in {"primary": ("stm_scanner_x_nm", "stm_scanner_y_nm", "verdict"),
                         "actions": ("action", "x_nm", "y_nm")}.items():
        streams[name] = bundle.compose_descriptor(name=name, data_keys=dict.fromkeys(fields, keys))
        view("descriptor", streams[name].descriptor_doc)

    def event(stream, **data):
        view("event", streams[stream].compose_event(data=data, timestamps=dict.fromkeys(data, 0)))

    event("primary", stm_scanner_x_nm=50.0, stm_scanner_y_nm=-20.0, verdict="crash")
    before = view.snapshot()
    event("actions", action="new area", x_nm=0.0, y_nm=0.0)
    after = view.snapshot()
    assert (before.area_nm, len(before.crashes), before.free.all()) == (400.0, 1, False)
    assert (after.area_index, len(after.frames), len(after.crashes)) == (1, 0, 0)
    assert after.free.all() and after.images == 1
    np.testing.assert_array_equal(before.crashes, [[50.0, -20.0]])
