"""The watch page's API over a real catalog: status, snapshot, images, reviews, training."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
import uvicorn
from bluesky import RunEngine
from matplotlib.image import imread
from services import free_port
from starlette.testclient import TestClient
from tiled.config import Authentication
from tiled.server.app import build_app
from typer.testing import CliRunner

from deepspm_bluesky.cli import app as cli
from deepspm_bluesky.data import catalog_adapter, open_catalog, tiled_writer
from deepspm_bluesky.devices import simulated_stm
from deepspm_bluesky.plans import autonomous_survey
from deepspm_bluesky.watch import CatalogReader, create_app, image_png

IMAGES = 30
KEY = "watchTestKey7"


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """A catalog folder holding one finished 30-image survey (seed 0: good, bad, a dip)."""
    directory = tmp_path_factory.mktemp("watch") / "catalog"
    engine = RunEngine({}, call_returns_result=False)
    writer = tiled_writer(open_catalog(directory))
    engine.subscribe(writer)
    stm = simulated_stm(seed=0)
    engine(autonomous_survey(stm, max_images=IMAGES))
    writer.close()
    stm.destroy()
    return directory


@pytest.fixture(scope="module")
def table(catalog):
    run = open_catalog(catalog)[-1]
    return run.metadata["start"]["uid"], run["primary"].base["internal"].read()


@pytest.fixture(scope="module")
def page(catalog):
    """The app over the module's catalog (opening a catalog costs seconds: once per module)."""
    with TestClient(create_app(open_catalog(catalog), title=str(catalog),
                               refresh_s=0.0)) as client:
        yield client


def test_the_reader_follows_a_run_as_it_grows_through_nodes_looked_up_once(tmp_path):
    """A writer of one event at a time; the reader looks between events (refresh_s 0)."""
    engine = RunEngine({}, call_returns_result=False)
    writer = tiled_writer(open_catalog(tmp_path / "catalog"), batch_size=1)
    reader = CatalogReader(open_catalog(tmp_path / "catalog"), refresh_s=0.0)
    primary, seen = {}, []

    def look(name, doc):
        if name == "descriptor" and doc["name"] == "primary":
            primary["uid"] = doc["uid"]
        if name == "event" and doc["descriptor"] == primary.get("uid"):
            deadline = time.monotonic() + 30
            while reader.survey()["status"]["images"] < doc["seq_num"] \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            survey = reader.survey()
            seen.append((survey["status"]["images"], len(survey["chart"]["points"]),
                         survey["latest"]["index"]))

    engine.subscribe(writer)
    engine.subscribe(look)
    stm = simulated_stm(seed=0)
    try:
        engine(autonomous_survey(stm, max_images=8))
        writer.close()
        uid = reader.survey()["status"]["uid"]
        assert seen == [(n, n, n - 1) for n in range(1, 9)]
        assert len(reader._runs) == 1 and reader._runs[uid].uid == uid  # looked up once
        assert reader.png(uid, 7) is reader.png(uid, 7)  # the latest, rendered by the look
    finally:
        reader.close()
        stm.destroy()
    assert not reader._looker.is_alive()  # closed: it never calls a closed client


def test_status_reports_the_newest_survey_as_stored(page, table):
    uid, rows = table
    status = page.get("/api/status").json()
    assert status["uid"] == uid and status["images"] == IMAGES and not status["running"]
    assert status["good_fraction"] == pytest.approx((rows["verdict"] == "good").mean())
    assert status["latest_verdict"] == rows["verdict"].iloc[-1]
    assert status["last_event_time"] >= rows["time"].iloc[-1]
    assert status["last_good_time"] == rows["time"][rows["verdict"] == "good"].iloc[-1]


def test_the_snapshot_holds_the_chart_the_map_and_the_actions_with_their_outcome(page, table):
    _, rows = table
    survey = page.get("/api/survey").json()
    assert [p[2] for p in survey["chart"]["points"]] == list(rows["verdict"])
    frames = survey["area"]["frames"]
    assert len(frames) == IMAGES and survey["area"]["frame_nm"] == 10.0
    assert [f[:2] for f in frames] == rows[["stm_scanner_x_nm", "stm_scanner_y_nm"]].values.tolist()
    action = survey["actions"][0]
    after = int(np.searchsorted(rows["time"], action["time"], side="right"))
    assert action["action"].startswith(("dip", "pulse")) and action["outcome"] == "done"
    assert action["next_verdict"] == rows["verdict"].iloc[after]
    assert survey["area"]["actions"][0][3] > 0  # drawn with its forbidden radius


def test_an_image_is_served_levelled_so_a_tilt_does_not_change_it(page, catalog, table):
    uid, _ = table
    response = page.get(f"/api/runs/{uid}/images/3.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert imread(io.BytesIO(response.content)).shape == (64, 64, 4)
    raw = open_catalog(catalog)[uid]["primary"]["stm_image"][3]
    rows, cols = np.mgrid[0:64, 0:64]
    tilted = raw + 3e-10 * rows + 2e-10 * cols  # 19 nm across: far above the molecules
    shown, shown_tilted = (imread(io.BytesIO(image_png(x))) for x in (raw, tilted))
    assert np.abs(shown - shown_tilted).mean() < 0.01
    assert page.get(f"/api/runs/{uid}/images/{IMAGES}.png").status_code == 404


def test_a_verdict_marked_wrong_is_stored_beside_the_run_and_counted(page, catalog, table):
    uid, rows = table
    index = int(np.flatnonzero(rows["verdict"] == "good")[0])
    response = page.post(f"/api/runs/{uid}/images/{index}/review", json={"review": "wrong"})
    assert response.status_code == 200, response.text
    stored = open_catalog(catalog)[uid].metadata["corrections"][str(index)]
    assert stored["label"] == "bad" and stored["verdict"] == "good" and stored["review"] == "wrong"
    assert page.get("/api/status").json()["corrections"] >= 1
    assert page.get("/api/runs").json()[0]["corrections"] >= 1
    item = next(i for i in page.get(f"/api/runs/{uid}/images?limit={IMAGES}").json()["items"]
                if i["index"] == index)
    assert item["review"]["label"] == "bad"


def test_reviews_of_unknown_images_or_kinds_are_refused(page, table):
    uid, _ = table
    assert page.post(f"/api/runs/{uid}/images/{IMAGES + 5}/review",
                     json={"review": "wrong"}).status_code == 404
    assert page.post(f"/api/runs/{uid}/images/0/review",
                     json={"review": "maybe"}).status_code == 422
    assert page.get("/api/runs/not-a-run/images").status_code == 404


def test_with_a_served_tiled_the_page_stores_reviews_and_never_shows_the_key(catalog, table):
    uid, rows = table
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        build_app(catalog_adapter(catalog), Authentication(single_user_api_key=KEY)),
        host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        uri = f"http://127.0.0.1:{port}"
        index = int(np.flatnonzero(rows["verdict"] == "bad")[-1])
        with TestClient(create_app(open_catalog(uri, api_key=KEY), title=uri)) as page:
            assert page.post(f"/api/runs/{uid}/images/{index}/review",
                             json={"review": "right"}).status_code == 200
            shown = [page.get(path).text for path in
                     ("/", "/static/watch.js", "/api/status", "/api/survey", "/api/runs")]
    finally:
        server.should_exit = True
        thread.join(10)
    assert open_catalog(catalog)[uid].metadata["corrections"][str(index)]["label"] == "bad"
    assert all(KEY not in text for text in shown)
    assert json.loads(shown[2])["uid"] == uid


def test_train_classifier_fine_tunes_on_the_reviewed_images_of_a_catalog(catalog, table,
                                                                          tmp_path):
    uid, rows = table
    output = tmp_path / "tip.pt"
    command = ["train-classifier", "--output", str(output), "--steps", "2", "--threads", "1"]
    too_few = CliRunner().invoke(cli, [*command, "--from-catalog", str(tmp_path / "empty")])
    assert too_few.exit_code == 2 and "at least 4 reviewed images" in too_few.output
    good = np.flatnonzero(rows["verdict"] == "good")[-10:]
    with TestClient(create_app(open_catalog(catalog))) as page:
        for n, index in enumerate(good):  # 5 confirmed good, 5 corrected to bad
            page.post(f"/api/runs/{uid}/images/{index}/review",
                      json={"review": "right" if n % 2 else "wrong"})
    reviewed = open_catalog(catalog)[uid].metadata["corrections"]
    labels = [entry["label"] for entry in reviewed.values()]
    result = CliRunner().invoke(cli, [*command, "--from-catalog", str(catalog)])
    assert result.exit_code == 0, result.output
    record = json.loads(output.with_suffix(".json").read_text())
    assert sum(record["data"]["sizes"].values()) == len(reviewed)
    assert record["training"]["fine_tune"] is True
    folder = tmp_path / "tip_reviewed"
    assert len(list((folder / "bad").glob("*.npy"))) == labels.count("bad")
    assert len(list((folder / "good").glob("*.npy"))) == labels.count("good")


def test_watch_refuses_both_a_folder_and_a_served_tiled(tmp_path):
    result = CliRunner().invoke(cli, ["watch", "--catalog", str(tmp_path), "--tiled",
                                      "http://127.0.0.1:1"])
    assert result.exit_code == 2 and "not both" in result.output
    result = CliRunner().invoke(cli, ["watch", "--tiled", "ftp://example"])
    assert result.exit_code == 2 and "http(s) URI" in result.output
